//! PyTorch as a peer: `scripts/torch_alexnet.py` builds a `torch.nn.Module` from a checkpoint's
//! spec alone (docs/CHECKPOINT.md) and must give the engine's test-time logits on the same input.
//! Skipped, with one line saying so, where `python3 -c "import torch"` fails.
//!
//! The checkpoints are trained by the CLI (so they are real files, statistics and all): `cifar`
//! as it ships, and `paper`, `net145` and `one-tower` as the presets print them with every layer
//! kept and only the widths cut (so each trains in a second on the CPU), on a 7-class folder: 7
//! classes do not split across two towers, so `paper`'s fc8 sits on tower 0 alone, as `net145`'s
//! always does. Between them they cover grouped convolutions, the exchanges (conv3, every fc),
//! LRN both ways (α and α/n), LRN before and after ReLU, net145's one-sided padding and spatial
//! normalisation, test-time dropout, fc8 split across towers and on one tower, and one tower.

use alexnet::data::{EvalViews, Geometry, image_views};
use alexnet::device::cpu::CpuDevice;
use alexnet::engine::Network;
use alexnet::model::Plan;
use alexnet::train::checkpoint;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The largest |torch − engine| allowed, relative to the largest |engine logit| of the batch.
/// Both sides compute in f32 from the same f32 weights and inputs, so they differ only in the
/// order of their sums (GEMM blocking, im2col vs direct convolution) and in `pow`'s last ulp:
/// each logit comes through at most 8 weighted layers, each a sum of hundreds to thousands of
/// products that carries an error of some ulps (1e-7) of the magnitudes summed. Measured (2 cores, torch 2.15
/// CPU): 4e-7 to 7e-7 of the logits' scale on the four nets here (the test prints each), and 2e-7
/// on the full-size `paper`. 1e-4 sits over 100x above that. A wrong convention in the script
/// errs by far more; each of these, tried once, failed the test: the towers concatenated in
/// reverse order (2.2 of the scale), fc input flattened H, W, C instead of C, H, W (1.8), LRN's
/// α/n convention flipped (1.9e-2), LRN windows crossing the towers (2.4e-3), nn.Dropout's
/// identity at test time (2.6), spatial norm's α/size² taken as α/size (0.15), and net145's
/// conv1 padded on both sides (its shapes no longer fit: the script stops with an error).
const TOL: f64 = 1e-4;

fn torch_imports() -> bool {
    Command::new("python3")
        .args(["-c", "import torch"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn pillow_imports() -> bool {
    Command::new("python3")
        .args(["-c", "import PIL"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn alexnet(args: &[&str], cwd: &Path) -> Output {
    // ALEXNET_BIN and ALEXNET_TORCH_SCRIPT: where the GPU bundle (scripts/gpu-check.sh) has
    // them, on a machine without this checkout.
    let bin = std::env::var_os("ALEXNET_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_alexnet")));
    let o = Command::new(bin)
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("the alexnet binary runs");
    assert!(o.status.success(), "alexnet {args:?}: {}", text(&o));
    o
}

fn script() -> PathBuf {
    std::env::var_os("ALEXNET_TORCH_SCRIPT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/torch_alexnet.py"))
}

fn run_script(args: &[&str], cwd: &Path) {
    let o = Command::new("python3")
        .arg(script())
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("python3 runs");
    assert!(
        o.status.success(),
        "torch_alexnet.py {args:?}: {}",
        text(&o)
    );
}

/// A version 1.0 `.npy` of little-endian f32 in C order.
fn write_npy(path: &Path, shape: &[usize], data: &[f32]) {
    assert_eq!(shape.iter().product::<usize>(), data.len());
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_text = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_text}, }}");
    // Magic (6) + version (2) + header length (2) + header + '\n', to a multiple of 64.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend(data.iter().flat_map(|v| v.to_le_bytes()));
    std::fs::write(path, bytes).unwrap();
}

/// A `.npy` of f32 as `write_npy` and the script write it: its shape and values.
fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{}", path.display());
    let (len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ => (
            u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize,
            12,
        ),
    };
    let header = std::str::from_utf8(&bytes[start..start + len]).unwrap();
    assert!(
        header.contains("'<f4'") && header.contains("'fortran_order': False"),
        "{header}"
    );
    let inside = header.split("'shape': (").nth(1).unwrap();
    let shape: Vec<usize> = inside[..inside.find(')').unwrap()]
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let data: Vec<f32> = bytes[start + len..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(shape.iter().product::<usize>(), data.len(), "{header}");
    (shape, data)
}

