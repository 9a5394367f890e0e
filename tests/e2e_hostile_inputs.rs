//! Nothing lost, nothing hung: the binary under hostile input. Every case is made here in a
//! temporary folder (FIFOs, links and tar headers that lie about sizes cost nothing); each
//! command must end in bounded time with a clear message, and a refused command must leave every
//! file of the run folder byte-identical.

pub mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::cli::{
    alexnet, alexnet_within, checkpoint_tensors, signal, snapshot, spawn_long_training, text,
    wait_for_lines,
};

/// What any command here may take at most: far above their seconds, far below a hang.
const LIMIT: Duration = Duration::from_secs(120);

/// A JPEG whose colour depends on `class` and `i`.
fn jpeg(class: usize, i: usize) -> Vec<u8> {
    let img = image::RgbImage::from_fn(40, 36, |x, y| {
        let v = ((x * 5 + y * 3) as usize + i * 17) as u8;
        image::Rgb(if class == 0 {
            [v, 40, 200]
        } else {
            [220, v, 30]
        })
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&img)
        .unwrap();
    out
}

/// `root/train/<class>/<i>.jpg`, `per_class` images in each class.
fn dataset(root: &Path, classes: &[&str], per_class: usize) {
    for (c, name) in classes.iter().enumerate() {
        let dir = root.join("train").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class {
            std::fs::write(dir.join(format!("{i:02}.jpg")), jpeg(c, i)).unwrap();
        }
    }
}

/// The `cifar` net with a classifier of `classes` units, as a spec file in `dir`.
fn class_spec(dir: &Path, classes: usize) -> String {
    let o = alexnet(&["model", "--preset", "cifar", "--json"], dir);
    assert!(o.status.success(), "{}", text(&o));
    let mut spec: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    spec["name"] = format!("cifar-{classes}").into();
    let last = spec["layers"].as_array_mut().unwrap().last_mut().unwrap();
    last["units"] = classes.into();
    let path = dir.join(format!("cifar-{classes}.json"));
    std::fs::write(&path, spec.to_string()).unwrap();
    path.to_string_lossy().into_owned()
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(
        unsafe { libc::mkfifo(c.as_ptr(), 0o644) },
        0,
        "mkfifo {}",
        path.display()
    );
}

const TRAIN: [&str; 6] = [
    "--batch",
    "8",
    "--no-progress",
    "--lr-schedule",
    "constant",
    "--no-val",
];

#[test]
fn a_resume_uses_the_runs_data_and_refuses_before_writing_what_does_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let spec = class_spec(d, 2);
    dataset(&d.join("pets"), &["cat", "dog"], 12);
    dataset(&d.join("other"), &["cat", "emu"], 12);
    fn with<'a>(args: &[&'a str]) -> Vec<&'a str> {
        [args, &TRAIN[..]].concat()
    }

    // The reference: straight to step 8. The run under test: to step 3, then resumed.
    let o = alexnet_within(
        LIMIT,
        &with(&[
            "train",
            "--data",
            "pets",
            "--spec",
            &spec,
            "--out",
            "straight",
            "--max-steps",
            "8",
        ]),
        d,
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = alexnet_within(
        LIMIT,
        &with(&[
            "train",
            "--data",
            "pets",
            "--spec",
            &spec,
            "--out",
            "run",
            "--max-steps",
            "3",
        ]),
        d,
    );
    assert!(o.status.success(), "{}", text(&o));
    // Another preset's run, on the synthetic set.
    let o = alexnet_within(
        LIMIT,
        &with(&["train", "--out", "cifar-run", "--max-steps", "2"]),
        d,
    );
    assert!(o.status.success(), "{}", text(&o));
    let run = snapshot(&d.join("run"));
    let cifar_run = snapshot(&d.join("cifar-run"));

    let refused = |args: &[&str], says: &[&str]| {
        let o = alexnet_within(LIMIT, &with(args), d);
        let out = text(&o);
        assert!(!o.status.success(), "{args:?} was accepted: {out}");
        for s in says {
            assert!(out.contains(s), "{args:?} should say {s:?}: {out}");
        }
        assert!(!out.contains("backtrace"), "{out}");
        assert_eq!(
            snapshot(&d.join("run")),
            run,
            "{args:?} changed the run folder"
        );
        assert_eq!(
            snapshot(&d.join("cifar-run")),
            cifar_run,
            "{args:?} changed cifar-run"
        );
        println!("{args:?}:\n{out}");
    };
    // A dataset with other classes.
    refused(
        &[
            "train",
            "--resume",
            "run",
            "--data",
            "other",
            "--max-steps",
            "8",
        ],
        &[
            "the run was trained on 2",
            "\"emu\" here, \"dog\" in the run",
        ],
    );
    // Another network than the checkpoint's.
    refused(
        &[
            "train",
            "--resume",
            "run",
            "--preset",
            "cifar",
            "--max-steps",
            "8",
        ],
        &["cannot resume", "not \"cifar\""],
    );
    // Another preset's checkpoint on this data (ten synthetic classes, two here).
    refused(
        &[
            "train",
            "--resume",
            "cifar-run",
            "--data",
            "pets",
            "--max-steps",
            "8",
        ],
        &["2 classes but the network's classifier has 10"],
    );
    // Another base size than the run's.
    refused(
        &[
            "train",
            "--resume",
            "run",
            "--base",
            "40",
            "--max-steps",
            "8",
        ],
        &["32x32 base images, not 40x40"],
    );
    // The training set changed since the run started: refused without --data.
    std::fs::write(d.join("pets/train/dog/99.jpg"), jpeg(1, 99)).unwrap();
    refused(
        &["train", "--resume", "run", "--max-steps", "8"],
        &[
            "has changed since the run started",
            "25 images now, 24 then",
            "--data",
        ],
    );
    std::fs::remove_file(d.join("pets/train/dog/99.jpg")).unwrap();
    // The data gone from where the run recorded it.
    std::fs::rename(d.join("pets"), d.join("moved")).unwrap();
    refused(
        &["train", "--resume", "run", "--max-steps", "8"],
        &["the run's training set", "cannot be opened", "pass --data"],
    );
    std::fs::rename(d.join("moved"), d.join("pets")).unwrap();

    // Accepted: without --data it trains on the recorded data and statistics, and ends
    // bit-identical to the straight run; the statistics file is not rewritten.
    let stats_before = std::fs::read(d.join("run/stats.safetensors")).unwrap();
    let o = alexnet_within(
        LIMIT,
        &with(&["train", "--resume", "run", "--max-steps", "8"]),
        d,
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("resuming"), "{}", text(&o));
    assert!(!text(&o).contains("No --data given"), "{}", text(&o));
    assert_eq!(
        std::fs::read(d.join("run/stats.safetensors")).unwrap(),
        stats_before
    );
    assert_eq!(
        checkpoint_tensors(&d.join("run/checkpoint.safetensors")),
        checkpoint_tensors(&d.join("straight/checkpoint.safetensors")),
        "the resumed run differs from the straight one"
    );
}

