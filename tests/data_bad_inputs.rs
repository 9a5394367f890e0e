//! Awkward and broken inputs, made in a temporary folder: each gives its message, none a crash.

pub mod support;

use alexnet::data::stats::compute;
use alexnet::data::*;
use std::path::Path;
use std::sync::Arc;
use support::data::rgb_jpeg;

fn err(result: anyhow::Result<impl std::fmt::Debug>) -> String {
    format!("{:#}", result.expect_err("expected an error"))
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn gray_jpeg(level: u8) -> Vec<u8> {
    let img = image::GrayImage::from_pixel(20, 12, image::Luma([level]));
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95)
        .encode_image(&img)
        .unwrap();
    out
}

/// A CMYK JPEG (Adobe, inverted, as Photoshop writes them; ImageNet holds a few) of pure red:
/// C=0, M=Y=100%, K=0.
fn cmyk_red_jpeg() -> Vec<u8> {
    let pixels: Vec<u8> = [0u8, 255, 255, 0].repeat(24 * 16);
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, 95)
        .encode(&pixels, 24, 16, jpeg_encoder::ColorType::Cmyk)
        .unwrap();
    out
}

fn png_bytes(img: &image::RgbImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

#[test]
fn each_odd_file_decodes_or_gives_its_message() {
    // Corrupt: not an image at all, and a JPEG whose headers are overwritten with noise.
    let e = err(decode::decode_rgb(b"this is not an image, just text"));
    assert!(e.contains("not a JPEG or PNG"), "{e}");
    let mut broken = rgb_jpeg(40, 30);
    for (i, b) in broken[20..200].iter_mut().enumerate() {
        *b = (i * 37 % 251) as u8;
    }
    let e = err(decode::decode_rgb(&broken));
    assert!(e.contains("JPEG") || e.contains("Jpeg"), "{e}");
    println!("corrupt JPEG: {e}");

    // Truncated: the first half of a good JPEG (cut in the scan data, which the lenient decoder
    // would fill with grey), and a cut inside the headers.
    let good = rgb_jpeg(200, 150);
    let e = err(decode::decode_rgb(&good[..300]));
    assert!(
        e.contains("truncated JPEG") && e.contains("decoder also fails"),
        "{e}"
    );
    let e = err(decode::decode_rgb(&good[..good.len() / 2]));
    assert!(e.contains("truncated JPEG"), "{e}");
    println!("truncated JPEG: {e}");

    // CMYK: converted to RGB; pure red stays red (JPEG loss allows a few levels).
    let rgb = decode::decode_rgb(&cmyk_red_jpeg()).unwrap();
    assert_eq!(rgb.dimensions(), (24, 16));
    let p = rgb.get_pixel(12, 8).0;
    assert!(
        p[0] > 235 && p[1] < 20 && p[2] < 20,
        "CMYK red decoded as {p:?}"
    );

    // Grayscale: replicated into three equal channels.
    let rgb = decode::decode_rgb(&gray_jpeg(77)).unwrap();
    assert!(rgb.pixels().all(|p| p.0[0] == p.0[1] && p.0[1] == p.0[2]));
    assert!(rgb.pixels().all(|p| p.0[0].abs_diff(77) <= 2));

    // A PNG named .JPEG: detected from content, decoded losslessly.
    let img = image::RgbImage::from_fn(9, 7, |x, y| image::Rgb([x as u8 * 20, y as u8 * 30, 7]));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n0001/really_a_png.JPEG");
    write(&path, &png_bytes(&img));
    assert_eq!(
        decode::decode_rgb(&std::fs::read(&path).unwrap()).unwrap(),
        img
    );
    // A truncated PNG is an error too.
    let png = png_bytes(&img);
    assert!(decode::decode_rgb(&png[..png.len() - 20]).is_err());
}

#[test]
fn missing_empty_and_stray_datasets_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dataset");
    let e = err(Dataset::open(&missing));
    assert!(
        e.contains("dataset not found") && e.contains("no-such-dataset"),
        "{e}"
    );

    // Only empty class folders: no images, an error naming the root.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(empty.join("cat")).unwrap();
    let e = err(Dataset::open(&empty));
    assert!(e.contains("no images in") && e.contains("empty"), "{e}");

    // One empty class folder among full ones: kept as a class (labels follow the sorted names)
    // with a warning naming it; a stray file at the top and a non-image file are reported.
    let root = dir.path().join("tree");
    write(&root.join("a/1.jpg"), &rgb_jpeg(8, 8));
    write(&root.join("c/1.JPEG"), &rgb_jpeg(8, 8));
    write(&root.join("c/notes.txt"), b"hello");
    write(&root.join("c/.hidden.jpg"), b"not read");
    write(&root.join("top.jpg"), &rgb_jpeg(8, 8));
    std::fs::create_dir_all(root.join("b")).unwrap();
    let ds = Dataset::open(&root).unwrap();
    assert_eq!(ds.classes(), ["a", "b", "c"]);
    assert_eq!(ds.class_counts(), [1, 0, 1]);
    let warnings = ds.warnings().join("\n");
    println!("{warnings}");
    assert!(warnings.contains(&format!("empty class folder: {}", root.join("b").display())));
    assert!(
        warnings.contains("non-image") && warnings.contains("notes.txt"),
        "{warnings}"
    );
    assert!(warnings.contains("top.jpg"), "{warnings}");

    // A validation folder with a class the training set lacks.
    let e = err(Dataset::open_with(
        &root,
        &OpenOptions {
            classes: Some(vec!["a".into(), "c".into()]),
            ..Default::default()
        },
    ));
    assert!(
        e.contains("\"b\" is not one of the 2 training classes"),
        "{e}"
    );
}