/// A preset's spec as `alexnet model --json` prints it, every layer kept, its widths cut to an
/// eighth (fc6/fc7 to 64 units) and its classifier sized to `classes`, on the first tower when
/// the towers do not divide them (what `train` does to a preset's fc8).
fn narrow(preset: &str, classes: usize, dir: &Path) -> PathBuf {
    let o = alexnet(&["model", "--preset", preset, "--json"], dir);
    let mut spec: Value = serde_json::from_slice(&o.stdout).expect("the spec is JSON");
    let towers = spec["towers"].as_u64().unwrap() as usize;
    spec["name"] = Value::from(format!("{preset}-narrow"));
    let layers = spec["layers"].as_array_mut().unwrap();
    let last = layers.len() - 1;
    for (i, l) in layers.iter_mut().enumerate() {
        match l["type"].as_str().unwrap() {
            "conv" => l["filters"] = Value::from(l["filters"].as_u64().unwrap() / 8),
            "fc" if i == last => {
                l["units"] = Value::from(classes);
                if classes % towers != 0 {
                    l["placement"] = Value::from("first");
                }
            }
            "fc" => l["units"] = Value::from(64),
            _ => {}
        }
    }
    // Weights of std 1/sqrt(fan-in), so activations keep their size (tens, as the pixels') through
    // the narrow layers, where the presets' 0.01 would let them fade into the biases, and LRN's
    // α·Σx² is of the size of its k.
    let plan = Plan::new(&serde_json::from_value(spec.clone()).unwrap()).unwrap();
    for (l, lp) in spec["layers"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .zip(&plan.layers)
    {
        if let Some(shape) = lp.weight_shape() {
            let fan_in: usize = shape[1..].iter().product();
            l["init"]["weight_std"] = Value::from(1.0 / (fan_in as f64).sqrt());
        }
    }
    let path = dir.join(format!("{preset}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&spec).unwrap()).unwrap();
    path
}

fn picture(w: u32, h: u32, seed: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x * 5 + seed * 31) as u8,
            (y * 6 + x * y % 7) as u8,
            (seed * 37 + (x ^ y) * 3) as u8,
        ])
    })
}

/// Pseudo-random network inputs in the range of mean-subtracted pixels (±128).
fn noise(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 256.0
        })
        .collect()
}

/// The engine's logits for `images` (`[n, 3, size, size]`) from the checkpoint at `path`.
fn engine_logits(path: &Path, images: &[f32], n: usize) -> Vec<f32> {
    let ck = checkpoint::load(path).unwrap();
    let plan = Plan::new(&ck.spec).unwrap();
    let mut net = Network::new(&plan, vec![CpuDevice; ck.spec.towers], &ck.params, 0).unwrap();
    net.predict(images, n).unwrap();
    net.logits().unwrap()
}

fn largest(v: &[f32]) -> f64 {
    v.iter().fold(0f64, |m, &x| m.max((x as f64).abs()))
}

fn max_diff(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .fold(0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs()))
}

