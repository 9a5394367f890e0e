//! `alexnet features` end to end: the rows it writes are the activations the network computes
//! in evaluation (on the CPU bit for bit, on the host executor within the kernels' tolerance),
//! ten crops average their views, both file formats read back with each row's path and label,
//! and bad input (an unknown layer, a fused one, an existing file, an unreadable image) is named.

pub mod support;

use alexnet::data::{EvalViews, Geometry, image_views};
use alexnet::device::cpu::CpuDevice;
use alexnet::engine::Network;
use alexnet::features::{file, layer_index};
use alexnet::model::Plan;
use alexnet::train::checkpoint::Checkpoint;
use std::path::{Path, PathBuf};
use support::cli::{alexnet, text};
use support::data::rgb_jpeg;
use support::step_checks::tensor_errors_with_floor;

/// A two-step `cifar` run on the synthetic set, and five labelled JPEGs (two classes' folders)
/// beside a file that is no image.
fn setup(d: &Path) -> Vec<PathBuf> {
    let o = alexnet(
        &[
            "train",
            "--device",
            "cpu",
            "--max-steps",
            "2",
            "--out",
            "run",
            "--no-progress",
        ],
        d,
    );
    assert!(o.status.success(), "{}", text(&o));
    let mut images = Vec::new();
    let made = [
        ("horizontal-stripes", 40),
        ("horizontal-stripes", 50),
        ("horizontal-stripes", 64),
        ("vertical-stripes", 33),
        ("vertical-stripes", 90),
    ];
    for (i, (class, side)) in made.into_iter().enumerate() {
        std::fs::create_dir_all(d.join("imgs").join(class)).unwrap();
        let p = d.join("imgs").join(class).join(format!("{i}.jpg"));
        std::fs::write(&p, rgb_jpeg(side, side * 3 / 4 + 7)).unwrap();
        images.push(p);
    }
    std::fs::write(d.join("imgs/vertical-stripes/broken.jpg"), b"not a jpeg").unwrap();
    images
}

/// The network of the run, on the CPU, after one evaluation forward pass over every view of
/// `images` (all in one pass, as the command's one batch).
fn evaluated(d: &Path, images: &[PathBuf], views: EvalViews) -> (Network<CpuDevice>, Checkpoint) {
    let ck = alexnet::train::checkpoint::load(&d.join("run/checkpoint.safetensors")).unwrap();
    let plan = Plan::new(&ck.spec).unwrap();
    let stats = ck.stats.clone().expect("the run keeps its statistics");
    let g = Geometry::new(stats.base, ck.spec.input.size).unwrap();
    let mut pixels = Vec::new();
    for p in images {
        let bytes = std::fs::read(p).unwrap();
        pixels.extend(image_views(&bytes, &stats, g, views, ck.spec.augment).unwrap());
    }
    let mut net = Network::new(&plan, vec![CpuDevice; 2], &ck.params, 0).unwrap();
    net.predict(&pixels, images.len() * views.count()).unwrap();
    (net, ck)
}

/// Layer `layer`'s features of `images` as the network computes them in evaluation, each the
/// mean of its views (in f64).
fn reference(d: &Path, images: &[PathBuf], layer: &str, views: EvalViews) -> (usize, Vec<f64>) {
    let (net, _) = evaluated(d, images, views);
    let out = net
        .layer_output(layer_index(net.plan(), layer).unwrap())
        .unwrap();
    let width = out.len() / (images.len() * views.count());
    let mut mean = vec![0f64; images.len() * width];
    for (i, row) in out.chunks(width).enumerate() {
        let image = i / views.count();
        for (m, v) in mean[image * width..][..width].iter_mut().zip(row) {
            *m += *v as f64 / views.count() as f64;
        }
    }
    (width, mean)
}

/// The logits `fc4` makes of `pool3` rows (each tower's slice of the classifier reads every
/// tower's pool3 side by side): what the rows' layout must be for the next layer.
fn logits_of_pool3(ck: &Checkpoint, pool3: &[f32], inputs: usize) -> Vec<f64> {
    let towers = &ck.params[ck.params.len() - 1];
    let mut logits = Vec::new();
    for x in pool3.chunks(inputs) {
        for t in towers {
            for (o, w) in t.weight.data.chunks(inputs).enumerate() {
                let dot: f64 = w.iter().zip(x).map(|(&w, &x)| w as f64 * x as f64).sum();
                logits.push(dot + t.bias.data[o] as f64);
            }
        }
    }
    logits
}
fn features(d: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["features", "--checkpoint", "run", "--no-progress"];
    args.extend_from_slice(extra);
    args.push("imgs");
    alexnet(&args, d)
}

