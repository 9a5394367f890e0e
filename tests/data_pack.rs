//! Packs (`alexnet prepare --pack`, `data::pack`): what goes in comes out once with its label,
//! byte-identical every time, resumable, bad files skipped by name, damaged shards named, and a
//! loader over a pack sees what it sees over the folder it was made from.

pub mod support;

use alexnet::data::stats::compute;
use alexnet::data::*;
use alexnet::progress::Progress;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// A class-folder tree of assorted JPEGs (landscape, portrait, square, smaller than the base)
/// and a PNG; with `bad`, also a truncated JPEG and a text file named like an image.
fn source(root: &Path, bad: bool) -> PathBuf {
    let sizes = [(80, 60), (50, 90), (64, 64), (20, 30), (120, 70)];
    for (c, class) in ["ant", "bee", "cat"].iter().enumerate() {
        std::fs::create_dir_all(root.join(class)).unwrap();
        for (i, &(w, h)) in sizes.iter().enumerate() {
            let (w, h) = (w + 3 * c as u32, h + i as u32);
            std::fs::write(
                root.join(class).join(format!("{i}.jpg")),
                support::data::rgb_jpeg(w, h),
            )
            .unwrap();
        }
    }
    let png = image::RgbImage::from_fn(40, 50, |x, y| image::Rgb([x as u8 * 6, y as u8 * 5, 9]));
    png.save(root.join("bee/p.png")).unwrap();
    if bad {
        let jpeg = support::data::rgb_jpeg(70, 70);
        std::fs::write(root.join("cat/cut.jpg"), &jpeg[..jpeg.len() / 2]).unwrap();
        std::fs::write(root.join("ant/notes.jpg"), b"not an image at all").unwrap();
    }
    root.to_path_buf()
}

fn options(threads: usize) -> PackOptions {
    PackOptions {
        base: 32,
        quality: 90,
        shard_images: 4,
        threads,
    }
}

fn pack(src: &Dataset, dir: &Path, threads: usize) -> Packed {
    pack_split(src, dir, &options(threads), true, &Progress::hidden()).unwrap()
}

/// Every file of a folder, by name.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn every_image_comes_back_once_with_its_label_and_close_to_its_base_image() {
    let tmp = tempfile::tempdir().unwrap();
    let src = Dataset::open(source(&tmp.path().join("src"), false)).unwrap();
    let packed = pack(&src, &tmp.path().join("pack/train"), 2);
    assert_eq!(packed.manifest.images, src.len());
    assert_eq!(packed.manifest.shards.len(), src.len().div_ceil(4));
    let ds = Dataset::open(tmp.path().join("pack/train")).unwrap();
    assert!(ds.is_pack());
    assert_eq!(ds.classes(), src.classes());
    assert_eq!(ds.len(), src.len());
    for i in 0..ds.len() {
        // Same order, same names, same labels.
        assert_eq!(ds.samples()[i].name, src.samples()[i].name);
        assert_eq!(ds.label(i), src.label(i));
        let from_pack = ds.load(i, 32).unwrap();
        let from_source = src.load(i, 32).unwrap();
        // The re-encoding at quality 90 is the only difference: measured up to ~3 grey levels
        // on average on these smooth images; 6 leaves room without hiding a wrong image (a
        // different image of this set differs by tens).
        let mad = from_pack
            .iter()
            .zip(&from_source)
            .map(|(&a, &b)| (a as f64 - b as f64).abs())
            .sum::<f64>()
            / from_pack.len() as f64;
        assert!(
            mad < 6.0,
            "{}: mean abs difference {mad:.2}",
            ds.describe(i)
        );
    }
    // The shard is an ordinary tar: a plain reader sees `<key>.jpg` and `<key>.cls` pairs.
    let shard = std::fs::File::open(tmp.path().join("pack/train/shard-000000.tar")).unwrap();
    let names: Vec<String> = tar::Archive::new(shard)
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "00000000.jpg",
            "00000000.cls",
            "00000001.jpg",
            "00000001.cls"
        ]
        .iter()
        .chain(&[
            "00000002.jpg",
            "00000002.cls",
            "00000003.jpg",
            "00000003.cls"
        ])
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
    );
    // The statistics of the same pass are those of a pass over the pack afterwards.
    let (again, _) = compute(&ds, 32, 1).unwrap();
    assert_eq!(packed.stats.unwrap(), again);
}

