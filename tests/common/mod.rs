//! Helpers shared by the integration tests: input generators for the op tests and a small
//! two-tower network for the network-level tests (each test file uses a subset).
#![allow(dead_code)]

pub mod device_checks;
pub mod step_checks;

use alexnet::model::init::NetParams;
use alexnet::model::{NetSpec, Plan};
use alexnet::ops::philox;
use rand::{Rng, SeedableRng, rngs::StdRng, seq::SliceRandom};

/// A small net with every layer type and every exchange pattern of `paper` and `net145`:
/// conv1 on the whole image, own-tower conv2 with LRN and spatial norm, conv3 reading both towers,
/// fc layers reading both, dropout, and (`first_tower_classifier`) a classifier on tower 0 alone.
pub fn tiny_spec(first_tower_classifier: bool, tanh: bool) -> NetSpec {
    let act = if tanh { "tanh" } else { "relu" };
    let json = format!(
        r#"{{
        "name": "tiny", "input": {{"channels": 3, "size": 15}}, "towers": 2,
        "layers": [
          {{"type": "conv", "name": "conv1", "filters": 8, "kernel": 3, "stride": 2, "pad": 0, "pad_end": 1, "init": {{"weight_std": 0.2}}}},
          {{"type": "{act}", "name": "act1"}},
          {{"type": "lrn", "name": "lrn1", "size": 3, "k": 2.0, "alpha": 0.1, "beta": 0.75}},
          {{"type": "max_pool", "name": "pool1", "size": 3, "stride": 2}},
          {{"type": "conv", "name": "conv2", "filters": 12, "kernel": 3, "pad": 1, "init": {{"weight_std": 0.2, "bias": 0.1}}}},
          {{"type": "{act}", "name": "act2"}},
          {{"type": "spatial_norm", "name": "snorm2", "size": 3, "k": 1.0, "alpha": 0.5, "beta": 0.75, "alpha_over_area": true}},
          {{"type": "conv", "name": "conv3", "filters": 8, "kernel": 3, "pad": 1, "input": "all", "init": {{"weight_std": 0.2}}}},
          {{"type": "{act}", "name": "act3"}},
          {{"type": "max_pool", "name": "pool3", "size": 2, "stride": 1}},
          {{"type": "fc", "name": "fc4", "units": 16, "input": "all", "init": {{"weight_std": 0.2, "bias": 0.1}}}},
          {{"type": "{act}", "name": "act4"}},
          {{"type": "dropout", "name": "drop4", "p": 0.5}},
          {{"type": "fc", "name": "fc5", "units": 6, "input": "all", "placement": "{}", "init": {{"weight_std": 0.2}}}}
        ],
        "optim": {{"lr": 0.01, "momentum": 0.9, "weight_decay": 0.0005, "bias_lr_mult": 2.0, "bias_decay": false}}
      }}"#,
        if first_tower_classifier {
            "first"
        } else {
            "split"
        }
    );
    NetSpec::from_json(&json).unwrap()
}

pub fn batch(plan: &Plan, n: usize, seed: u64) -> (Vec<f32>, Vec<u32>) {
    let len = n * plan.spec.input.channels * plan.spec.input.size.pow(2);
    let images = (0..len as u64)
        .map(|i| 2.0 * philox::uniform(philox::word(seed, 9, i)) - 1.0)
        .collect();
    let labels = (0..n as u64)
        .map(|i| philox::word(seed, 10, i) % plan.classes as u32)
        .collect();
    (images, labels)
}

pub fn flatten(p: &NetParams) -> Vec<f32> {
    p.iter()
        .flatten()
        .flat_map(|t| t.weight.data.iter().chain(&t.bias.data).copied())
        .collect()
}

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// `len` values uniform in `[lo, hi)`.
pub fn uniform(rng: &mut StdRng, len: usize, lo: f64, hi: f64) -> Vec<f64> {
    (0..len).map(|_| rng.random_range(lo..hi)).collect()
}

/// `len` values uniform in `[lo, hi)`, rounded to f32 (so an f64 reference sees the same inputs).
pub fn uniform_f32(rng: &mut StdRng, len: usize, lo: f64, hi: f64) -> Vec<f32> {
    uniform(rng, len, lo, hi)
        .into_iter()
        .map(|v| v as f32)
        .collect()
}

/// `len` distinct values in `[-1, 1)`, pairwise at least `2 / len` apart, in random order: max
/// pooling's argmax cannot flip under a perturbation much smaller than that gap.
pub fn distinct(rng: &mut StdRng, len: usize) -> Vec<f64> {
    let mut v: Vec<f64> = (0..len)
        .map(|i| -1.0 + 2.0 * i as f64 / len as f64)
        .collect();
    v.shuffle(rng);
    v
}

pub fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Root mean square, the scale a tolerance floor is set against.
pub fn rms(v: &[f64]) -> f64 {
    (v.iter().map(|x| x * x).sum::<f64>() / v.len().max(1) as f64).sqrt()
}