#[test]
fn rows_are_the_networks_evaluation_activations_with_paths_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let images = setup(d);
    let run = |layer: &str| {
        let out = format!("{layer}.npy");
        let o = features(d, &["--device", "cpu", "--layer", layer, "--out", &out]);
        assert!(o.status.success(), "{}", text(&o));
        assert!(
            text(&o).contains("skipped") && text(&o).contains("broken.jpg"),
            "{}",
            text(&o)
        );
        file::read(&d.join(&out)).unwrap()
    };
    let (net, ck) = evaluated(d, &images, EvalViews::Centre);
    let logits = net.logits().unwrap();
    // fc4's rows are the logits: the same device, batch and order of every sum, the same bits.
    let (cols, fc4, rows) = run("fc4");
    let classes = net.plan().classes;
    assert_eq!(
        (cols, &fc4),
        (classes, &logits),
        "the CPU's fc4 features are not its logits"
    );
    assert_eq!(rows.len(), images.len());
    assert!(rows[0].0.ends_with("horizontal-stripes/0.jpg"), "{rows:?}");
    assert_eq!(rows[0].1, "horizontal-stripes");
    assert_eq!(rows[4].1, "vertical-stripes");
    // pool3's rows, laid out as the towers meet, give the logits through fc4's weights.
    let (cols, pool3, _) = run("pool3");
    let want = logits_of_pool3(&ck, &pool3, cols);
    let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
    let logits: Vec<f64> = logits.iter().map(|&v| v as f64).collect();
    let err = logits
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs() / scale)
        .fold(0.0, f64::max);
    // An fp32 dot product of a few hundred terms against f64: ~1e-6 of the largest logit.
    assert!(err < 1e-5, "pool3 features do not make the logits: {err:e}");
    // The .npy header, read here without the engine's reader (numpy where it is installed).
    let bytes = std::fs::read(d.join("fc4.npy")).unwrap();
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = String::from_utf8_lossy(&bytes[10..10 + hlen]).to_string();
    assert!(bytes.starts_with(b"\x93NUMPY\x01\x00"), "{header}");
    let shape = format!("'shape': (5, {classes})");
    assert!(
        header.contains("'descr': '<f4'") && header.contains(&shape),
        "{header}"
    );
    assert_eq!(bytes.len(), 10 + hlen + 5 * classes * 4);
    numpy_agrees(
        &d.join("fc4.npy"),
        &file::read(&d.join("fc4.npy")).unwrap().1,
    );
}

/// Where numpy imports, it loads the file to the same values; elsewhere one line says so.
fn numpy_agrees(npy: &Path, values: &[f32]) {
    let script = format!(
        "import numpy; a = numpy.load({:?}); print(' '.join(repr(float(v)) for v in a.ravel()))",
        npy.display().to_string()
    );
    match std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
    {
        Ok(o) if o.status.success() => {
            let loaded: Vec<f32> = String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .map(|v| v.parse::<f64>().unwrap() as f32)
                .collect();
            assert_eq!(loaded, values, "numpy reads other values");
        }
        _ => println!("SKIP: numpy does not import here; the .npy header was checked by hand"),
    }
}

#[test]
fn ten_crops_average_their_views_and_the_host_executor_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let images = setup(d);
    let o = features(
        d,
        &[
            "--device",
            "cpu",
            "--layer",
            "fc4",
            "--ten-crop",
            "--out",
            "t.safetensors",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let (_, got, rows) = file::read(&d.join("t.safetensors")).unwrap();
    assert_eq!(rows.len(), images.len());
    let (_, want) = reference(d, &images, "fc4", EvalViews::TenCrop);
    // The command averages ten f32 values in f32, the reference in f64: a few ulp of the mean.
    let want32: Vec<f32> = want.iter().map(|&v| v as f32).collect();
    let err = tensor_errors_with_floor(&[got], &[want32], 1e-2);
    assert!(err < 1e-6, "ten-crop mean off by {err:e}");
    // The same features through the CUDA kernels run by the host executor: the kernels sum in
    // another order, so within the kernels' tolerance of 1e-4 (tests/support/step_checks.rs).
    let o = features(d, &["--device", "emu", "--layer", "fc4", "--out", "e.npy"]);
    assert!(o.status.success(), "{}", text(&o));
    let (_, emu, _) = file::read(&d.join("e.npy")).unwrap();
    let (_, cpu) = reference(d, &images, "fc4", EvalViews::Centre);
    let cpu32: Vec<f32> = cpu.iter().map(|&v| v as f32).collect();
    let err = tensor_errors_with_floor(&[emu], &[cpu32], 1e-2);
    assert!(err < 1e-4, "emu features off by {err:e}");
}

#[test]
fn bad_requests_are_named_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let o = features(d, &["--device", "cpu", "--out", "f.npy"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("no layer \"fc7\"") && text(&o).contains("pool3, fc4"),
        "{}",
        text(&o)
    );
    let o = features(
        d,
        &["--device", "cpu", "--layer", "conv1", "--out", "f.npy"],
    );
    assert!(
        !o.status.success() && text(&o).contains("relu1"),
        "{}",
        text(&o)
    );
    assert!(!d.join("f.npy").exists() && !d.join("f.rows.tsv").exists());
    let o = features(d, &["--device", "cpu", "--layer", "fc4", "--out", "f.bin"]);
    assert!(
        !o.status.success() && text(&o).contains(".npy"),
        "{}",
        text(&o)
    );
    std::fs::write(d.join("mine.npy"), b"keep").unwrap();
    let o = features(
        d,
        &["--device", "cpu", "--layer", "fc4", "--out", "mine.npy"],
    );
    assert!(
        !o.status.success() && text(&o).contains("never written over"),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read(d.join("mine.npy")).unwrap(), b"keep");
    let leftovers: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
