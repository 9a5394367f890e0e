//! The paper's Figure 4 end to end. `alexnet features`: the rows it writes are the activations
//! the network computes in evaluation (on the CPU bit for bit, on the host executor within the
//! kernels' tolerance), ten crops average their views, both file formats read back with each
//! row's path and label, bad input (an unknown layer, a fused one, an existing file, an
//! unreadable image) is named, and Ctrl-C leaves nothing. `alexnet similar`: a query in the
//! gallery finds itself first, a gallery of images and its features file rank alike, a file of
//! another layer, width or network is refused. `predict --figure` and `similar --figure` draw.

pub mod support;

use alexnet::data::{EvalViews, Geometry, image_views};
use alexnet::device::cpu::CpuDevice;
use alexnet::engine::Network;
use alexnet::features::{file, layer_index};
use alexnet::model::Plan;
use alexnet::train::checkpoint::Checkpoint;
use std::path::{Path, PathBuf};
use support::cli::{alexnet, signal, text};
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

/// Starts `alexnet features` over `count` copies of one image, one image per pass (long enough
/// to be interrupted).
fn spawn_slow_features(d: &Path, count: usize) -> std::process::Child {
    std::fs::create_dir_all(d.join("many")).unwrap();
    for i in 0..count {
        std::fs::write(d.join(format!("many/{i:04}.jpg")), rgb_jpeg(64, 48)).unwrap();
    }
    std::process::Command::new(env!("CARGO_BIN_EXE_alexnet"))
        .args([
            "features",
            "--checkpoint",
            "run",
            "--device",
            "cpu",
            "--no-progress",
        ])
        .args(["--layer", "pool3", "--batch", "1", "--out", "f.npy", "many"])
        .current_dir(d)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn ctrl_c_leaves_no_features_file_and_no_partial_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let child = spawn_slow_features(d, 3000);
    // Interrupted once rows are on disk: the partial matrix has grown past its header.
    let partial = d.join(format!("f.npy.partial-{}", child.id()));
    let started = std::time::Instant::now();
    while std::fs::metadata(&partial).map_or(0, |m| m.len()) <= 128 {
        assert!(started.elapsed().as_secs() < 120, "no rows were written");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    signal(child.id(), "INT");
    let o = child.wait_with_output().unwrap();
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("interrupted"), "{}", text(&o));
    let left: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("f."))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Runs `alexnet similar` on the CPU with `extra` arguments and parses its JSON.
fn similar_json(d: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "similar",
        "--checkpoint",
        "run",
        "--device",
        "cpu",
        "--json",
    ];
    args.extend_from_slice(extra);
    let o = alexnet(&args, d);
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Each query's nearest rows as (path, label, distance).
fn nearest(report: &serde_json::Value) -> Vec<Vec<(String, String, f64)>> {
    report["queries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| {
            q["nearest"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| {
                    (
                        h["path"].as_str().unwrap().to_string(),
                        h["label"].as_str().unwrap().to_string(),
                        h["distance"].as_f64().unwrap(),
                    )
                })
                .collect()
        })
        .collect()
}

