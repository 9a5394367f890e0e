//! One epoch of CIFAR-10 on the CPU with the `cifar` preset, through the real pipeline (tar read
//! in place, statistics, augmentation, prefetching loader) and the training loop, must reach a
//! stated test accuracy; the same epochs with bf16 products (the CPU reference rounding the
//! operands as the tensor cores do) must land near fp32's. Reads
//! `../shared/data/cifar10/{train,test}.tar` (override with `ALEXNET_CIFAR10`); skips with one
//! line where absent. About seven minutes on 2 cores (six epochs).

pub mod support;

use alexnet::data::{
    Dataset, EvalViews, Geometry, Loader, LoaderConfig, OpenOptions, Stats, prepare,
};
use alexnet::device::cpu::CpuDevice;
use alexnet::dist::replicas::Replica;
use alexnet::engine::Network;
use alexnet::model::init::init_params;
use alexnet::model::{Ablations, Plan, preset};
use alexnet::ops::precision::Precision;
use alexnet::train::batches::{LoaderBatches, LoaderEval};
use alexnet::train::checkpoint::TrainState;
use alexnet::train::evaluate::EvalResult;
use alexnet::train::run::{TrainConfig, train};
use std::sync::Arc;

/// The seeds (initial weights, data order, augmentation, dropout) each precision is trained from.
const SEEDS: [u64; 3] = [1, 2, 3];

/// How far bf16's median test error over `SEEDS` may lie from fp32's, in points. Not the 2 points
/// the tensor-core issue asked for: a single one-epoch run is chaotic. Measured on this test's
/// setup (2026-12-01), flipping the lowest bit of every initial weight moved fp32's test error by
/// +4.0, +2.5, +2.1 and -0.3 points (seeds 1-4), and at seed 5 fp32 died at chance (90% error)
/// where its one-ulp twin reached 56.3%. Against that noise, the medians over seeds 1-5 were
/// fp32 55.20%, fp32 with the flipped bit 56.78%, bf16 58.15%: bf16 2.95 points behind fp32 and
/// 1.37 behind its one-ulp twin. A median of three within 4 points still fails a bf16 path that
/// trains wrongly (a net stuck at chance is some 35 points off) and does not fail on noise.
const BF16_POINTS: f64 = 4.0;

#[test]
fn one_epoch_of_cifar10_reaches_forty_percent_test_accuracy_and_bf16_stays_near_fp32() {
    let Some(dir) = support::data::shared_data("ALEXNET_CIFAR10", "cifar10") else {
        return;
    };
    let train_set = Arc::new(Dataset::open(dir.join("train.tar")).unwrap());
    let test_set = Arc::new(
        Dataset::open_with(
            dir.join("test.tar"),
            &OpenOptions {
                classes: Some(train_set.classes().to_vec()),
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let tmp = tempfile::tempdir().unwrap();
    let stats = Arc::new(
        prepare(
            &train_set,
            32,
            2,
            Some(&tmp.path().join("stats.safetensors")),
        )
        .unwrap()
        .stats,
    );
    let run =
        |precision, seed| one_epoch(&train_set, &test_set, &stats, precision, seed, tmp.path());

    let fp32: Vec<EvalResult> = SEEDS.iter().map(|&s| run(Precision::Fp32, s)).collect();
    // Measured: 44.8% accuracy after this epoch at seed 1 (the run is deterministic for a given
    // seed). Chance is 10%; 40% leaves room for another CPU's GEMM kernels (FMA or not) rounding
    // differently and still fails a pipeline that feeds wrong labels or broken images.
    assert!(
        fp32[0].top1_error < 0.60,
        "test accuracy {:.2}% is under 40%",
        100.0 * (1.0 - fp32[0].top1_error)
    );

    // bf16 operands; sums, weights, updates and everything else fp32.
    let bf16: Vec<EvalResult> = SEEDS.iter().map(|&s| run(Precision::Bf16, s)).collect();
    let median = |runs: &[EvalResult]| {
        let mut e: Vec<f64> = runs.iter().map(|r| 100.0 * r.top1_error).collect();
        e.sort_by(f64::total_cmp);
        e[e.len() / 2]
    };
    let (m32, m16) = (median(&fp32), median(&bf16));
    println!(
        "median test top-1 error over seeds {SEEDS:?}: fp32 {m32:.2}%, bf16 {m16:.2}% \
         ({:+.2} points)",
        m16 - m32
    );
    assert!(
        (m16 - m32).abs() <= BF16_POINTS,
        "bf16's median test error {m16:.2}% is {:+.2} points from fp32's {m32:.2}%, more than {BF16_POINTS}",
        m16 - m32
    );
}

/// One epoch of the cifar preset at `precision` from `seed` (initial weights, data order,
/// augmentation, dropout); its evaluation on the test set.
fn one_epoch(
    train_set: &Arc<Dataset>,
    test_set: &Arc<Dataset>,
    stats: &Arc<Stats>,
    precision: Precision,
    seed: u64,
    tmp: &std::path::Path,
) -> EvalResult {
    let g = Geometry::new(32, 32).unwrap();
    let mut spec = preset("cifar", &Ablations::default()).unwrap();
    spec.precision = precision;
    let plan = Plan::new(&spec).unwrap();
    let net = Network::new(
        &plan,
        vec![CpuDevice, CpuDevice],
        &init_params(&plan, seed),
        seed,
    )
    .unwrap();
    let mut data = LoaderBatches::new(
        Loader::new(
            train_set.clone(),
            stats.clone(),
            LoaderConfig::train(g, 128, seed),
        )
        .unwrap(),
    );
    let mut test = LoaderEval::new(
        Loader::new(
            test_set.clone(),
            stats.clone(),
            LoaderConfig::eval(g, 500, EvalViews::Centre),
        )
        .unwrap(),
        1,
    );
    let cfg = TrainConfig {
        stats: None,
        epochs: 1,
        schedule: "constant".parse().unwrap(),
        out_dir: tmp.join(format!("run-{precision}-{seed}")),
        checkpoint_every: 0,
        max_steps: None,
        time_limit: None,
        stop_at_train_error: None,
        progress: false,
        data: None,
    };
    let state = TrainState {
        lr: 0.01,
        seed,
        batch: 128,
        ..TrainState::default()
    };
    let mut net = Replica::alone(net, 128);
    let outcome = train(&mut net, state, &mut data, Some(&mut test), &cfg).unwrap();
    let eval = outcome.last_eval.unwrap();
    println!(
        "{precision}, seed {seed}, after one epoch ({} steps): test top-1 error {:.2}%, top-5 {:.2}%",
        outcome.state.step,
        100.0 * eval.top1_error,
        100.0 * eval.top5_error
    );
    assert_eq!(eval.images, 10_000);
    eval
}