#[test]
fn loader_counts_and_skips_bad_files_and_training_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("train");
    for i in 0..10 {
        write(
            &root.join(format!("good/{i:02}.jpg")),
            &rgb_jpeg(40 + i, 36),
        );
    }
    let good = rgb_jpeg(40, 30);
    write(
        &root.join("odd/corrupt.JPEG"),
        b"\xff\xd8\xff garbage, not a JPEG body",
    );
    write(&root.join("odd/truncated.JPEG"), &good[..good.len() / 3]);
    write(&root.join("odd/cmyk.JPEG"), &cmyk_red_jpeg());
    write(&root.join("odd/gray.JPEG"), &gray_jpeg(200));
    write(
        &root.join("odd/png.JPEG"),
        &png_bytes(&image::RgbImage::new(30, 20)),
    );
    let ds = Arc::new(Dataset::open(&root).unwrap());
    assert_eq!(ds.len(), 15);

    // `prepare` leaves the two bad files out and names them.
    let (stats, bad) = compute(&ds, 32, 2).unwrap();
    assert_eq!(stats.images, 13);
    let names: Vec<&str> = bad
        .iter()
        .map(|b| b.path.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(names, ["corrupt.JPEG", "truncated.JPEG"]);
    assert!(bad[1].error.contains("truncated JPEG"), "{}", bad[1].error);
    for b in &bad {
        println!("skipped {}: {}", b.path, b.error);
    }

    // Training: every batch full, every bad file replaced and reported. Batches of 5 use all
    // 15 positions of each epoch, so both bad files come up every epoch.
    let stats = Arc::new(stats);
    let g = Geometry::new(32, 24).unwrap();
    let mut config = LoaderConfig::train(g, 5, 11);
    config.threads = 2;
    let loader = Loader::new(ds.clone(), stats.clone(), config).unwrap();
    let is_bad = |name: &str| name.contains("corrupt") || name.contains("truncated");
    let mut met = 0;
    for epoch in 0..3 {
        for batch in loader.epoch(epoch, 0) {
            let batch = batch.unwrap();
            assert_eq!(batch.len(), 5);
            assert_eq!(batch.images.len(), 5 * g.input_len());
            assert!(
                batch
                    .samples
                    .iter()
                    .all(|&s| !is_bad(&ds.samples()[s].name))
            );
            for s in &batch.skipped {
                assert!(is_bad(&s.path), "{s:?}");
                met += 1;
            }
        }
    }
    // Met at least once per epoch each (more when a replacement chain runs through both).
    assert!(met >= 6, "{met}");
    let bad = loader.bad_samples();
    assert_eq!(bad.len(), 2, "{bad:?}");

    // Evaluation: the bad files are left out, the rest come in order.
    let mut config = LoaderConfig::eval(g, 8, EvalViews::Centre);
    config.threads = 2;
    let eval = Loader::new(ds.clone(), stats.clone(), config).unwrap();
    let batches: Vec<Batch> = eval.epoch(0, 0).map(Result::unwrap).collect();
    let samples: Vec<usize> = batches.iter().flat_map(|b| b.samples.clone()).collect();
    let skipped: Vec<usize> = batches
        .iter()
        .flat_map(|b| b.skipped.iter().map(|s| s.index))
        .collect();
    assert_eq!(samples.len(), 13);
    assert_eq!(skipped.len(), 2);
    let mut all: Vec<usize> = samples.into_iter().chain(skipped).collect();
    all.sort();
    assert_eq!(all, (0..15).collect::<Vec<_>>());

    // Batches of one: a bad file's batch is empty, and still sent so that it names the file.
    let mut config = LoaderConfig::eval(g, 1, EvalViews::Centre);
    config.threads = 1;
    let single = Loader::new(ds.clone(), stats, config).unwrap();
    let batches: Vec<Batch> = single.epoch(0, 0).map(Result::unwrap).collect();
    assert_eq!(batches.len(), 15);
    assert_eq!(batches.iter().filter(|b| b.len() == 1).count(), 13);
    let empty: Vec<&Batch> = batches.iter().filter(|b| b.is_empty()).collect();
    assert_eq!(empty.len(), 2);
    assert!(
        empty
            .iter()
            .all(|b| b.skipped.len() == 1 && b.images.is_empty())
    );
    assert_eq!(single.bad_samples().len(), 2);
}

