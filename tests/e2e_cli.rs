//! The `alexnet` binary end to end: the model table, a short synthetic training run, resume,
//! eval, predict and filters on it, and clear errors for bad input.

pub mod support;

use support::cli::{
    alexnet, checkpoint_tensors, signal, spawn_long_training, text, wait_for_lines,
};

#[test]
fn model_prints_the_papers_totals() {
    let dir = tempfile::tempdir().unwrap();
    let o = alexnet(&["model", "--preset", "paper"], dir.path());
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("total: 60,965,224 parameters, 724.4 M multiply-adds per image"),
        "{}",
        text(&o)
    );
    let o = alexnet(&["model", "--preset", "nonsense"], dir.path());
    assert!(
        !o.status.success() && text(&o).contains("unknown preset"),
        "{}",
        text(&o)
    );
}

/// `alexnet model --json | head -1`: a reader that closed the pipe took what it wanted, so the
/// command ends quietly and well, not with a panic. The pipe's read end is closed before the
/// binary starts, so every write it makes meets the closed pipe.
#[test]
fn output_into_a_closed_pipe_is_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["model", "--json"][..], &["model"], &["devices"]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_alexnet"))
            .args(args)
            .current_dir(dir.path())
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.success() && err.is_empty(),
            "{args:?}: {:?} {err}",
            o.status
        );
    }
}

#[test]
fn train_resume_eval_predict_filters_on_the_synthetic_set() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Six seconds of training: a few dozen steps, stopped by the time box with a checkpoint.
    let o = alexnet(
        &[
            "train",
            "--max-minutes",
            "0.1",
            "--batch",
            "32",
            "--no-progress",
            "--out",
            "run",
        ],
        d,
    );
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("No --data given") && out.contains("synthetic"),
        "{out}"
    );
    for f in [
        "checkpoint.safetensors",
        "metrics.jsonl",
        "stats.safetensors",
        "curves.png",
    ] {
        assert!(d.join("run").join(f).exists(), "{f} missing: {out}");
    }
    let steps = |log: &str| log.lines().filter(|l| l.contains("\"loss\"")).count();
    let before = steps(&std::fs::read_to_string(d.join("run/metrics.jsonl")).unwrap());
    assert!(before > 0);

    // The run folder is not overwritten without --resume.
    let o = alexnet(
        &[
            "train",
            "--max-minutes",
            "0.05",
            "--batch",
            "32",
            "--no-progress",
            "--out",
            "run",
        ],
        d,
    );
    assert!(
        !o.status.success() && text(&o).contains("--resume"),
        "{}",
        text(&o)
    );
    // Resuming continues it (and must keep the batch size).
    let o = alexnet(
        &[
            "train",
            "--resume",
            "run",
            "--batch",
            "64",
            "--max-minutes",
            "0.05",
            "--no-progress",
        ],
        d,
    );
    assert!(
        !o.status.success() && text(&o).contains("batch 32"),
        "{}",
        text(&o)
    );
    let o = alexnet(
        &[
            "train",
            "--resume",
            "run",
            "--batch",
            "32",
            "--max-minutes",
            "0.05",
            "--no-progress",
        ],
        d,
    );
    assert!(o.status.success(), "{}", text(&o));
    let after = steps(&std::fs::read_to_string(d.join("run/metrics.jsonl")).unwrap());
    assert!(after > before, "resume added no steps: {before} -> {after}");

    // Filters: the first layer's 2 x 16 kernels as a grid.
    let o = alexnet(&["filters", "--checkpoint", "run", "--out", "f.png"], d);
    assert!(o.status.success(), "{}", text(&o));
    assert!(image::open(d.join("f.png")).is_ok());

    // Predict on a PNG drawn here, and a clear message for a file that is not an image.
    let img = image::RgbImage::from_fn(40, 32, |x, _| {
        image::Rgb([if x % 8 < 4 { 250 } else { 10 }, 30, 30])
    });
    img.save(d.join("stripes.png")).unwrap();
    std::fs::write(d.join("broken.jpg"), b"\xff\xd8\xff\xe0 not really a jpeg").unwrap();
    let o = alexnet(&["predict", "--checkpoint", "run", "stripes.png"], d);
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.lines().filter(|l| l.contains('%')).count() == 5,
        "{out}"
    );
    let o = alexnet(
        &[
            "predict",
            "--checkpoint",
            "run",
            "stripes.png",
            "broken.jpg",
        ],
        d,
    );
    assert!(
        !o.status.success()
            && text(&o).contains("broken.jpg")
            && text(&o).contains("1 of 2 images"),
        "{}",
        text(&o)
    );

    // Eval on a small class-folder tree whose class names are the synthetic set's.
    let classes = ["horizontal-stripes", "vertical-stripes"];
    for (c, name) in classes.iter().enumerate() {
        std::fs::create_dir_all(d.join("val").join(name)).unwrap();
        let img = image::RgbImage::from_fn(32, 32, |x, y| {
            let on = if c == 0 { y % 8 < 4 } else { x % 8 < 4 };
            image::Rgb(if on { [220, 200, 40] } else { [20, 40, 160] })
        });
        img.save(d.join("val").join(name).join("a.png")).unwrap();
    }
    let o = alexnet(&["eval", "--checkpoint", "run", "--data", "val"], d);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("over 2 images"), "{}", text(&o));
}

