//! The built-in synthetic dataset: a pure function of its seed, and learnable.

use alexnet::data::stats::compute;
use alexnet::data::*;
use alexnet::ops::{conv, fc, philox, softmax};
use std::sync::Arc;

#[test]
fn images_are_a_function_of_seed_split_and_index() {
    let train = Dataset::synthetic(Synthetic::new(5, Split::Train));
    let same = Dataset::synthetic(Synthetic::new(5, Split::Train));
    let other_seed = Dataset::synthetic(Synthetic::new(6, Split::Train));
    let val = Dataset::synthetic(Synthetic::new(5, Split::Val));
    assert_eq!((train.len(), val.len()), (10_000, 2_000));
    assert_eq!(train.classes().len(), 10);
    assert_eq!(train.class_counts(), vec![1000; 10]);
    assert_eq!(train.label(2500), 2);
    for i in [0, 1234, 9999] {
        let img = train.load(i, 32).unwrap();
        assert_eq!(img.len(), 32 * 32 * 3);
        assert_eq!(img, same.load(i, 32).unwrap());
        assert_ne!(img, other_seed.load(i, 32).unwrap());
        assert_ne!(img, val.load(i, 32).unwrap());
        // Two colours plus noise: a real spread of values.
        let (lo, hi) = (img.iter().min().unwrap(), img.iter().max().unwrap());
        assert!(hi - lo > 60, "image {i}: values {lo}..{hi}");
    }
    // Any size: the same pattern at 64x64.
    assert_eq!(train.load(3, 64).unwrap().len(), 64 * 64 * 3);
    assert!(train.read(0).is_err(), "no files behind it");
}

/// Random convolution features (fixed filters, ReLU, 4x4 max pooling) feed a softmax classifier
/// trained by SGD. If that gets well above chance on held-out images, the classes are told apart
/// by local shape and texture, which is what a trained conv net learns at least as well.
#[test]
fn random_conv_features_and_a_linear_classifier_beat_chance_by_far() {
    let per_class = 150;
    let train = Dataset::synthetic(Synthetic {
        seed: 1,
        split: Split::Train,
        per_class,
    });
    let val = Dataset::synthetic(Synthetic {
        seed: 1,
        split: Split::Val,
        per_class: 40,
    });

    let filters = 16;
    let g = conv::ConvGeom {
        n: 1,
        c_in: 3,
        h: 32,
        w: 32,
        c_out: filters,
        k: 5,
        stride: 1,
        pad: 0,
        pad_end: 0,
        groups: 1,
    };
    let weights: Vec<f32> = (0..g.w_len() as u64)
        .map(|i| {
            (0.1 * philox::normal(philox::word(3, 0, 2 * i), philox::word(3, 0, 2 * i + 1))) as f32
        })
        .collect();
    let bias = vec![0f32; filters];
    let features = |ds: &Dataset| -> (Vec<f32>, Vec<u32>) {
        let mut out = Vec::new();
        for i in 0..ds.len() {
            let img = ds.load(i, 32).unwrap();
            let x: Vec<f32> = (0..3)
                .flat_map(|c| (0..32 * 32).map(move |p| (c, p)))
                .map(|(c, p)| img[p * 3 + c] as f32 / 255.0 - 0.5)
                .collect();
            let mut y = vec![0f32; g.y_len()];
            conv::forward(&g, &x, &weights, &bias, &mut y);
            // ReLU and 4x4 max pooling of each 28x28 map: 7x7 per filter.
            for map in y.chunks(28 * 28) {
                for by in 0..7 {
                    for bx in 0..7 {
                        let m = (0..16)
                            .map(|k| map[(by * 4 + k / 4) * 28 + bx * 4 + k % 4])
                            .fold(0f32, f32::max);
                        out.push(m);
                    }
                }
            }
        }
        (out, (0..ds.len()).map(|i| ds.label(i)).collect())
    };
    let (xt, yt) = features(&train);
    let (xv, yv) = features(&val);
    let dim = filters * 49;

    // Softmax regression, minibatch SGD in a fixed order.
    let classes = 10;
    let mut w = vec![0f32; classes * dim];
    let mut b = vec![0f32; classes];
    let batch = 50;
    let order = loader::epoch_order(9, 0, train.len());
    for _epoch in 0..30 {
        for chunk in order.chunks(batch) {
            let x: Vec<f32> = chunk
                .iter()
                .flat_map(|&i| xt[i as usize * dim..][..dim].to_vec())
                .collect();
            let labels: Vec<u32> = chunk.iter().map(|&i| yt[i as usize]).collect();
            let geom = fc::FcGeom {
                n: chunk.len(),
                inputs: dim,
                outputs: classes,
            };
            let mut logits = vec![0f32; chunk.len() * classes];
            fc::forward(&geom, &x, &w, &b, &mut logits);
            let (mut probs, mut dlogits) = (logits.clone(), logits.clone());
            softmax::xent_naive(
                chunk.len(),
                classes,
                &logits,
                &labels,
                &mut probs,
                &mut dlogits,
            );
            let (mut dw, mut db) = (vec![0f32; w.len()], vec![0f32; classes]);
            fc::backward_filter(&geom, &x, &dlogits, &mut dw, &mut db);
            for (p, d) in w.iter_mut().zip(&dw).chain(b.iter_mut().zip(&db)) {
                *p -= 0.05 * d;
            }
        }
    }
    let geom = fc::FcGeom {
        n: val.len(),
        inputs: dim,
        outputs: classes,
    };
    let mut logits = vec![0f32; val.len() * classes];
    fc::forward(&geom, &xv, &w, &b, &mut logits);
    let errors = softmax::top_k_errors(val.len(), classes, &logits, &yv, 1);
    let accuracy = 1.0 - errors as f64 / val.len() as f64;
    println!(
        "held-out accuracy of random conv features + softmax: {:.1}% (chance 10%)",
        100.0 * accuracy
    );
    // Chance is 10%; with 400 held-out images its standard error is 1.5%. 40% is far beyond.
    assert!(accuracy > 0.4, "accuracy {accuracy}");
}