#[test]
fn packing_is_deterministic_and_an_interrupted_pack_resumes_to_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let src = Dataset::open(source(&tmp.path().join("src"), true)).unwrap();
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    let straight = pack(&src, &one, 1);
    pack(&src, &two, 2);
    assert_eq!(files(&one), files(&two), "thread count changed the bytes");

    // Interrupted before anything: an error saying so, and no manifest.
    let three = tmp.path().join("three");
    let stop = Arc::new(AtomicBool::new(true));
    let stopped = Progress::hidden().interruptible(stop);
    let e = pack_split(&src, &three, &options(2), true, &stopped)
        .err()
        .unwrap();
    assert!(format!("{e:#}").contains("interrupted: 0 of"), "{e:#}");
    assert!(!three.join("pack.json").exists());

    // Killed half-way: the last shards gone or cut short, a temporary file left behind.
    let shards = files(&one).keys().filter(|n| n.ends_with(".tar")).count();
    assert!(shards >= 3);
    let half = tmp.path().join("half");
    std::fs::create_dir_all(&half).unwrap();
    for (name, bytes) in files(&one) {
        match name.as_str() {
            "pack.json" => {}
            "shard-000001.tar" => {
                std::fs::write(half.join(&name), &bytes[..bytes.len() / 2]).unwrap()
            }
            n if n.starts_with("shard-000002") => {}
            _ => std::fs::write(half.join(&name), &bytes).unwrap(),
        }
    }
    std::fs::write(half.join("shard-000002.tar.partial-999"), b"half written").unwrap();
    let resumed = pack(&src, &half, 2);
    // Shard 0 and shards 3.. were kept; 1 (cut short) and 2 (missing) were made again.
    assert_eq!(resumed.reused_shards, shards - 2);
    assert_eq!(files(&half), files(&one), "a resumed pack differs");
    // The statistics summed over the kept shards (read back) and the new ones are the same.
    assert!(straight.stats.is_some());
    assert!(
        resumed.stats == straight.stats,
        "the resumed pack's statistics differ"
    );
    // Run again on the complete pack: nothing is written.
    let again = pack(&src, &half, 2);
    assert!(again.complete_before);
    assert_eq!(files(&half), files(&one));
}

#[test]
fn bad_files_are_skipped_by_name_and_a_damaged_shard_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let src = Dataset::open(source(&tmp.path().join("src"), true)).unwrap();
    let dir = tmp.path().join("pack");
    let packed = pack(&src, &dir, 2);
    let skipped: Vec<&str> = packed
        .manifest
        .skipped
        .iter()
        .map(|s| s.path.as_str())
        .collect();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(
        skipped.iter().any(|p| p.ends_with("cat/cut.jpg")),
        "{skipped:?}"
    );
    assert!(
        skipped.iter().any(|p| p.ends_with("ant/notes.jpg")),
        "{skipped:?}"
    );
    assert_eq!(packed.bad.len(), 2);
    assert!(
        packed
            .manifest
            .skipped
            .iter()
            .any(|s| s.error.contains("truncated JPEG"))
    );
    let ds = Dataset::open(&dir).unwrap();
    assert_eq!(ds.len(), src.len() - 2);
    assert!(
        ds.warnings()[0].contains("2 unreadable files"),
        "{:?}",
        ds.warnings()
    );

    // A shard cut short: opening the pack names it.
    let shard = dir.join("shard-000001.tar");
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() - 700]).unwrap();
    let e = format!("{:#}", Dataset::open(&dir).unwrap_err());
    assert!(e.contains("shard-000001.tar is truncated"), "{e}");
    // An index naming bytes past its shard's end.
    std::fs::write(&shard, &bytes).unwrap();
    let idx = dir.join("shard-000001.idx");
    let text = std::fs::read_to_string(&idx).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let fields: Vec<&str> = lines[1].split('\t').collect();
    lines[1] = format!("{}\t{}\t{}", 999_999, fields[1], fields[2..].join("\t"));
    std::fs::write(&idx, lines.join("\n") + "\n").unwrap();
    let e = format!("{:#}", Dataset::open(&dir).unwrap_err());
    assert!(
        e.contains("shard-000001.tar: the index puts") && e.contains("past the shard's end"),
        "{e}"
    );
}