#[test]
fn bad_input_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = alexnet(&["train", "--data", "no/such/dataset", "--no-progress"], d);
    assert!(
        !o.status.success() && text(&o).contains("no/such/dataset"),
        "{}",
        text(&o)
    );
    let o = alexnet(
        &[
            "train",
            "--device",
            "cuda",
            "--max-minutes",
            "0.01",
            "--no-progress",
            "--out",
            "r",
        ],
        d,
    );
    assert!(
        !o.status.success() && text(&o).contains("--device cpu"),
        "{}",
        text(&o)
    );
    // A failed start leaves no run folder behind.
    assert!(!d.join("r").exists(), "{}", text(&o));
    std::fs::write(d.join("junk.safetensors"), b"junk").unwrap();
    let o = alexnet(&["filters", "--checkpoint", "junk.safetensors"], d);
    assert!(
        !o.status.success() && text(&o).contains("not a safetensors file"),
        "{}",
        text(&o)
    );
    // A checkpoint of another network cannot be resumed under this one.
    let o = alexnet(
        &[
            "train",
            "--max-minutes",
            "0.02",
            "--batch",
            "16",
            "--no-progress",
            "--out",
            "a",
        ],
        d,
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = alexnet(
        &[
            "train",
            "--resume",
            "a",
            "--preset",
            "cifar",
            "--no-lrn",
            "--batch",
            "16",
            "--no-progress",
        ],
        d,
    );
    assert!(
        !o.status.success() && text(&o).contains("cannot resume"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_run_stopped_and_resumed_from_the_command_line_ends_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let common = [
        "--batch",
        "32",
        "--no-progress",
        "--lr-schedule",
        "constant",
        "--max-minutes",
        "10",
    ];
    // Straight to step 30 (an epoch is 312 steps, so this stops mid-epoch).
    let o = alexnet(
        &[
            &["train", "--out", "straight", "--max-steps", "30"][..],
            &common,
        ]
        .concat(),
        d,
    );
    assert!(o.status.success(), "{}", text(&o));
    // To step 11, then resumed to 30.
    let o = alexnet(
        &[
            &["train", "--out", "split", "--max-steps", "11"][..],
            &common,
        ]
        .concat(),
        d,
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = alexnet(
        &[
            &["train", "--resume", "split", "--max-steps", "30"][..],
            &common,
        ]
        .concat(),
        d,
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("resuming"), "{}", text(&o));
    let (a, b) = (
        checkpoint_tensors(&d.join("straight/checkpoint.safetensors")),
        checkpoint_tensors(&d.join("split/checkpoint.safetensors")),
    );
    assert_eq!(a.len(), b.len());
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(
            ta == tb,
            "{na} differs between the straight and the resumed run"
        );
    }
}

#[test]
fn ctrl_c_and_sigterm_save_a_checkpoint_and_exit_cleanly() {
    for sig in ["INT", "TERM"] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let child = spawn_long_training(&["--out", "run"], d);
        // Wait until it is training (the metrics log has lines), then interrupt it.
        wait_for_lines(&d.join("run/metrics.jsonl"), 3);
        signal(child.id(), sig);
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "SIG{sig}: {}", text(&o));
        assert!(text(&o).contains("Interrupted"), "SIG{sig}: {}", text(&o));
        assert!(text(&o).contains("--resume run"), "SIG{sig}: {}", text(&o));
        let ck = alexnet::train::checkpoint::load(&d.join("run/checkpoint.safetensors")).unwrap();
        assert!(
            ck.state.step >= 3,
            "SIG{sig}: saved at step {}",
            ck.state.step
        );
        let names: Vec<String> = std::fs::read_dir(d.join("run"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names
                .iter()
                .all(|n| !n.contains("partial") && n != "run.lock"),
            "SIG{sig}: left behind: {names:?}"
        );
    }
}

#[test]
fn a_second_signal_quits_at_once_and_the_last_checkpoint_stays_readable() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A first run leaves a checkpoint; the resumed one is then signalled twice in a row.
    let child = spawn_long_training(&["--out", "run"], d);
    wait_for_lines(&d.join("run/metrics.jsonl"), 3);
    signal(child.id(), "TERM");
    assert!(child.wait_with_output().unwrap().status.success());
    let child = spawn_long_training(&["--resume", "run"], d);
    let lines = std::fs::read_to_string(d.join("run/metrics.jsonl"))
        .unwrap()
        .lines()
        .count();
    wait_for_lines(&d.join("run/metrics.jsonl"), lines + 3);
    signal(child.id(), "TERM");
    signal(child.id(), "TERM");
    let o = child.wait_with_output().unwrap();
    // Either the second signal came while the first was being honoured (exit 130 at once), or
    // after the save had finished (a clean exit); both leave a checkpoint that loads.
    let code = o.status.code();
    assert!(
        code == Some(130) || code == Some(0),
        "{code:?}: {}",
        text(&o)
    );
    alexnet::train::checkpoint::load(&d.join("run/checkpoint.safetensors")).unwrap();
}

