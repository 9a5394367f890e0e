//! The two-tower network on the CPU device: the exchange is a placement, not a different
//! function (a two-tower step equals the same step of one grouped network), and steps are
//! deterministic.

use alexnet::device::cpu::CpuDevice;
use alexnet::model::grouped::{grouped_spec, stack_towers};
use alexnet::model::init::{NetParams, init_params};
use alexnet::model::{NetSpec, Plan};
use alexnet::ops::philox;
use alexnet::parallel::Network;
use alexnet::tensor::max_rel_err;

/// A small net with every layer type and every exchange pattern of `paper` and `net145`:
/// conv1 on the whole image, own-tower conv2 with LRN and spatial norm, conv3 reading both towers,
/// fc layers reading both, dropout, and (`first_tower_classifier`) a classifier on tower 0 alone.
fn tiny_spec(first_tower_classifier: bool, tanh: bool) -> NetSpec {
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

fn batch(plan: &Plan, n: usize, seed: u64) -> (Vec<f32>, Vec<u32>) {
    let len = n * plan.spec.input.channels * plan.spec.input.size.pow(2);
    let images = (0..len as u64)
        .map(|i| 2.0 * philox::uniform(philox::word(seed, 9, i)) - 1.0)
        .collect();
    let labels = (0..n as u64)
        .map(|i| philox::word(seed, 10, i) % plan.classes as u32)
        .collect();
    (images, labels)
}

fn flatten(p: &NetParams) -> Vec<f32> {
    p.iter()
        .flatten()
        .flat_map(|t| t.weight.data.iter().chain(&t.bias.data).copied())
        .collect()
}

/// fp32 sums of the same terms in another order (the towers' partial sums are added at the
/// exchange, the grouped net sums in one GEMM): a few ulps on values of order one. The floor keeps
/// gradients that are near zero by cancellation from inflating the relative error.
const REORDER_TOL: f64 = 1e-4;

#[test]
fn two_towers_equal_one_grouped_network() {
    for (first_tower_classifier, tanh) in [(false, false), (true, false), (false, true)] {
        let spec = tiny_spec(first_tower_classifier, tanh);
        let plan = Plan::new(&spec).unwrap();
        let grouped = Plan::new(&grouped_spec(&spec).unwrap()).unwrap();
        assert_eq!(plan.params(), grouped.params());
        let params = init_params(&plan, 3);
        let mut towers = Network::new(&plan, vec![CpuDevice, CpuDevice], &params, 11).unwrap();
        let mut single =
            Network::new(&grouped, vec![CpuDevice], &stack_towers(&plan, &params), 11).unwrap();
        let (images, labels) = batch(&plan, 3, 5);
        for step in 0..2 {
            let a = towers.train_step(&images, &labels, 0.05, step).unwrap();
            let b = single.train_step(&images, &labels, 0.05, step).unwrap();
            let case = format!(
                "classifier on first tower: {first_tower_classifier}, tanh: {tanh}, step {step}"
            );
            assert!(
                (a.loss - b.loss).abs() < 1e-5 * a.loss.abs().max(1.0),
                "{case}: loss {} vs {}",
                a.loss,
                b.loss
            );
            assert!(a.loss.is_finite() && a.loss > 0.0, "{case}");
            let err = max_rel_err(&towers.logits().unwrap(), &single.logits().unwrap(), 1e-2);
            assert!(err < REORDER_TOL, "{case}: logits differ by {err}");
            let (ga, gb) = (
                flatten(&stack_towers(&plan, &towers.gradients().unwrap())),
                flatten(&single.gradients().unwrap()),
            );
            assert!(
                ga.iter().any(|&g| g != 0.0),
                "{case}: gradients are all zero"
            );
            let err = max_rel_err(&ga, &gb, 1e-3);
            assert!(err < REORDER_TOL, "{case}: gradients differ by {err}");
            let err = max_rel_err(
                &flatten(&stack_towers(&plan, &towers.params().unwrap())),
                &flatten(&single.params().unwrap()),
                1e-2,
            );
            assert!(err < REORDER_TOL, "{case}: updated weights differ by {err}");
        }
    }
}

#[test]
fn steps_are_bit_identical_across_runs_and_dropout_changes_per_step() {
    let plan = Plan::new(&tiny_spec(false, false)).unwrap();
    let params = init_params(&plan, 1);
    let (images, labels) = batch(&plan, 4, 2);
    let run = || {
        let mut net = Network::new(&plan, vec![CpuDevice, CpuDevice], &params, 7).unwrap();
        let losses: Vec<f64> = (0..3)
            .map(|s| net.train_step(&images, &labels, 0.05, s).unwrap().loss)
            .collect();
        (losses, flatten(&net.params().unwrap()))
    };
    let (a, b) = (run(), run());
    assert_eq!(a, b);
    // Dropout draws new masks each step: the same batch at a different step gives another loss
    // even before any update (checked on a fresh network).
    let mut net = Network::new(&plan, vec![CpuDevice, CpuDevice], &params, 7).unwrap();
    let l0 = net.forward_backward(&images, &labels, 0).unwrap().loss;
    let l1 = net.forward_backward(&images, &labels, 1).unwrap().loss;
    assert_ne!(l0, l1);
}

#[test]
fn a_small_net_fits_a_fixed_batch() {
    // Twenty steps on one batch of random images with random labels: a working forward, backward
    // and update drive the training loss down. This fails if any gradient has the wrong sign or
    // the update is not applied.
    let mut spec = tiny_spec(false, false);
    spec.layers.retain(|l| l.kind() != "dropout");
    let plan = Plan::new(&spec).unwrap();
    let mut net =
        Network::new(&plan, vec![CpuDevice, CpuDevice], &init_params(&plan, 4), 1).unwrap();
    let (images, labels) = batch(&plan, 8, 3);
    let first = net.train_step(&images, &labels, 0.1, 0).unwrap();
    let mut last = first;
    for step in 1..40 {
        last = net.train_step(&images, &labels, 0.1, step).unwrap();
    }
    assert!(
        last.loss < 0.5 * first.loss,
        "loss went from {} to {}",
        first.loss,
        last.loss
    );
    assert_eq!(last.top1_errors, 0, "the batch is not fitted: {last:?}");
}

#[test]
fn parameters_from_another_network_are_refused() {
    let plan = Plan::new(&tiny_spec(false, false)).unwrap();
    let other = Plan::new(&tiny_spec(true, false)).unwrap();
    let err = Network::new(
        &plan,
        vec![CpuDevice, CpuDevice],
        &init_params(&other, 1),
        1,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("fc5"), "{err}");
    let err = Network::new(&plan, vec![CpuDevice], &init_params(&plan, 1), 1)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("2 towers but 1 devices"), "{err}");
}
