//! The two-tower network on the CPU device: the exchange is a placement, not a different
//! function (a two-tower step equals the same step of one grouped network), and steps are
//! deterministic.

pub mod support;

use alexnet::device::cpu::CpuDevice;
use alexnet::engine::Network;
use alexnet::model::Plan;
use alexnet::model::grouped::{grouped_spec, stack_towers};
use alexnet::model::init::init_params;
use alexnet::model::spec::{Layer, NetSpec};
use alexnet::tensor::max_rel_err;
use support::net::{batch, flatten, tiny_spec};

/// fp32 sums of the same terms in another order (the towers' partial sums are added at the
/// exchange, the grouped net sums in one GEMM): a few ulps on values of order one. The floor keeps
/// gradients that are near zero by cancellation from inflating the relative error.
const REORDER_TOL: f64 = 1e-4;

#[test]
fn two_towers_equal_one_grouped_network() {
    for (first_tower_classifier, tanh) in [(false, false), (true, false), (false, true)] {
        let case = format!("classifier on first tower: {first_tower_classifier}, tanh: {tanh}");
        towers_equal_one_grouped_network(tiny_spec(first_tower_classifier, tanh), &case);
    }
}

/// Past two towers each owner's input gradient sums three parts at every exchange (the network's
/// general path, which the paper's two towers never take).
#[test]
fn three_towers_equal_one_grouped_network() {
    for first_tower_classifier in [false, true] {
        let mut spec = tiny_spec(first_tower_classifier, false);
        spec.towers = 3;
        for layer in &mut spec.layers {
            match layer {
                Layer::Conv(c) => c.filters = 3 * c.filters.div_ceil(3),
                Layer::Fc(f) if f.units == 16 => f.units = 18,
                _ => {}
            }
        }
        let case = format!("three towers, classifier on first tower: {first_tower_classifier}");
        towers_equal_one_grouped_network(spec, &case);
    }
}