#[test]
fn a_run_keeps_its_precision_on_resume_unless_told_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let precision_of = |d: &std::path::Path| {
        alexnet::train::checkpoint::load(&d.join("run/checkpoint.safetensors"))
            .unwrap()
            .spec
            .precision
            .to_string()
    };
    let train = |extra: &[&str], steps: &str| {
        let mut args = vec![
            "train",
            "--max-steps",
            steps,
            "--batch",
            "8",
            "--no-val",
            "--no-progress",
        ];
        args.extend_from_slice(extra);
        let o = alexnet(&args, d);
        assert!(o.status.success(), "{}", text(&o));
        text(&o)
    };
    let out = train(&["--precision", "bf16", "--out", "run"], "3");
    assert!(out.contains("bf16 products"), "{out}");
    assert_eq!(precision_of(d), "bf16");

    let out = train(&["--resume", "run"], "5");
    assert!(out.contains("at the run's precision, bf16"), "{out}");
    assert!(out.contains("bf16 products"), "{out}");
    assert_eq!(precision_of(d), "bf16");

    let out = train(&["--resume", "run", "--precision", "tf32"], "6");
    assert!(
        out.contains("at tf32, as --precision asks (the run was trained at bf16)"),
        "{out}"
    );
    assert_eq!(precision_of(d), "tf32");
    // Naming the network again (its preset says fp32) changes neither the network nor the
    // run's precision.
    let out = train(&["--resume", "run", "--preset", "cifar"], "7");
    assert!(out.contains("at the run's precision, tf32"), "{out}");

    // Predict scores at the checkpoint's precision unless told otherwise, and says so.
    image::RgbImage::from_fn(32, 32, |x, _| {
        image::Rgb([if x % 8 < 4 { 250 } else { 10 }, 30, 30])
    })
    .save(d.join("stripes.png"))
    .unwrap();
    let o = alexnet(
        &[
            "predict",
            "--checkpoint",
            "run",
            "--precision",
            "fp32",
            "stripes.png",
        ],
        d,
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("scoring at fp32 as --precision asks (the network was trained at tf32)"),
        "{}",
        text(&o)
    );
    let o = alexnet(&["predict", "--checkpoint", "run", "stripes.png"], d);
    assert!(
        o.status.success() && !text(&o).contains("--precision asks"),
        "{}",
        text(&o)
    );

    let o = alexnet(&["train", "--precision", "fp16", "--out", "other"], d);
    assert!(
        !o.status.success() && text(&o).contains("fp32, tf32, bf16"),
        "{}",
        text(&o)
    );
    assert!(
        !d.join("other").exists(),
        "a refused start wrote its folder"
    );
}