/// Compares the script's logits with the engine's on `pictures` (rendered by the library's
/// `predict` preprocessing) and one input of noise; returns the largest difference relative to
/// the logits' scale.
fn compare(name: &str, ck: &Path, pictures: &[PathBuf], dir: &Path) -> f64 {
    let spec = checkpoint::load(ck).unwrap().spec;
    let stats = checkpoint::load(ck)
        .unwrap()
        .stats
        .expect("kept statistics");
    let g = Geometry::new(stats.base, spec.input.size).unwrap();
    let mut images = Vec::new();
    for p in pictures {
        let bytes = std::fs::read(p).unwrap();
        images.extend(image_views(&bytes, &stats, g, EvalViews::Centre, spec.augment).unwrap());
    }
    images.extend(noise(g.input_len(), pictures.len() as u64));
    let n = pictures.len() + 1;
    let want = engine_logits(ck, &images, n);

    let (input, out) = (
        dir.join(format!("{name}-x.npy")),
        dir.join(format!("{name}-logits.npy")),
    );
    let size = spec.input.size;
    write_npy(&input, &[n, 3, size, size], &images);
    let (ck_s, in_s, out_s) = (
        ck.to_str().unwrap(),
        input.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    run_script(&[ck_s, "--input", in_s, "--out", out_s], dir);
    let (shape, got) = read_npy(&out);
    let classes = want.len() / n;
    assert_eq!(shape, [n, classes], "{name}: the script's logits' shape");
    let scale = largest(&want);
    assert!(
        scale > 1e-3,
        "{name}: logits of {scale:e} at most test nothing"
    );
    // The inputs differ, so must their logits: a network that ignores its input passes nothing.
    assert!(
        max_diff(&want[..classes], &want[classes..2 * classes]) > 1e-3 * scale,
        "{name}: two inputs give the same logits"
    );
    let rel = max_diff(&got, &want) / scale;
    println!(
        "{name}: {n} inputs x {classes} classes, logits up to {scale:.3e}; torch - engine: {rel:.2e} of that"
    );
    assert!(
        rel < TOL,
        "{name}: torch's logits differ from the engine's by {rel:.3e} of their scale (allowed {TOL:e})\n engine {want:?}\n torch  {got:?}"
    );
    rel
}

#[test]
fn torch_module_built_from_a_checkpoint_gives_the_engines_logits() {
    if !torch_imports() {
        println!("SKIP: torch does not import (pip install torch)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();

    // Pictures at the synthetic set's base (32: decoded as they are, no resize) and others.
    let small = d.join("small.png");
    picture(32, 32, 1).save(&small).unwrap();
    let odd = d.join("odd.png");
    picture(45, 37, 2).save(&odd).unwrap();
    let classes = 7;
    for c in 0..classes {
        let folder = d.join("c7").join(format!("class{c}"));
        std::fs::create_dir_all(&folder).unwrap();
        picture(48, 40, c).save(folder.join("a.png")).unwrap();
        picture(40, 52, c + 10).save(folder.join("b.png")).unwrap();
    }

    // cifar as shipped, on the synthetic set.
    alexnet(
        &[
            "train",
            "--max-steps",
            "2",
            "--no-progress",
            "--out",
            "cifar",
        ],
        d,
    );
    let cifar = d.join("cifar/checkpoint.safetensors");
    compare("cifar", &cifar, &[small.clone(), odd.clone()], d);

    for preset in ["paper", "net145", "one-tower"] {
        let spec = narrow(preset, classes as usize, d);
        let out = format!("run-{preset}");
        alexnet(
            &[
                "train",
                "--data",
                "c7",
                "--spec",
                spec.to_str().unwrap(),
                "--batch",
                "4",
                "--max-steps",
                "2",
                "--lr",
                "0.0001",
                "--no-progress",
                "--out",
                &out,
            ],
            d,
        );
        let ck = d.join(&out).join("checkpoint.safetensors");
        let loaded = checkpoint::load(&ck).unwrap();
        if preset != "one-tower" {
            let fc8 = Plan::new(&loaded.spec).unwrap();
            assert_eq!(
                fc8.layers.last().unwrap().active_towers,
                1,
                "{preset}: 7 classes put fc8 on tower 0 alone"
            );
        }
        compare(preset, &ck, &[odd.clone(), d.join("c7/class3/b.png")], d);
    }

    // The script's own preprocessing (Pillow) of an image the engine does not resize: the same
    // input exactly, so the same logits as the engine's `predict` path.
    if !pillow_imports() {
        println!("note: Pillow does not import; the script's --image path was not checked");
        return;
    }
    let ck = checkpoint::load(&cifar).unwrap();
    let stats = ck.stats.clone().unwrap();
    let g = Geometry::new(stats.base, ck.spec.input.size).unwrap();
    let bytes = std::fs::read(&small).unwrap();
    let want_input = image_views(&bytes, &stats, g, EvalViews::Centre, ck.spec.augment).unwrap();
    let want = engine_logits(&cifar, &want_input, 1);
    let (x, out) = (d.join("image-x.npy"), d.join("image-logits.npy"));
    run_script(
        &[
            cifar.to_str().unwrap(),
            "--image",
            small.to_str().unwrap(),
            "--save-input",
            x.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        d,
    );
    let (_, got_input) = read_npy(&x);
    assert_eq!(
        got_input, want_input,
        "Pillow's decoding and crop of a 32x32 PNG"
    );
    let (_, got) = read_npy(&out);
    let rel = max_diff(&got, &want) / largest(&want);
    println!("cifar --image of a 32x32 PNG: torch - engine: {rel:.2e}");
    assert!(
        rel < TOL,
        "--image: {rel:e}\n engine {want:?}\n torch  {got:?}"
    );

    // One the engine resizes (45x37 to 32x32): Pillow's bilinear filter and fast_image_resize's
    // round differently, by one level in some pixels (measured: 0 to 20% of the values, never
    // more than 1 level for PNGs, 2 for JPEGs, whose decoders differ too; docs/CHECKPOINT.md).
    let bytes = std::fs::read(&odd).unwrap();
    let want_input = image_views(&bytes, &stats, g, EvalViews::Centre, ck.spec.augment).unwrap();
    run_script(
        &[
            cifar.to_str().unwrap(),
            "--image",
            odd.to_str().unwrap(),
            "--save-input",
            x.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        d,
    );
    let (_, got_input) = read_npy(&x);
    let levels = max_diff(&got_input, &want_input);
    let differ = got_input
        .iter()
        .zip(&want_input)
        .filter(|(a, b)| a != b)
        .count();
    println!(
        "cifar --image of a 45x37 PNG: Pillow's resize differs from the engine's by at most {levels} \
         level in {differ} of {} values",
        want_input.len()
    );
    assert!(
        levels <= 1.0,
        "Pillow's resize is {levels} levels off the engine's"
    );
}
