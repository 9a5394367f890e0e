//! A small two-tower network with every layer type, and deterministic batches and parameter
//! views for the network-level tests.

use alexnet::model::init::NetParams;
use alexnet::model::{NetSpec, Plan};
use alexnet::ops::philox;

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