#[test]
fn flat_validation_with_a_labels_file_in_both_forms() {
    let dir = tempfile::tempdir().unwrap();
    let val = dir.path().join("val");
    for name in ["v3.JPEG", "v1.JPEG", "v2.JPEG"] {
        write(&val.join(name), &rgb_jpeg(16, 16));
    }
    let classes: Vec<String> = vec!["n01".into(), "n02".into(), "n03".into()];
    let open = |labels: &str, classes: Option<Vec<String>>| {
        let file = dir.path().join("labels.txt");
        std::fs::write(&file, labels).unwrap();
        Dataset::open_with(
            &val,
            &OpenOptions {
                labels: Some(file),
                classes,
                ..OpenOptions::default()
            },
        )
    };
    // `<file> <label>` lines, names and 0-based indices mixed, in any order.
    let ds = open(
        "v2.JPEG n03\n# comment\nv1.JPEG 1\nv3.JPEG n01\n",
        Some(classes.clone()),
    )
    .unwrap();
    let got: Vec<(&str, u32)> = ds
        .samples()
        .iter()
        .map(|s| (s.name.as_str(), s.label))
        .collect();
    assert_eq!(got, [("v1.JPEG", 1), ("v2.JPEG", 2), ("v3.JPEG", 0)]);
    // A plain list labels the files in sorted name order.
    let ds = open("n02\nn02\nn01\n", Some(classes.clone())).unwrap();
    assert_eq!(
        ds.samples().iter().map(|s| s.label).collect::<Vec<_>>(),
        [1, 1, 0]
    );
    // Without the training classes, names become the classes; integers cannot.
    let ds = open("b\na\nb\n", None).unwrap();
    assert_eq!(ds.classes(), ["a", "b"]);
    let e = err(open("0\n1\n2\n", None));
    assert!(e.contains("training set's class"), "{e}");
    // Wrong counts, unknown labels, missing files, out-of-range indices: each named.
    let e = err(open("n01\nn02\n", Some(classes.clone())));
    assert!(e.contains("has 2 labels") && e.contains("3 images"), "{e}");
    let e = err(open("v1.JPEG zebra\n", Some(classes.clone())));
    assert!(
        e.contains("line 1") && e.contains("\"zebra\" is not a class name"),
        "{e}"
    );
    let e = err(open("v9.JPEG n01\n", Some(classes.clone())));
    assert!(e.contains("no image") && e.contains("v9.JPEG"), "{e}");
    let e = err(open("n01\nn01\n7\n", Some(classes.clone())));
    assert!(e.contains("label 7 is out of range"), "{e}");
    // A labelled subset: the unlabelled file is skipped with a warning.
    let ds = open("v1.JPEG n01\nv2.JPEG n02\n", Some(classes)).unwrap();
    assert_eq!(ds.len(), 2);
    assert!(ds.warnings()[0].contains("v3.JPEG"), "{:?}", ds.warnings());
}