/// `prepare --pack` on the shared ImageNet samples, then `train`, `eval` and `prepare` reading the
/// pack where they read a dataset (skipped, with a line, where the samples are absent).
#[test]
fn imagenet_samples_pack_then_train_and_eval_from_the_pack() {
    let Some(samples) = support::data::shared_data("ALEXNET_IMAGENET_SAMPLES", "imagenet-samples")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = samples.to_str().unwrap();
    let o = alexnet(
        &[
            "prepare",
            "--data",
            src,
            "--pack",
            "pk",
            "--shard-images",
            "40",
            "--no-progress",
        ],
        d,
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("pk/train: 100 images in 3 shards"),
        "{}",
        text(&o)
    );
    assert!(
        text(&o).contains("wrote pk/train.stats-256.safetensors"),
        "{}",
        text(&o)
    );
    let o = alexnet(
        &[
            "prepare",
            "--data",
            src,
            "--pack",
            "pk",
            "--shard-images",
            "40",
            "--no-progress",
        ],
        d,
    );
    assert!(text(&o).contains("already packed"), "{}", text(&o));
    // The paper net with a 100-class classifier (the samples hold 100 classes).
    let o = alexnet(&["model", "--preset", "paper", "--json"], d);
    let spec = String::from_utf8_lossy(&o.stdout).replace("\"units\": 1000", "\"units\": 100");
    std::fs::write(d.join("p100.json"), spec).unwrap();
    let o = alexnet(
        &[
            "train",
            "--data",
            "pk",
            "--spec",
            "p100.json",
            "--batch",
            "16",
            "--max-steps",
            "2",
            "--no-progress",
            "--out",
            "run",
        ],
        d,
    );
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("training set pk/train: 100 images in 100 classes"),
        "{t}"
    );
    assert!(
        t.contains("read") && t.contains("pk/train.stats-256.safetensors"),
        "{t}"
    );
    assert!(t.contains("Stopped after 2 steps"), "{t}");
    let o = alexnet(&["eval", "--checkpoint", "run", "--data", "pk/train"], d);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("100 images"), "{}", text(&o));
    let o = alexnet(&["prepare", "--data", "pk", "--no-progress"], d);
    assert!(text(&o).contains("reused"), "{}", text(&o));
}

/// A root with train/ and val/: both are packed, every split's folder checked before anything is
/// written, and training from the pack evaluates its val split.
#[test]
fn a_pack_of_train_and_val_is_checked_whole_before_it_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (split, per_class) in [("train", 6), ("val", 2)] {
        for class in ["ant", "bee"] {
            let folder = d.join("data").join(split).join(class);
            std::fs::create_dir_all(&folder).unwrap();
            for i in 0..per_class {
                let img = image::RgbImage::from_fn(40 + i, 36, |x, y| {
                    image::Rgb([
                        (x * 5) as u8,
                        (y * 6) as u8,
                        if class == "ant" { 30 } else { 220 },
                    ])
                });
                img.save(folder.join(format!("{i}.png"))).unwrap();
            }
        }
    }
    std::fs::create_dir_all(d.join("pk/val")).unwrap();
    std::fs::write(d.join("pk/val/notes.txt"), "mine").unwrap();
    let pack = [
        "prepare",
        "--data",
        "data",
        "--pack",
        "pk",
        "--base",
        "32",
        "--no-progress",
    ];
    let o = alexnet(&pack, d);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("holds notes.txt, which is not part of a pack"),
        "{}",
        text(&o)
    );
    assert!(
        !d.join("pk/train").exists(),
        "the train split was written before val was checked"
    );
    std::fs::remove_file(d.join("pk/val/notes.txt")).unwrap();
    let o = alexnet(&pack, d);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("pk/train: 12 images in 1 shards"),
        "{}",
        text(&o)
    );
    assert!(
        text(&o).contains("pk/val: 4 images in 1 shards"),
        "{}",
        text(&o)
    );
    let spec =
        String::from_utf8_lossy(&alexnet(&["model", "--preset", "cifar", "--json"], d).stdout)
            .replace("\"units\": 10,", "\"units\": 2,");
    std::fs::write(d.join("c2.json"), spec).unwrap();
    let o = alexnet(
        &[
            "train",
            "--data",
            "pk",
            "--spec",
            "c2.json",
            "--batch",
            "4",
            "--epochs",
            "1",
            "--no-progress",
            "--out",
            "run",
        ],
        d,
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("validation: 4 images"), "{}", text(&o));
    assert!(text(&o).contains("Validation: top-1 error"), "{}", text(&o));
}

