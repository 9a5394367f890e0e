//! The pipeline over the shared ImageNet samples (`../shared/data/imagenet-samples`, or
//! `ALEXNET_IMAGENET_SAMPLES`): one real JPEG per class folder, `<wnid>/<name>.JPEG`.

pub mod support;

use alexnet::data::stats::{Stats, compute};
use alexnet::data::*;
use std::sync::Arc;

fn samples() -> Option<Dataset> {
    let root = support::data::shared_data("ALEXNET_IMAGENET_SAMPLES", "imagenet-samples")?;
    Some(Dataset::open(&root).expect("opening the ImageNet samples"))
}

#[test]
fn every_sample_decodes_and_views_are_227() {
    let Some(ds) = samples() else { return };
    let folders = std::fs::read_dir(ds.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().is_dir())
        .count();
    assert_eq!(ds.classes().len(), folders);
    assert!(ds.classes().iter().all(|c| c.starts_with('n')), "wnids");
    assert!(ds.warnings().is_empty(), "{:?}", ds.warnings());
    println!(
        "{}: {} images in {} classes",
        ds.path().display(),
        ds.len(),
        ds.classes().len()
    );
    for i in 0..ds.len() {
        let bytes = ds.read(i).unwrap();
        let rgb =
            decode::decode_rgb(&bytes).unwrap_or_else(|e| panic!("{}: {e:#}", ds.describe(i)));
        assert!(
            rgb.width() >= 64 && rgb.height() >= 64,
            "{}",
            ds.describe(i)
        );
        let base = ds.load(i, 256).unwrap();
        assert_eq!(base.len(), 256 * 256 * 3);
        // A real photo is not one flat colour.
        assert!(base.iter().max() > base.iter().min(), "{}", ds.describe(i));
    }

    // The network inputs: ten 227x227 views per image in evaluation, one in training.
    let ds = Arc::new(ds);
    let g = Geometry::new(256, 227).unwrap();
    let (stats, bad) = compute(&ds, 256, 2).unwrap();
    assert!(bad.is_empty());
    let stats = Arc::new(stats);
    let mut config = LoaderConfig::eval(g, 16, EvalViews::TenCrop);
    config.threads = 2;
    let eval = Loader::new(ds.clone(), stats.clone(), config).unwrap();
    let batch = eval.epoch(0, 0).next().unwrap().unwrap();
    assert_eq!((batch.len(), batch.views), (16, 10));
    assert_eq!(batch.images.len(), 16 * 10 * 3 * 227 * 227);
    assert_eq!(batch.samples, (0..16).collect::<Vec<_>>());
    // Views 0 and 5 are the top-left crop and its mirror: the same pixels, rows reversed.
    let plane = 227 * 227;
    let (a, b) = (
        &batch.images[..plane],
        &batch.images[5 * 3 * plane..][..plane],
    );
    for y in 0..227 {
        for x in 0..227 {
            assert_eq!(a[y * 227 + x], b[y * 227 + 226 - x]);
        }
    }

    let mut config = LoaderConfig::train(g, 8, 3);
    config.threads = 2;
    let train = Loader::new(ds, stats, config).unwrap();
    let batch = train.epoch(0, 0).next().unwrap().unwrap();
    assert_eq!(batch.images.len(), 8 * 3 * 227 * 227);
    assert!(
        batch
            .images
            .iter()
            .all(|v| v.is_finite() && v.abs() < 512.0)
    );
}

fn bits(s: &Stats) -> (Vec<u32>, Vec<u64>) {
    let f64s = s
        .covariance
        .concat()
        .into_iter()
        .chain(s.eigenvalues)
        .chain(s.eigenvectors.concat());
    (
        s.mean.iter().map(|x| x.to_bits()).collect(),
        f64s.map(f64::to_bits).collect(),
    )
}

#[test]
fn mean_and_pca_are_deterministic_and_well_formed() {
    let Some(ds) = samples() else { return };
    let (one, _) = compute(&ds, 256, 1).unwrap();
    let (again, _) = compute(&ds, 256, 1).unwrap();
    let (three, _) = compute(&ds, 256, 3).unwrap();
    assert_eq!(bits(&one), bits(&again), "two runs on one thread");
    assert_eq!(bits(&one), bits(&three), "one thread vs three");
    assert_eq!(one.images, ds.len());
    assert_eq!(one.mean.len(), 3 * 256 * 256);
    assert!(one.mean.iter().all(|&m| (0.0..=255.0).contains(&m)));
    println!("eigenvalues (0..255 units): {:?}", one.eigenvalues);
    println!("eigenvectors (rows, RGB): {:?}", one.eigenvectors);
    let (l, p, c) = (one.eigenvalues, one.eigenvectors, one.covariance);
    assert!(l[0] >= l[1] && l[1] >= l[2] && l[2] > 0.0, "{l:?}");
    for i in 0..3 {
        for j in 0..3 {
            let dot: f64 = (0..3).map(|k| p[i][k] * p[j][k]).sum();
            // Orthonormal to rounding: Jacobi rotations in f64 keep this within ~1e-15.
            assert!(
                (dot - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12,
                "p{i}·p{j} = {dot}"
            );
        }
        // C p = λ p, relative to the largest eigenvalue (f64 rounding, ~1e-16 per step).
        for r in 0..3 {
            let cp: f64 = (0..3).map(|k| c[r][k] * p[i][k]).sum();
            assert!(
                (cp - l[i] * p[i][r]).abs() < 1e-9 * l[0],
                "pair {i} row {r}"
            );
        }
    }

    // Saved and reused: the explicit path, then the same numbers back without recomputing.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("imagenet-samples.stats.safetensors");
    let first = prepare(&ds, 256, 2, Some(&path)).unwrap();
    assert!(!first.reused && path.exists());
    let second = prepare(&ds, 256, 2, Some(&path)).unwrap();
    assert!(second.reused);
    assert_eq!(bits(&second.stats), bits(&one));
    assert_eq!(second.stats.classes, ds.classes());
    // Another base size does not reuse the file.
    let other = prepare(&ds, 64, 2, Some(&path)).unwrap();
    assert!(!other.reused);
    assert_eq!(other.stats.mean.len(), 3 * 64 * 64);
    assert_eq!(Stats::load(&path).unwrap().base, 64);
}
