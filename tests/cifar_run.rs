//! One epoch of CIFAR-10 on the CPU with the `cifar` preset, through the real pipeline (tar read
//! in place, statistics, augmentation, prefetching loader) and the training loop, must reach a
//! stated test accuracy. Reads `../shared/data/cifar10/{train,test}.tar` (override with
//! `ALEXNET_CIFAR10`); skips with one line where absent. About two minutes on 2 cores.

use alexnet::data::{Dataset, EvalViews, Geometry, Loader, LoaderConfig, OpenOptions, prepare};
use alexnet::device::cpu::CpuDevice;
use alexnet::model::init::init_params;
use alexnet::model::{Ablations, Plan, preset};
use alexnet::parallel::Network;
use alexnet::train::batches::{LoaderBatches, LoaderEval};
use alexnet::train::checkpoint::TrainState;
use alexnet::train::run::{TrainConfig, train};
use std::path::PathBuf;
use std::sync::Arc;

#[test]
fn one_epoch_of_cifar10_reaches_forty_percent_test_accuracy() {
    let dir = std::env::var_os("ALEXNET_CIFAR10")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../shared/data/cifar10"
            ))
        });
    if !dir.join("train.tar").exists() {
        println!(
            "SKIP: no CIFAR-10 at {} (set ALEXNET_CIFAR10 to a folder holding train.tar and test.tar)",
            dir.display()
        );
        return;
    }
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
    let g = Geometry::new(32, 32).unwrap();
    let plan = Plan::new(&preset("cifar", &Ablations::default()).unwrap()).unwrap();
    let mut net =
        Network::new(&plan, vec![CpuDevice, CpuDevice], &init_params(&plan, 1), 1).unwrap();
    let mut data = LoaderBatches::new(
        Loader::new(train_set, stats.clone(), LoaderConfig::train(g, 128, 1)).unwrap(),
    );
    let mut test = LoaderEval::new(
        Loader::new(
            test_set,
            stats,
            LoaderConfig::eval(g, 500, EvalViews::Centre),
        )
        .unwrap(),
        1,
    );
    let cfg = TrainConfig {
        epochs: 1,
        schedule: "constant".parse().unwrap(),
        out_dir: tmp.path().join("run"),
        checkpoint_every: 0,
        max_steps: None,
        time_limit: None,
        stop_at_train_error: None,
        progress: false,
        data: None,
    };
    let state = TrainState {
        lr: 0.01,
        seed: 1,
        batch: 128,
        ..TrainState::default()
    };
    let outcome = train(&mut net, state, &mut data, Some(&mut test), &cfg).unwrap();
    let eval = outcome.last_eval.unwrap();
    println!(
        "after one epoch ({} steps): test top-1 error {:.2}%, top-5 {:.2}%",
        outcome.state.step,
        100.0 * eval.top1_error,
        100.0 * eval.top5_error
    );
    assert_eq!(eval.images, 10_000);
    // Measured: 44.8% accuracy after this epoch (the run is deterministic for a given seed).
    // Chance is 10%; 40% leaves room for another CPU's GEMM kernels (FMA or not) rounding
    // differently and still fails a pipeline that feeds wrong labels or broken images.
    assert!(
        eval.top1_error < 0.60,
        "test accuracy {:.2}% is under 40%",
        100.0 * (1.0 - eval.top1_error)
    );
}