#[test]
fn one_run_folder_has_one_writer_and_a_dead_writers_lock_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let first = spawn_long_training(&["--out", "run", "--checkpoint-every", "2"], d);
    wait_for_lines(&d.join("run/metrics.jsonl"), 3);
    let pid = first.id().to_string();
    assert_eq!(
        std::fs::read_to_string(d.join("run/run.lock"))
            .unwrap()
            .trim(),
        pid
    );
    // A second writer is refused, naming the holder, and changes nothing (the first is still
    // writing checkpoints and metrics, so the file neither touches is compared).
    let stats = std::fs::read(d.join("run/stats.safetensors")).unwrap();
    let resume = [
        "train",
        "--resume",
        "run",
        "--batch",
        "32",
        "--no-progress",
        "--max-minutes",
        "0.05",
    ];
    let o = alexnet_within(LIMIT, &resume, d);
    assert!(!o.status.success());
    assert!(
        text(&o).contains(&format!("in use by another training process (pid {pid}")),
        "{}",
        text(&o)
    );
    assert_eq!(
        std::fs::read(d.join("run/stats.safetensors")).unwrap(),
        stats
    );
    assert_eq!(
        std::fs::read_to_string(d.join("run/run.lock"))
            .unwrap()
            .trim(),
        pid
    );

    // Killed without a chance to clean up: its lock file stays, but no process holds it, so the
    // next training takes it over and says so.
    signal(first.id(), "KILL");
    let _ = first.wait_with_output();
    assert!(d.join("run/run.lock").exists());
    let o = alexnet_within(LIMIT, &resume, d);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(&format!(
            "lock from process {pid}, which is no longer running"
        )),
        "{}",
        text(&o)
    );
    assert!(!d.join("run/run.lock").exists(), "released at exit");
}