/// With no `--device`, the towers go to the GPUs where they can, else to the CPU, and one line
/// says which and why; an explicit `--device cuda` without a GPU stays an error.
#[test]
fn the_default_device_is_auto_and_says_what_it_chose() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = synthetic_run(d, "2");
    let t = text(&o);
    let on_cpu = t.contains("device: cpu (no GPU to use: ");
    let on_gpu = t.contains("device: cuda, towers on GPU ");
    assert!(on_cpu != on_gpu, "exactly one choice is reported: {t}");
    if on_cpu {
        assert!(t.contains("towers on: cpu"), "{t}");
        let o = alexnet(
            &[
                "train",
                "--device",
                "cuda",
                "--max-steps",
                "2",
                "--no-progress",
                "--out",
                "r2",
            ],
            d,
        );
        assert!(!o.status.success(), "{}", text(&o));
    }
}

/// `paper` trains on any number of classes: its fc8 is sized to the training set, split across
/// the towers when they divide it and on the first tower otherwise.
#[test]
fn paper_trains_on_seven_and_ten_classes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for classes in [7u32, 10] {
        let root = d.join(format!("c{classes}"));
        for c in 0..classes {
            let folder = root.join(format!("class{c}"));
            std::fs::create_dir_all(&folder).unwrap();
            let img = image::RgbImage::from_fn(48, 40, |x, y| {
                image::Rgb([(x * 5) as u8, (y * 6) as u8, (c * 25) as u8])
            });
            img.save(folder.join("a.png")).unwrap();
        }
        let out = format!("run{classes}");
        let o = alexnet(
            &[
                "train",
                "--data",
                root.to_str().unwrap(),
                "--preset",
                "paper",
                "--batch",
                "4",
                "--max-steps",
                "1",
                "--no-progress",
                "--out",
                &out,
            ],
            d,
        );
        assert!(o.status.success(), "{}", text(&o));
        let t = text(&o);
        assert!(
            t.contains(&format!(
                "paper: classifier sized to the training set's {classes} classes"
            )),
            "{t}"
        );
        assert_eq!(
            t.contains(
                "fc8: 7 classes do not split across 2 towers, so it sits on the first tower alone"
            ),
            classes == 7,
            "{t}"
        );
        // The checkpoint is of the sized network: eval reads it as such.
        let o = alexnet(
            &[
                "eval",
                "--checkpoint",
                &out,
                "--data",
                root.to_str().unwrap(),
            ],
            d,
        );
        assert!(o.status.success(), "{}", text(&o));
        assert!(
            text(&o).contains(&format!("over {classes} images")),
            "{}",
            text(&o)
        );
    }
}

/// A short training run on the synthetic set into `d/run`, which must succeed.
fn synthetic_run(d: &std::path::Path, steps: &str) -> std::process::Output {
    let o = alexnet(
        &[
            "train",
            "--max-steps",
            steps,
            "--no-progress",
            "--out",
            "run",
        ],
        d,
    );
    assert!(o.status.success(), "{}", text(&o));
    o
}

/// A checkpoint carries what inference needs (mean image, class names, base size): copied alone
/// to another folder it predicts what it predicted in its run folder; one saved the older way,
/// without them, still reads the stats.safetensors beside it (and says what is missing when
/// there is none).
#[test]
fn a_checkpoint_copied_alone_predicts_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    synthetic_run(d, "3");
    let img = image::RgbImage::from_fn(40, 32, |x, y| {
        image::Rgb([(x * 6) as u8, (y * 7) as u8, 90])
    });
    img.save(d.join("p.png")).unwrap();
    let in_run = alexnet(&["predict", "--checkpoint", "run", "p.png"], d);
    assert!(in_run.status.success(), "{}", text(&in_run));
    std::fs::create_dir_all(d.join("elsewhere")).unwrap();
    std::fs::copy(
        d.join("run/checkpoint.safetensors"),
        d.join("elsewhere/model.safetensors"),
    )
    .unwrap();
    let alone = alexnet(
        &[
            "predict",
            "--checkpoint",
            "elsewhere/model.safetensors",
            "p.png",
        ],
        d,
    );
    assert!(alone.status.success(), "{}", text(&alone));
    assert_eq!(
        String::from_utf8_lossy(&alone.stdout),
        String::from_utf8_lossy(&in_run.stdout),
        "the same classes and probabilities"
    );
    assert!(
        String::from_utf8_lossy(&alone.stdout).contains('%'),
        "{}",
        text(&alone)
    );
    // The same weights saved without the statistics, as checkpoints were before.
    let ck = alexnet::train::checkpoint::load(&d.join("run/checkpoint.safetensors")).unwrap();
    let plan = alexnet::model::Plan::new(&ck.spec).unwrap();
    let old = d.join("old/checkpoint.safetensors");
    alexnet::train::checkpoint::save(&old, &plan, &ck.state, &ck.params, &ck.momentum, None)
        .unwrap();
    let o = alexnet(&["predict", "--checkpoint", "old", "p.png"], d);
    assert!(
        !o.status.success() && text(&o).contains("predates keeping its statistics"),
        "{}",
        text(&o)
    );
    std::fs::copy(
        d.join("run/stats.safetensors"),
        d.join("old/stats.safetensors"),
    )
    .unwrap();
    let beside = alexnet(&["predict", "--checkpoint", "old", "p.png"], d);
    assert!(beside.status.success(), "{}", text(&beside));
    assert_eq!(
        String::from_utf8_lossy(&beside.stdout),
        String::from_utf8_lossy(&in_run.stdout)
    );
}

