//! The pipeline over the shared CIFAR-10 tars (`../shared/data/cifar10/{train,test}.tar`, or the
//! folder `ALEXNET_CIFAR10` names): read in place, counted, and the loader's determinism.

pub mod support;

use alexnet::data::stats::compute;
use alexnet::data::*;
use std::collections::BTreeSet;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

const CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

fn cifar() -> Option<PathBuf> {
    support::data::shared_data("ALEXNET_CIFAR10", "cifar10")
}

#[test]
fn tars_are_read_in_place_with_ten_classes_and_the_right_counts() {
    let Some(dir) = cifar() else { return };
    let train = Dataset::open(dir.join("train.tar")).unwrap();
    let test = Dataset::open_with(
        dir.join("test.tar"),
        &OpenOptions {
            classes: Some(train.classes().to_vec()),
            ..Default::default()
        },
    )
    .unwrap();
    for (ds, per_class) in [(&train, 5000), (&test, 1000)] {
        println!(
            "{}: {} images, per class {:?}",
            ds.path().display(),
            ds.len(),
            ds.class_counts()
        );
        assert_eq!(ds.classes(), CLASSES);
        assert_eq!(ds.class_counts(), vec![per_class; 10]);
        assert!(ds.warnings().is_empty(), "{:?}", ds.warnings());
        // Labels match folders: the member is <class>/<file> below the tar's top folder.
        for s in ds.samples() {
            let (class, file) = s.name.split_once('/').unwrap();
            assert_eq!(class, ds.classes()[s.label as usize], "{}", s.name);
            assert!(file.ends_with(".jpg"));
        }
        // A sample of 300 images spread over the set decodes to 32x32 base images.
        for i in (0..ds.len()).step_by(ds.len() / 300) {
            let rgb = decode::decode_rgb(&ds.read(i).unwrap()).unwrap();
            assert_eq!(rgb.dimensions(), (32, 32), "{}", ds.describe(i));
            assert_eq!(ds.load(i, 32).unwrap(), rgb.into_raw());
        }
    }

    // Reading by offset gives exactly the bytes a sequential walk through the archive gives.
    let by_name: std::collections::BTreeMap<&str, usize> = test
        .samples()
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let mut archive = tar::Archive::new(std::fs::File::open(dir.join("test.tar")).unwrap());
    let mut checked = 0;
    for entry in archive.entries().unwrap().step_by(97) {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let Some(name) = path.strip_prefix("test/") else {
            continue;
        };
        let Some(&i) = by_name.get(name) else {
            continue;
        };
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        assert_eq!(test.read(i).unwrap(), bytes, "{path}");
        checked += 1;
    }
    assert!(checked > 50, "compared {checked} members");
}

/// Batches as comparable values (the f32 pixels by their bits).
fn key(b: &Batch) -> (usize, Vec<u32>, Vec<u32>, Vec<usize>) {
    (
        b.index,
        b.images.iter().map(|x| x.to_bits()).collect(),
        b.labels.clone(),
        b.samples.clone(),
    )
}

fn loader(ds: &Arc<Dataset>, stats: &Arc<Stats>, threads: usize, cache: bool, seed: u64) -> Loader {
    let mut config = LoaderConfig::train(Geometry::new(32, 28).unwrap(), 64, seed);
    config.threads = threads;
    config.prefetch = 2;
    if !cache {
        config.cache_bytes = 0;
    }
    Loader::new(ds.clone(), stats.clone(), config).unwrap()
}

#[test]
fn loader_is_deterministic_and_resumes_mid_epoch() {
    let Some(dir) = cifar() else { return };
    let ds = Arc::new(Dataset::open(dir.join("test.tar")).unwrap());
    let stats = Arc::new(compute(&ds, 32, 2).unwrap().0);

    let a = loader(&ds, &stats, 1, false, 7);
    let first: Vec<Batch> = a.epoch(1, 0).take(6).map(Result::unwrap).collect();
    assert!(!a.caches());
    // Same seed, more threads, with the cache: the same batches, bit for bit.
    let b = loader(&ds, &stats, 3, true, 7);
    assert!(b.caches());
    let again: Vec<Batch> = b.epoch(1, 0).take(6).map(Result::unwrap).collect();
    assert_eq!(
        first.iter().map(key).collect::<Vec<_>>(),
        again.iter().map(key).collect::<Vec<_>>()
    );
    // Resumed at batch 4 of epoch 1: batches 4 and 5 of the uninterrupted run.
    let resumed: Vec<Batch> = a.epoch(1, 4).take(2).map(Result::unwrap).collect();
    assert_eq!(
        resumed.iter().map(key).collect::<Vec<_>>(),
        first[4..].iter().map(key).collect::<Vec<_>>()
    );
    // Another epoch or another seed: another order.
    let other_epoch = a.epoch(2, 0).next().unwrap().unwrap();
    let other_seed = loader(&ds, &stats, 1, false, 8)
        .epoch(1, 0)
        .next()
        .unwrap()
        .unwrap();
    assert_ne!(other_epoch.samples, first[0].samples);
    assert_ne!(other_seed.samples, first[0].samples);
    // Labels are the dataset's, and the batch is the stated shape.
    for batch in &first {
        assert_eq!(batch.images.len(), 64 * 3 * 28 * 28);
        for (s, l) in batch.samples.iter().zip(&batch.labels) {
            assert_eq!(ds.label(*s), *l);
        }
    }

    // A whole epoch: every batch full, no sample twice, the last partial batch dropped.
    let whole: Vec<Batch> = b.epoch(3, 0).map(Result::unwrap).collect();
    assert_eq!(whole.len(), 10_000 / 64);
    let seen: BTreeSet<usize> = whole.iter().flat_map(|b| b.samples.clone()).collect();
    assert_eq!(seen.len(), whole.len() * 64);
    let rate = b.throughput();
    println!(
        "loader: {} images at {:.0} images/s (3 threads)",
        rate.images,
        rate.images_per_second()
    );
    // At least what was taken (dropping an epoch early may leave prefetched batches uncounted
    // by the consumer but counted by the loader).
    assert!(rate.images >= ((6 + whole.len()) * 64) as u64);
}