#[test]
fn tar_with_a_top_folder_and_an_empty_class_is_read_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let tar_path = dir.path().join("small.tar");
    let jpegs: Vec<Vec<u8>> = (0..4).map(|i| rgb_jpeg(10 + i, 10)).collect();
    {
        let mut builder = tar::Builder::new(std::fs::File::create(&tar_path).unwrap());
        let mut add_dir = |path: &str| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            h.set_mode(0o755);
            h.set_cksum();
            builder.append_data(&mut h, path, std::io::empty()).unwrap();
        };
        add_dir("small/");
        add_dir("small/dog/");
        add_dir("small/emu/");
        add_dir("small/cat/");
        let mut add_file = |path: &str, bytes: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            builder.append_data(&mut h, path, bytes).unwrap();
        };
        add_file("small/dog/b.jpg", &jpegs[0]);
        add_file("small/cat/z.jpg", &jpegs[1]);
        add_file("small/dog/a.jpg", &jpegs[2]);
        // A long name goes through a GNU long-name record; its offset must still be right.
        add_file(&format!("small/cat/{}.jpg", "x".repeat(150)), &jpegs[3]);
        builder.finish().unwrap();
    }
    let ds = Dataset::open(&tar_path).unwrap();
    assert_eq!(ds.classes(), ["cat", "dog", "emu"]);
    let names: Vec<&str> = ds.samples().iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names[1..], ["cat/z.jpg", "dog/a.jpg", "dog/b.jpg"]);
    assert!(names[0].starts_with("cat/xxx"));
    for (i, expect) in [3, 1, 2, 0].into_iter().enumerate() {
        assert_eq!(ds.read(i).unwrap(), jpegs[expect], "{}", ds.describe(i));
        assert!(ds.load(i, 8).is_ok());
    }
    assert!(
        ds.describe(1).ends_with("small.tar:cat/z.jpg"),
        "{}",
        ds.describe(1)
    );
    let warnings = ds.warnings().join("\n");
    assert!(
        warnings.contains("empty class folder") && warnings.contains("small.tar:emu"),
        "{warnings}"
    );

    // A compressed tar cannot be read in place: say so.
    let gz = dir.path().join("small.tar.gz");
    std::fs::write(&gz, b"\x1f\x8b\x08\x00rest of a gzip stream").unwrap();
    let e = err(Dataset::open(&gz));
    assert!(
        e.contains("gzip-compressed") && e.contains("small.tar.gz"),
        "{e}"
    );
    // A file that is not a tar at all.
    let junk = dir.path().join("junk.tar");
    std::fs::write(&junk, vec![7u8; 1500]).unwrap();
    let e = err(Dataset::open(&junk));
    assert!(
        e.contains("not a folder or a tar archive") && e.contains("junk.tar"),
        "{e}"
    );
    // An empty file is an empty archive: no images.
    let empty = dir.path().join("empty.tar");
    std::fs::write(&empty, b"").unwrap();
    let e = err(Dataset::open(&empty));
    assert!(e.contains("no images in") && e.contains("empty.tar"), "{e}");
}

#[test]
fn splits_are_found_and_predict_views_come_from_one_file() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("train/a/1.jpg"), &rgb_jpeg(64, 48));
    std::fs::write(dir.path().join("test.tar"), b"").unwrap();
    let splits = Splits::find(dir.path()).unwrap();
    assert_eq!(splits.train, dir.path().join("train"));
    assert_eq!(splits.val, Some(dir.path().join("test.tar")));
    let e = err(Splits::find(dir.path().join("train/a")));
    assert!(e.contains("neither train/ nor train.tar"), "{e}");

    let ds = Dataset::open(&splits.train).unwrap();
    let stats = prepare(&ds, 32, 1, Some(&dir.path().join("s.safetensors")))
        .unwrap()
        .stats;
    let g = Geometry::new(32, 28).unwrap();
    let views = image_views(
        &rgb_jpeg(64, 48),
        &stats,
        g,
        EvalViews::TenCrop,
        Augment::Paper,
    )
    .unwrap();
    assert_eq!(views.len(), 10 * g.input_len());
    // The training set is this one image, so the mean is the image: every view is all zeros.
    assert!(views.iter().all(|&v| v == 0.0));
    assert!(image_views(b"junk", &stats, g, EvalViews::Centre, Augment::Paper).is_err());
}