#[test]
fn the_loader_serves_the_synthetic_set_from_memory() {
    let ds = Arc::new(Dataset::synthetic(Synthetic {
        seed: 2,
        split: Split::Train,
        per_class: 20,
    }));
    let stats = Arc::new(compute(&ds, 32, 2).unwrap().0);
    let mut config = LoaderConfig::train(Geometry::new(32, 28).unwrap(), 32, 4);
    config.threads = 2;
    let loader = Loader::new(ds.clone(), stats.clone(), config.clone()).unwrap();
    assert!(loader.caches());
    assert_eq!(loader.batches_per_epoch(), 200 / 32);
    let a: Vec<Batch> = loader.epoch(0, 0).map(Result::unwrap).collect();
    let b: Vec<Batch> = Loader::new(ds.clone(), stats.clone(), config.clone())
        .unwrap()
        .epoch(0, 0)
        .map(Result::unwrap)
        .collect();
    assert_eq!(a, b);
    assert!(a.iter().all(|b| b.skipped.is_empty() && b.len() == 32));

    // Each image is exactly its (seed, epoch, sample) augmentation of its base image.
    let g = Geometry::new(32, 28).unwrap();
    let expected = |sample: usize, px: &Pixels| {
        let mut out = vec![0f32; g.input_len()];
        augment::render(&ds.load(sample, 32).unwrap(), &stats.mean, g, px, &mut out);
        out
    };
    let batch = &a[2];
    for (slot, &sample) in batch.samples.iter().enumerate() {
        let aug = augment::draw(4, 0, sample, g, 0.1);
        let px = Pixels::train(Augment::Paper, &aug, &stats, 0.1, g);
        assert_eq!(
            &batch.images[slot * g.input_len()..][..g.input_len()],
            &expected(sample, &px)[..]
        );
    }

    // Colour noise off: the same samples and crops, no shift.
    loader.set_colour_noise(0.0).unwrap();
    let plain = loader.epoch(0, 2).next().unwrap().unwrap();
    assert_eq!(plain.samples, batch.samples);
    assert_ne!(plain.images, batch.images);
    let sample = plain.samples[0];
    let view = augment::draw(4, 0, sample, g, 0.0).view;
    let px = Pixels::eval(Augment::Paper, view, g);
    assert_eq!(&plain.images[..g.input_len()], &expected(sample, &px)[..]);
    assert!(loader.set_colour_noise(-1.0).is_err());

    // The released code's augmentation: one crop and mirror per 32 consecutive positions of the
    // epoch, noise per image, the centre of the mean, and the division by 1.1.
    let net145 = LoaderConfig {
        augment: Augment::Net145,
        ..config
    };
    let loader = Loader::new(ds.clone(), stats.clone(), net145).unwrap();
    let batches: Vec<Batch> = loader.epoch(1, 0).take(2).map(Result::unwrap).collect();
    let mut views = Vec::new();
    for (index, batch) in batches.iter().enumerate() {
        for (slot, &sample) in batch.samples.iter().enumerate() {
            let position = index * 32 + slot;
            let aug = augment::draw_for(Augment::Net145, 4, 1, position, sample, g, 0.1);
            let px = Pixels::train(Augment::Net145, &aug, &stats, 0.1, g);
            assert_eq!(
                &batch.images[slot * g.input_len()..][..g.input_len()],
                &expected(sample, &px)[..],
                "position {position}"
            );
            views.push(aug.view);
        }
    }
    assert!(views[..32].iter().all(|v| *v == views[0]));
    assert!(views[32..].iter().all(|v| *v == views[32]));
}