#[test]
fn a_folder_holding_something_else_is_refused_and_left_as_it_was() {
    let tmp = tempfile::tempdir().unwrap();
    let src = Dataset::open(source(&tmp.path().join("src"), false)).unwrap();
    let dir = tmp.path().join("pack");
    pack(&src, &dir, 2);
    let before = files(&dir);
    let other = PackOptions {
        quality: 70,
        ..options(2)
    };
    let e = pack_split(&src, &dir, &other, true, &Progress::hidden())
        .err()
        .unwrap();
    assert!(format!("{e}").contains("already holds a pack of"), "{e}");
    assert_eq!(files(&dir), before);
    let foreign = tmp.path().join("photos");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("holiday.jpg"), b"x").unwrap();
    let e = pack_split(&src, &foreign, &options(2), true, &Progress::hidden())
        .err()
        .unwrap();
    assert!(
        format!("{e}").contains("holds holiday.jpg, which is not part of a pack"),
        "{e}"
    );
    assert_eq!(files(&foreign).len(), 1);
}

#[test]
fn an_epoch_from_a_pack_sees_the_classes_and_counts_of_its_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let src = Arc::new(Dataset::open(source(&tmp.path().join("src"), false)).unwrap());
    let packed = pack(&src, &tmp.path().join("pack"), 2);
    let pk = Arc::new(Dataset::open(tmp.path().join("pack")).unwrap());
    let stats = Arc::new(packed.stats.unwrap());
    let g = Geometry::new(32, 28).unwrap();
    let epoch_labels = |ds: &Arc<Dataset>| {
        let loader = Loader::new(ds.clone(), stats.clone(), LoaderConfig::train(g, 4, 3)).unwrap();
        let mut counts = BTreeMap::new();
        let mut order = Vec::new();
        for b in loader.epoch(0, 0) {
            let b = b.unwrap();
            for (&l, &s) in b.labels.iter().zip(&b.samples) {
                *counts.entry(l).or_insert(0) += 1;
                order.push(s);
            }
        }
        (counts, order)
    };
    let (raw_counts, raw_order) = epoch_labels(&src);
    let (pack_counts, pack_order) = epoch_labels(&pk);
    assert_eq!(pack_counts, raw_counts);
    // Same sample indices in the same order: the same seed shuffles both alike.
    assert_eq!(pack_order, raw_order);
    assert_eq!(raw_order.len(), src.len() / 4 * 4);

    // Buffers handed back (`recycle`, as the training loop does) are overwritten whole: the
    // same batches as from fresh buffers, even when the recycled ones hold NaN.
    let loader = Loader::new(pk.clone(), stats.clone(), LoaderConfig::train(g, 4, 3)).unwrap();
    let fresh: Vec<Batch> = loader.epoch(1, 0).map(|b| b.unwrap()).collect();
    let mut reused = Vec::new();
    for _ in 0..3 {
        loader.recycle(vec![f32::NAN; 4 * g.input_len()]);
    }
    for b in loader.epoch(1, 0) {
        let b = b.unwrap();
        reused.push(b.clone());
        loader.recycle(b.images);
    }
    assert!(reused == fresh, "a recycled buffer changed a batch");
}

#[test]
fn the_shared_imagenet_samples_pack_and_read_back() {
    let Some(root) = support::data::shared_data("ALEXNET_IMAGENET_SAMPLES", "imagenet-samples")
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let src = Dataset::open(&root).unwrap();
    let opts = PackOptions {
        shard_images: 32,
        ..PackOptions::default()
    };
    let packed = pack_split(
        &src,
        &tmp.path().join("train"),
        &opts,
        false,
        &Progress::hidden(),
    )
    .unwrap();
    assert_eq!(packed.manifest.images, src.len());
    let ds = Dataset::open(tmp.path().join("train")).unwrap();
    let bytes: u64 = packed.manifest.shards.iter().map(|s| s.bytes).sum();
    println!(
        "{} ImageNet samples packed at 256x256 quality 90: {:.1} KB per image",
        ds.len(),
        bytes as f64 / ds.len() as f64 / 1e3
    );
    for i in 0..ds.len() {
        assert_eq!(ds.load(i, 256).unwrap().len(), 256 * 256 * 3);
    }
}