fn towers_equal_one_grouped_network(spec: NetSpec, case: &str) {
    let plan = Plan::new(&spec).unwrap();
    let grouped = Plan::new(&grouped_spec(&spec).unwrap()).unwrap();
    assert_eq!(plan.params(), grouped.params());
    let params = init_params(&plan, 3);
    let mut towers = Network::new(&plan, vec![CpuDevice; spec.towers], &params, 11).unwrap();
    let mut single =
        Network::new(&grouped, vec![CpuDevice], &stack_towers(&plan, &params), 11).unwrap();
    let (images, labels) = batch(&plan, 3, 5);
    for step in 0..2 {
        let a = towers.train_step(&images, &labels, 0.05, step).unwrap();
        let b = single.train_step(&images, &labels, 0.05, step).unwrap();
        let case = format!("{case}, step {step}");
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

/// A network that keeps no gradients (as `alexnet train` runs, its fc layers taking their update
/// inside backward where the CPU fuses it) trains to the same weights and momentum, bit for bit,
/// as one that keeps them, by either way of stepping; and its gradients are refused, not stale.
#[test]
fn the_fused_fc_update_trains_bit_identically() {
    let plan = Plan::new(&tiny_spec(false, false)).unwrap();
    let params = init_params(&plan, 1);
    let (images, labels) = batch(&plan, 4, 2);
    let fresh = || Network::new(&plan, vec![CpuDevice, CpuDevice], &params, 7).unwrap();
    let (mut kept, mut fused, mut staged) = (fresh(), fresh(), fresh());
    fused.keep_gradients(false);
    staged.keep_gradients(false);
    for step in 0..3 {
        let a = kept.train_step(&images, &labels, 0.05, step).unwrap();
        let b = fused.train_step(&images, &labels, 0.05, step).unwrap();
        staged.stage_batch(&images, &labels).unwrap();
        staged.queue_staged_step(0.05, step).unwrap();
        let c = staged.finish_step().unwrap();
        assert_eq!((a, a), (b, c), "step {step}");
    }
    for net in [&fused, &staged] {
        assert_eq!(
            flatten(&kept.params().unwrap()),
            flatten(&net.params().unwrap())
        );
        assert_eq!(
            flatten(&kept.velocities().unwrap()),
            flatten(&net.velocities().unwrap())
        );
    }
    let fc_fuses = plan.layers.iter().any(|lp| {
        matches!(lp.layer, Layer::Fc(_)) && alexnet::ops::fc::sgd_fuses::<f32>(&lp.fc_geom(4))
    });
    if !fc_fuses {
        eprintln!("skipped the fused half: this CPU has no fused fc update (AVX-512 f32 only)");
        return;
    }
    let e = fused.gradients().unwrap_err();
    assert!(format!("{e:#}").contains("not kept"), "{e:#}");
    // A pass that keeps them (no update follows) makes them readable again.
    fused.forward_backward(&images, &labels, 3).unwrap();
    kept.forward_backward(&images, &labels, 3).unwrap();
    assert_eq!(
        flatten(&kept.gradients().unwrap()),
        flatten(&fused.gradients().unwrap())
    );
}

/// The training loop's double-buffered input (the next batch staged while a step runs) trains
/// bit-identically to uploading each batch before its step.
#[test]
fn the_double_buffered_upload_trains_bit_identically_to_the_synchronous_one() {
    support::step_checks::staged_steps_equal_synchronous_steps(|| vec![CpuDevice, CpuDevice]);
}

/// The bench's resident batch (`load_batch` once, then `train_loaded`) trains exactly as the
/// batch uploaded every step, and stepping with no batch loaded is an error, not stale data.
#[test]
fn a_resident_batch_trains_like_one_uploaded_every_step() {
    let plan = Plan::new(&tiny_spec(false, false)).unwrap();
    let params = init_params(&plan, 1);
    let (images, labels) = batch(&plan, 4, 2);
    let fresh = || Network::new(&plan, vec![CpuDevice, CpuDevice], &params, 7).unwrap();
    let (mut uploaded, mut resident) = (fresh(), fresh());
    let e = resident.train_loaded(0.05, 0).unwrap_err();
    assert!(
        format!("{e:#}").contains("no training batch is loaded"),
        "{e:#}"
    );
    resident.load_batch(&images, &labels).unwrap();
    for step in 0..3 {
        let a = uploaded.train_step(&images, &labels, 0.05, step).unwrap();
        let b = resident.train_loaded(0.05, step).unwrap();
        assert_eq!(a, b, "step {step}");
    }
    assert_eq!(
        flatten(&uploaded.params().unwrap()),
        flatten(&resident.params().unwrap())
    );
    // predict replaces the batch with unlabelled images.
    resident.predict(&images, 4).unwrap();
    let e = resident.train_loaded(0.05, 3).unwrap_err();
    assert!(
        format!("{e:#}").contains("no training batch is loaded"),
        "{e:#}"
    );
    let mut bad = labels.clone();
    bad[1] = plan.classes as u32;
    let e = resident.train_step(&images, &bad, 0.05, 3).unwrap_err();
    assert!(format!("{e:#}").contains("out of range"), "{e:#}");
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

/// Paper §3.2: each GTX 580 had 3 GB. One tower of the paper net at batch 128 (weights,
/// gradients, momentum, every activation and its gradient, the exchange buffers and the image)
/// must fit in that.
#[test]
fn one_tower_of_the_paper_net_at_batch_128_fits_in_3_gb() {
    use alexnet::model::{Ablations, preset};
    let plan = Plan::new(&preset("paper", &Ablations::default()).unwrap()).unwrap();
    let mut net =
        Network::new(&plan, vec![CpuDevice, CpuDevice], &init_params(&plan, 1), 1).unwrap();
    net.reserve_batch(128).unwrap();
    let bytes = net.bytes_per_tower();
    println!("bytes per tower at batch 128: {bytes:?}");
    // Weights alone are 30.5 M floats per tower, three copies (value, gradient, momentum): the
    // total must at least hold those.
    assert!(bytes.iter().all(|&b| b > 3 * 30_000_000 * 4), "{bytes:?}");
    assert!(bytes.iter().all(|&b| b < 3_000_000_000), "{bytes:?}");
}
