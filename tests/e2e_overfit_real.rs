//! A small two-tower net overfits a handful of real ImageNet photographs: the end-to-end check
//! that decoding, the forward pass, the backward pass and the update work together on real
//! pixels. Reads `../shared/data/imagenet-samples` (override with `ALEXNET_IMAGENET_SAMPLES`);
//! skips with one line where that folder is absent.

pub mod support;

use alexnet::data::Dataset;
use alexnet::device::cpu::CpuDevice;
use alexnet::engine::Network;
use alexnet::model::init::init_params;
use alexnet::model::{NetSpec, Plan};

#[test]
fn a_small_net_overfits_eight_real_images() {
    let Some(dir) = support::data::shared_data("ALEXNET_IMAGENET_SAMPLES", "imagenet-samples")
    else {
        return;
    };
    let ds = Dataset::open(&dir).unwrap();
    let (n, size) = (8usize, 64usize);
    // Eight photographs of eight classes, shorter side to 64, centre crop; pixel values minus
    // each image set's per-channel mean, the scale the network sees in training.
    let mut images = vec![0f32; n * 3 * size * size];
    for i in 0..n {
        let hwc = ds.load(i * ds.len() / n, size).unwrap();
        for (p, px) in hwc.chunks(3).enumerate() {
            for c in 0..3 {
                images[(i * 3 + c) * size * size + p] = px[c] as f32;
            }
        }
    }
    let mean = images.iter().sum::<f32>() / images.len() as f32;
    images.iter_mut().for_each(|v| *v -= mean);
    let labels: Vec<u32> = (0..n as u32).collect();

    let spec = NetSpec::from_json(
        r#"{"name": "overfit", "input": {"channels": 3, "size": 64}, "towers": 2, "layers": [
          {"type": "conv", "name": "conv1", "filters": 16, "kernel": 5, "stride": 2},
          {"type": "relu", "name": "relu1"},
          {"type": "lrn", "name": "lrn1", "size": 5, "k": 2.0, "alpha": 0.0001, "beta": 0.75},
          {"type": "max_pool", "name": "pool1", "size": 3, "stride": 2},
          {"type": "conv", "name": "conv2", "filters": 16, "kernel": 3, "pad": 1, "init": {"bias": 1.0}},
          {"type": "relu", "name": "relu2"},
          {"type": "max_pool", "name": "pool2", "size": 3, "stride": 2},
          {"type": "conv", "name": "conv3", "filters": 16, "kernel": 3, "pad": 1, "input": "all"},
          {"type": "relu", "name": "relu3"},
          {"type": "fc", "name": "fc4", "units": 8, "input": "all"}
        ]}"#,
    )
    .unwrap();
    let plan = Plan::new(&spec).unwrap();
    let mut net =
        Network::new(&plan, vec![CpuDevice, CpuDevice], &init_params(&plan, 1), 1).unwrap();
    let first = net.train_step(&images, &labels, 0.001, 0).unwrap();
    let mut last = first;
    for step in 1..150 {
        last = net.train_step(&images, &labels, 0.001, step).unwrap();
        if last.top1_errors == 0 && last.loss < 0.1 {
            break;
        }
    }
    println!(
        "loss {:.3} -> {:.3}, errors {} -> {}",
        first.loss, last.loss, first.top1_errors, last.top1_errors
    );
    assert!(
        first.top1_errors >= 4,
        "the untrained net already knows the images: {first:?}"
    );
    assert_eq!(last.top1_errors, 0, "not fitted: {last:?}");
    assert!(
        last.loss < 0.1 * first.loss,
        "loss went from {} to {}",
        first.loss,
        last.loss
    );
}