#[test]
fn a_query_finds_itself_first_in_a_file_and_in_images_alike() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let o = features(
        d,
        &["--device", "cpu", "--layer", "pool3", "--out", "g.npy"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let queries = [
        "imgs/horizontal-stripes/1.jpg",
        "imgs/vertical-stripes/4.jpg",
    ];
    let mut args = vec!["--gallery", "g.npy", "--top", "9"];
    args.extend(queries);
    let from_file = similar_json(d, &args);
    assert_eq!(
        from_file["layer"], "pool3",
        "the file's layer is the default"
    );
    assert_eq!(from_file["gallery_rows"], 5);
    let found = nearest(&from_file);
    for (q, hits) in queries.iter().zip(&found) {
        // All five rows (top 9 > 5), nearest first; the query itself first. Its features in
        // a batch of one against the gallery's batch of five: the CPU's kernels sum each
        // image alone, so the distance is 0 up to the fp32 rounding of those sums.
        assert_eq!(hits.len(), 5, "{hits:?}");
        assert!(hits[0].0.ends_with(q), "{q}: {hits:?}");
        assert!(hits[0].2 < 1e-3, "{q} is at {} from itself", hits[0].2);
        assert!(hits.windows(2).all(|w| w[0].2 <= w[1].2), "{hits:?}");
    }
    assert_eq!(found[0][0].1, "horizontal-stripes");
    // The gallery given as images: its features made on the spot, the same ranks.
    let mut args = vec!["--gallery", "imgs", "--layer", "pool3", "--top", "9"];
    args.extend(queries);
    let from_images = nearest(&similar_json(d, &args));
    for (a, b) in found.iter().zip(&from_images) {
        let order =
            |h: &Vec<(String, String, f64)>| h.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
        assert_eq!(order(a), order(b));
        for (x, y) in a.iter().zip(b) {
            assert!((x.2 - y.2).abs() <= 1e-4 * x.2.max(1.0), "{x:?} {y:?}");
        }
    }
    // Text: the query, then its ranks.
    let o = alexnet(
        &[
            "similar",
            "--checkpoint",
            "run",
            "--device",
            "cpu",
            "--gallery",
            "g.npy",
            "--top",
            "2",
            queries[0],
        ],
        d,
    );
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(
        out.lines().nth(1).unwrap().trim_start().starts_with("1 "),
        "{out}"
    );
}

#[test]
fn a_gallery_of_another_layer_width_or_network_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let o = features(d, &["--device", "cpu", "--layer", "fc4", "--out", "g.npy"]);
    assert!(o.status.success(), "{}", text(&o));
    let refused = |args: &[&str], why: &str| {
        let mut all = vec!["similar", "--checkpoint", "run", "--device", "cpu"];
        all.extend_from_slice(args);
        all.push("imgs/horizontal-stripes/0.jpg");
        let o = alexnet(&all, d);
        assert!(
            !o.status.success() && text(&o).contains(why),
            "{why}: {}",
            text(&o)
        );
    };
    refused(
        &["--gallery", "g.npy", "--layer", "pool3"],
        "holds fc4 features",
    );
    // Another network's file: its sidecar names it.
    let sidecar = std::fs::read_to_string(d.join("g.rows.tsv")).unwrap();
    assert!(sidecar.starts_with("#layer=fc4\t"), "{sidecar}");
    std::fs::copy(d.join("g.npy"), d.join("n.npy")).unwrap();
    let renamed = sidecar.replacen("network=cifar", "network=alexnet", 1);
    assert_ne!(renamed, sidecar, "the sidecar names the network: {sidecar}");
    std::fs::write(d.join("n.rows.tsv"), renamed).unwrap();
    refused(
        &["--gallery", "n.npy"],
        "features of the network \"alexnet\"",
    );
    // A matrix from elsewhere (no record of its layer) of the wrong width.
    let mut w = file::FeatureWriter::create(&d.join("w.npy"), 7, false, vec![]).unwrap();
    w.push(&[0.0; 7], "x.jpg", "").unwrap();
    w.finish().unwrap();
    refused(
        &["--gallery", "w.npy", "--layer", "fc4"],
        "rows of 7 values",
    );
    refused(&["--gallery", "g.npy", "--figure", "f.jpg"], "PNG");
    refused(
        &["--gallery", "g.npy", "--gallery", "imgs"],
        "searched alone",
    );
}

#[test]
fn figures_draw_each_image_and_its_bars_or_neighbours() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let o = alexnet(
        &[
            "predict",
            "--checkpoint",
            "run",
            "--device",
            "cpu",
            "--figure",
            "left.png",
            "imgs/horizontal-stripes",
            "imgs/vertical-stripes/3.jpg",
        ],
        d,
    );
    assert!(o.status.success(), "{}", text(&o));
    let left = image::open(d.join("left.png")).unwrap().to_rgb8();
    use alexnet::viz::{neighbours, predictions};
    // Four images: one row of four cells.
    assert_eq!(
        (left.width(), left.height()),
        (4 * predictions::CELL_W, predictions::CELL_H)
    );
    let o = alexnet(
        &[
            "similar",
            "--checkpoint",
            "run",
            "--device",
            "cpu",
            "--gallery",
            "imgs",
            "--layer",
            "pool3",
            "--top",
            "3",
            "--figure",
            "right.png",
            "imgs/horizontal-stripes/0.jpg",
            "imgs/vertical-stripes/3.jpg",
        ],
        d,
    );
    assert!(o.status.success(), "{}", text(&o));
    let right = image::open(d.join("right.png")).unwrap().to_rgb8();
    // Two queries, each beside its three nearest.
    let (w, h) = (
        neighbours::NEIGHBOURS_LEFT + 3 * neighbours::CELL_W,
        2 * neighbours::CELL_H,
    );
    assert_eq!((right.width(), right.height()), (w, h));
    let o = alexnet(
        &[
            "predict",
            "--checkpoint",
            "run",
            "--device",
            "cpu",
            "--figure",
            "x.jpeg",
            "imgs",
        ],
        d,
    );
    assert!(
        !o.status.success() && text(&o).contains("PNG"),
        "{}",
        text(&o)
    );
}