/// `predict --json` (folders, --top, --logits) and `eval --json` print JSON with named fields;
/// an unreadable file is named there too.
#[test]
fn predict_and_eval_speak_json() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    synthetic_run(d, "2");
    std::fs::create_dir_all(d.join("pics/inner")).unwrap();
    for (i, name) in ["pics/a.png", "pics/inner/b.PNG"].iter().enumerate() {
        image::RgbImage::from_fn(36, 30, |x, y| {
            image::Rgb([(x * 7) as u8, (y * 8) as u8, 40 * i as u8])
        })
        .save_with_format(d.join(name), image::ImageFormat::Png)
        .unwrap();
    }
    std::fs::write(d.join("pics/notes.txt"), "not listed: not an image name").unwrap();
    std::fs::write(d.join("broken.jpg"), b"\xff\xd8\xff\xe0 not really a jpeg").unwrap();
    let o = alexnet(
        &[
            "predict",
            "--checkpoint",
            "run",
            "pics",
            "broken.jpg",
            "--top",
            "3",
            "--json",
            "--logits",
        ],
        d,
    );
    // One file is unreadable: a failure exit, after the JSON.
    assert!(!o.status.success(), "{}", text(&o));
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    let images = v["images"].as_array().unwrap();
    assert_eq!(images.len(), 2, "{v}");
    assert!(
        images[0]["path"].as_str().unwrap().ends_with("pics/a.png"),
        "{v}"
    );
    assert!(
        images[1]["path"]
            .as_str()
            .unwrap()
            .ends_with("pics/inner/b.PNG"),
        "{v}"
    );
    for image in images {
        let top = image["top"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        let p: Vec<f64> = top
            .iter()
            .map(|t| t["probability"].as_f64().unwrap())
            .collect();
        assert!(p.windows(2).all(|w| w[0] >= w[1]) && p[0] <= 1.0, "{p:?}");
        assert!(top[0]["name"].is_string() && top[0]["class"].is_u64());
        assert_eq!(image["logits"].as_array().unwrap().len(), 10);
    }
    let bad = v["unreadable"].as_array().unwrap();
    assert_eq!(bad.len(), 1, "{v}");
    assert!(
        bad[0]["path"].as_str().unwrap().ends_with("broken.jpg") && bad[0]["error"].is_string()
    );
    assert!(text(&o).contains("skipped broken.jpg"), "{}", text(&o));

    // eval --json on a folder of labelled images of two of the synthetic set's classes.
    let o = alexnet(
        &["predict", "--checkpoint", "run", "pics/a.png", "--json"],
        d,
    );
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let class = v["images"][0]["top"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::create_dir_all(d.join("labelled").join(&class)).unwrap();
    std::fs::copy(
        d.join("pics/a.png"),
        d.join("labelled").join(&class).join("a.png"),
    )
    .unwrap();
    let o = alexnet(
        &[
            "eval",
            "--checkpoint",
            "run",
            "--data",
            "labelled",
            "--json",
        ],
        d,
    );
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert_eq!(v["images"], 1, "{v}");
    // The image's own top class is its label here: no top-1 error.
    assert_eq!(v["top1_error"].as_f64(), Some(0.0), "{v}");
    assert!(
        v["top5_error"].is_number() && v["unreadable"].as_array().unwrap().is_empty(),
        "{v}"
    );
}