#[test]
fn fifos_links_and_odd_names_in_a_dataset_are_skipped_by_name_and_never_hang() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    dataset(&d.join("data"), &["cat", "dog", "fox"], 10);
    dataset(&d.join("data-val"), &["cat", "dog"], 2);
    std::fs::rename(d.join("data-val/train"), d.join("data/val")).unwrap();
    let cat = d.join("data/train/cat");
    mkfifo(&cat.join("x.JPEG"));
    mkfifo(&d.join("data/val/dog/y.jpg"));
    std::os::unix::fs::symlink("nowhere.jpg", cat.join("broken.jpg")).unwrap();
    std::os::unix::fs::symlink("loop-b.jpg", cat.join("loop-a.jpg")).unwrap();
    std::os::unix::fs::symlink("loop-a.jpg", cat.join("loop-b.jpg")).unwrap();
    std::os::unix::fs::symlink("00.jpg", cat.join("good-link.jpg")).unwrap();
    let odd = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"caf\xe9.jpg");
    std::fs::write(cat.join(odd), jpeg(0, 5)).unwrap();
    // A class whose every file is unreadable.
    std::fs::create_dir_all(d.join("data/train/emu")).unwrap();
    std::fs::write(d.join("data/train/emu/a.jpg"), b"not an image").unwrap();
    std::fs::write(d.join("data/train/emu/b.jpg"), &jpeg(0, 1)[..300]).unwrap();

    let o = alexnet_within(
        LIMIT,
        &[
            "prepare",
            "--data",
            "data",
            "--base",
            "32",
            "--stats",
            "s.safetensors",
            "--no-progress",
        ],
        d,
    );
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    for (name, why) in [
        ("cat/x.JPEG", "a FIFO, not a regular file"),
        ("cat/broken.jpg", "a broken symbolic link"),
        ("cat/loop-a.jpg", "a symbolic link that loops"),
        ("cat/caf\u{FFFD}.jpg", "its name is not UTF-8"),
        ("emu/a.jpg", "not a JPEG or PNG image"),
        ("emu/b.jpg", "truncated JPEG"),
    ] {
        let line = out
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("{name} is not named: {out}"));
        assert!(line.contains(why), "{name}: {line}");
        assert_eq!(
            line.matches(name).count(),
            1,
            "named more than once: {line}"
        );
    }
    assert!(
        out.contains("class emu of data/train has no readable image"),
        "{out}"
    );
    // 10 images and the good link in cat, 10 in dog and fox, emu's two unreadable: 31 of 33.
    assert!(out.contains("33 images in 4 classes"), "{out}");
    assert!(out.contains("31 images (2 unreadable)"), "{out}");

    // Training, evaluation and prediction go past the same entries without waiting on them.
    let four = class_spec(d, 4);
    let o = alexnet_within(
        LIMIT,
        &[
            "train",
            "--data",
            "data",
            "--spec",
            &four,
            "--out",
            "run",
            "--max-steps",
            "3",
            "--batch",
            "8",
            "--no-progress",
            "--stats",
            "s.safetensors",
        ],
        d,
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("dog/y.jpg: a FIFO"), "{}", text(&o));
    let o = alexnet_within(LIMIT, &["eval", "--checkpoint", "run", "--data", "data"], d);
    assert!(o.status.success(), "{}", text(&o));
    let o = alexnet_within(
        LIMIT,
        &["predict", "--checkpoint", "run", "data/train/cat/x.JPEG"],
        d,
    );
    assert!(!o.status.success());
    assert!(
        text(&o).contains("x.JPEG: is a FIFO, not a regular file"),
        "{}",
        text(&o)
    );
}

/// A tar member header of `kind` at `path` with `size` bytes of data to follow.
fn tar_header(kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    h
}

/// A pax extended header record: `<len> <key>=<value>\n`, the length counting itself.
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while (len.to_string().len() + body.len()) != len {
        len = len.to_string().len() + body.len();
    }
    format!("{len}{body}").into_bytes()
}

/// An archive with every member type GNU, ustar and pax tar write, and the bytes of the images.
fn every_member_type_tar() -> (Vec<u8>, Vec<Vec<u8>>) {
    use tar::EntryType as T;
    let images: Vec<Vec<u8>> = (0..8).map(|i| jpeg(i % 2, i)).collect();
    let mut b = tar::Builder::new(Vec::new());
    let mut dir = tar_header(T::Directory, 0);
    b.append_data(&mut dir, "train/cat/", std::io::empty())
        .unwrap();
    for (i, img) in images.iter().enumerate() {
        let class = if i % 2 == 0 { "cat" } else { "dog" };
        let mut h = tar_header(T::Regular, img.len() as u64);
        b.append_data(&mut h, format!("train/{class}/{i:02}.jpg"), &img[..])
            .unwrap();
    }
    // A long name (GNU 'L' record) and a pax path (an 'x' header before a ustar member).
    let long = format!("train/cat/{}.jpg", "x".repeat(150));
    let mut h = tar_header(T::Regular, images[0].len() as u64);
    b.append_data(&mut h, &long, &images[0][..]).unwrap();
    let pax = pax_record("path", &format!("train/dog/{}.jpg", "p".repeat(120)));
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(T::XHeader);
    h.set_size(pax.len() as u64);
    h.set_path("PaxHeader/p").unwrap();
    h.set_cksum();
    b.append(&h, &pax[..]).unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(T::Regular);
    h.set_size(images[1].len() as u64);
    h.set_path("short.jpg").unwrap();
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, &images[1][..]).unwrap();
    // Links: hard (GNU tar's way of storing a file met twice), symbolic, and dangling.
    b.append_link(
        &mut tar_header(T::Link, 0),
        "train/dog/hard.jpg",
        "train/cat/00.jpg",
    )
    .unwrap();
    b.append_link(
        &mut tar_header(T::Symlink, 0),
        "train/dog/sym.jpg",
        "../cat/02.jpg",
    )
    .unwrap();
    b.append_link(
        &mut tar_header(T::Symlink, 0),
        "train/dog/gone.jpg",
        "nowhere.jpg",
    )
    .unwrap();
    b.append_link(
        &mut tar_header(T::Link, 0),
        "train/dog/orphan.jpg",
        "not/in/it.jpg",
    )
    .unwrap();
    // Entries that are not files.
    for (kind, name) in [
        (T::Fifo, "train/cat/fifo.jpg"),
        (T::Char, "train/cat/char.jpg"),
        (T::Block, "train/cat/block.jpg"),
    ] {
        b.append_data(&mut tar_header(kind, 0), name, std::io::empty())
            .unwrap();
    }
    (b.into_inner().unwrap(), images)
}

#[test]
fn every_tar_member_type_is_read_or_named_and_a_cut_archive_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (tar, images) = every_member_type_tar();
    std::fs::write(d.join("pets.tar"), &tar).unwrap();
    let ds = alexnet::data::Dataset::open(d.join("pets.tar")).unwrap();
    let by_name = |name: &str| {
        let i = ds
            .samples()
            .iter()
            .position(|s| s.name.starts_with(name))
            .unwrap_or_else(|| panic!("{name} not read: {:?}", ds.samples()));
        ds.read(i).unwrap()
    };
    assert_eq!(by_name("dog/hard.jpg"), images[0]);
    assert_eq!(by_name("dog/sym.jpg"), images[2]);
    assert_eq!(by_name("cat/xxxx"), images[0]);
    assert_eq!(by_name("dog/pppp"), images[1]);
    assert_eq!(ds.len(), 8 + 4);
    let o = alexnet_within(
        LIMIT,
        &[
            "prepare",
            "--data",
            "pets.tar",
            "--base",
            "32",
            "--stats",
            "s.safetensors",
            "--no-progress",
        ],
        d,
    );
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    for (name, why) in [
        (
            "dog/gone.jpg",
            "a symbolic link to train/dog/nowhere.jpg, which is no regular member",
        ),
        (
            "dog/orphan.jpg",
            "a hard link to no regular member before it",
        ),
        ("cat/fifo.jpg", "a FIFO"),
        ("cat/char.jpg", "a character device"),
        ("cat/block.jpg", "a block device"),
    ] {
        assert!(
            out.contains(&format!("skipped pets.tar:{name}: {why}")),
            "{name}: {out}"
        );
    }
    assert!(out.contains("12 images in 2 classes"), "{out}");

    // Cut short, three ways, and a header that claims 8 GiB: errors that say so, at once.
    // Member 2 is train/cat/00.jpg (member 1 is its folder).
    let (data, size) = {
        let mut archive = tar::Archive::new(&tar[..]);
        let e = archive.entries().unwrap().nth(1).unwrap().unwrap();
        assert_eq!(e.path().unwrap().to_str(), Some("train/cat/00.jpg"));
        (e.raw_file_position() as usize, e.size() as usize)
    };
    let member_end = (data + size).div_ceil(512) * 512;
    let mut huge = tar.clone();
    let header = data - 512;
    huge[header + 124..header + 136].copy_from_slice(b"77777777777\0");
    let sum: u32 = (0..512)
        .map(|i| {
            if (148..156).contains(&i) {
                32
            } else {
                huge[header + i] as u32
            }
        })
        .sum();
    huge[header + 148..header + 156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    for (name, bytes, says) in [
        (
            "mid-member.tar",
            &tar[..data + 700],
            "is truncated: member 2 (train/cat/00.jpg) claims",
        ),
        (
            "at-boundary.tar",
            &tar[..member_end],
            "is truncated: it ends after 2 members without tar's end-of-archive block",
        ),
        (
            "mid-header.tar",
            &tar[..member_end + 100],
            "damaged or truncated tar archive: after 2 members",
        ),
        ("huge.tar", &huge[..], "claims 8589934591 bytes"),
    ] {
        std::fs::write(d.join(name), bytes).unwrap();
        let o = alexnet_within(
            LIMIT,
            &[
                "prepare",
                "--data",
                name,
                "--base",
                "32",
                "--stats",
                "x.safetensors",
            ],
            d,
        );
        assert!(!o.status.success());
        assert!(text(&o).contains(says), "{name}: {}", text(&o));
        assert!(!d.join("x.safetensors").exists());
    }
}

#[test]
fn user_errors_are_one_readable_chain_without_raw_bytes_or_backtraces() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let binary: Vec<u8> = (0..20_000u32).map(|i| (i * 7919 % 256) as u8).collect();
    std::fs::write(d.join("program"), &binary).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_alexnet"))
        .args(["train", "--data", "program", "--no-progress", "--out", "r"])
        .env("RUST_BACKTRACE", "1")
        .current_dir(d)
        .output()
        .unwrap();
    let out = text(&o);
    assert!(!o.status.success());
    assert!(
        out.contains("program is not a folder or a tar archive"),
        "{out}"
    );
    assert!(!out.to_lowercase().contains("backtrace"), "{out}");
    assert!(
        out.chars().all(|c| c == '\n' || (' '..='~').contains(&c)),
        "raw bytes printed: {out:?}"
    );
    assert!(out.lines().count() <= 3, "{out}");
    assert!(!d.join("r").exists(), "a refused start made its run folder");

    // An evaluation set whose files are all bad: each is named, then the error says so.
    let spec = class_spec(d, 2);
    dataset(&d.join("pets"), &["cat", "dog"], 8);
    let o = alexnet_within(
        LIMIT,
        &[
            "train",
            "--data",
            "pets",
            "--spec",
            &spec,
            "--out",
            "run",
            "--max-steps",
            "2",
            "--batch",
            "8",
            "--no-progress",
        ],
        d,
    );
    assert!(o.status.success(), "{}", text(&o));
    for class in ["cat", "dog"] {
        std::fs::create_dir_all(d.join("bad/val").join(class)).unwrap();
    }
    std::fs::write(d.join("bad/val/cat/a.jpg"), b"plain text").unwrap();
    std::fs::write(d.join("bad/val/dog/b.jpg"), &jpeg(1, 1)[..400]).unwrap();
    let o = alexnet_within(
        LIMIT,
        &[
            "eval",
            "--checkpoint",
            "run",
            "--data",
            "bad/val",
            "--batch",
            "1",
        ],
        d,
    );
    let out = text(&o);
    assert!(!o.status.success());
    assert!(
        out.contains("skipped unreadable bad/val/cat/a.jpg: not a JPEG or PNG"),
        "{out}"
    );
    assert!(
        out.contains("skipped unreadable bad/val/dog/b.jpg: truncated JPEG"),
        "{out}"
    );
    assert!(
        out.contains("no image of the evaluation set could be read"),
        "{out}"
    );
}
