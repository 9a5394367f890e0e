//! The training loop: a run stopped mid-epoch and resumed from its checkpoint ends bit-identical
//! to an uninterrupted run; the metrics log and evaluation report what happened.

pub mod support;

use alexnet::device::cpu::CpuDevice;
use alexnet::dist::replicas::Replica;
use alexnet::engine::Network;
use alexnet::model::Plan;
use alexnet::ops::philox;
use alexnet::train::batches::{Batch, EvalBatches, TrainBatches};
use alexnet::train::run::{TrainConfig, starting_point, train};
use alexnet::train::schedule::Schedule;
use support::net::{flatten, tiny_spec};

/// Batch `b` of epoch `e` is a pure function of (e, b), as the real loader guarantees.
struct Synthetic {
    plan: Plan,
    batch: usize,
    per_epoch: usize,
    pos: (usize, usize),
}

impl Synthetic {
    fn make(&self, stream: u64, n: usize) -> Batch {
        let len = self.plan.spec.input.channels * self.plan.spec.input.size.pow(2);
        let labels: Vec<u32> = (0..n as u64)
            .map(|i| philox::word(1, stream, i) % self.plan.classes as u32)
            .collect();
        // Images carry their label as a brightness offset, so the task is learnable.
        let images = labels
            .iter()
            .enumerate()
            .flat_map(|(i, &l)| {
                (0..len as u64).map(move |j| {
                    philox::uniform(philox::word(2, stream, (i * len) as u64 + j)) + l as f32 * 0.3
                        - 1.0
                })
            })
            .collect();
        Batch { images, labels }
    }
}

impl TrainBatches for Synthetic {
    fn batches_per_epoch(&self) -> usize {
        self.per_epoch
    }
    fn start_epoch(&mut self, epoch: usize, first_batch: usize) -> anyhow::Result<()> {
        self.pos = (epoch, first_batch);
        Ok(())
    }
    fn next_batch(&mut self) -> anyhow::Result<Batch> {
        let (e, b) = self.pos;
        self.pos.1 += 1;
        Ok(self.make(1000 * e as u64 + b as u64, self.batch))
    }
}

struct Val(Synthetic, bool);
impl EvalBatches for Val {
    fn views(&self) -> usize {
        1
    }
    fn restart(&mut self) -> anyhow::Result<()> {
        self.1 = false;
        Ok(())
    }
    fn next_batch(&mut self) -> anyhow::Result<Option<Batch>> {
        let done = std::mem::replace(&mut self.1, true);
        Ok((!done).then(|| self.0.make(999_999, 12)))
    }
}

fn run(
    dir: &std::path::Path,
    resume: bool,
    max_steps: Option<u64>,
) -> (Vec<f32>, alexnet::train::run::TrainOutcome) {
    let plan = Plan::new(&tiny_spec(false, false)).unwrap();
    let cfg = TrainConfig {
        stats: None,
        epochs: 3,
        schedule: "epochs:2".parse::<Schedule>().unwrap(),
        out_dir: dir.to_path_buf(),
        checkpoint_every: 2,
        max_steps,
        time_limit: None,
        stop_at_train_error: None,
        progress: false,
        data: None,
    };
    let (params, momentum, state) = starting_point(&plan, resume.then_some(dir), 4, 0.05).unwrap();
    let mut net = Network::new(&plan, vec![CpuDevice, CpuDevice], &params, state.seed).unwrap();
    if let Some(m) = momentum {
        net.set_velocities(&m).unwrap();
    }
    let mut data = Synthetic {
        plan: plan.clone(),
        batch: 4,
        per_epoch: 5,
        pos: (0, 0),
    };
    let mut val = Val(
        Synthetic {
            plan: plan.clone(),
            batch: 4,
            per_epoch: 1,
            pos: (0, 0),
        },
        false,
    );
    let mut replica = Replica::alone(net, 4);
    let outcome = train(&mut replica, state, &mut data, Some(&mut val), &cfg).unwrap();
    (flatten(&replica.net.params().unwrap()), outcome)
}

#[test]
fn a_run_stopped_mid_epoch_resumes_bit_exactly() {
    let straight_dir = tempfile::tempdir().unwrap();
    let (straight, outcome) = run(straight_dir.path(), false, None);
    assert_eq!(outcome.state.step, 15);
    assert_eq!(outcome.state.epoch, 3);
    // The schedule divided the rate once, after epoch 2.
    assert!(
        (outcome.state.lr - 0.005).abs() < 1e-9,
        "{}",
        outcome.state.lr
    );
    let eval = outcome.last_eval.unwrap();
    assert_eq!(eval.images, 12);
    assert!((0.0..=1.0).contains(&eval.top1_error) && eval.top5_error <= eval.top1_error);

    let split_dir = tempfile::tempdir().unwrap();
    // Stops after step 7: epoch 2, batch 2 of 5.
    let (_, first) = run(split_dir.path(), false, Some(7));
    assert_eq!(
        (
            first.state.step,
            first.state.epoch,
            first.state.batch_in_epoch
        ),
        (7, 1, 2)
    );
    let (resumed, second) = run(split_dir.path(), true, None);
    assert_eq!(second.state, outcome.state);
    assert_eq!(resumed, straight);

    let log = std::fs::read_to_string(straight_dir.path().join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.iter().filter(|l| l.get("loss").is_some()).count(), 15);
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.get("epoch_end").is_some())
            .count(),
        3
    );
    let last_loss = lines.iter().rev().find_map(|l| l["loss"].as_f64()).unwrap();
    let first_loss = lines[0]["loss"].as_f64().unwrap();
    assert!(last_loss.is_finite() && first_loss.is_finite());
}

#[test]
fn training_stops_at_the_goal_error_and_logs_each_epochs_training_error() {
    let dir = tempfile::tempdir().unwrap();
    let plan = Plan::new(&tiny_spec(false, false)).unwrap();
    // A goal of 100% error is met by the first epoch, whatever the network does.
    let cfg = TrainConfig {
        stats: None,
        epochs: 5,
        schedule: Schedule::Constant,
        out_dir: dir.path().to_path_buf(),
        checkpoint_every: 0,
        max_steps: None,
        time_limit: None,
        stop_at_train_error: Some(1.0),
        progress: false,
        data: None,
    };
    let (params, _, state) = starting_point(&plan, None, 4, 0.05).unwrap();
    let net = Network::new(&plan, vec![CpuDevice, CpuDevice], &params, state.seed).unwrap();
    let mut data = Synthetic {
        plan: plan.clone(),
        batch: 4,
        per_epoch: 3,
        pos: (0, 0),
    };
    let outcome = train(&mut Replica::alone(net, 4), state, &mut data, None, &cfg).unwrap();
    assert_eq!((outcome.state.epoch, outcome.state.step), (1, 3));
    let log = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
    let end: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    let e = end["train_top1_error"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&e) && end["epoch_end"] == 1, "{end}");
}

/// A source that takes its time, and fails at one batch.
struct Slow {
    inner: Synthetic,
    delay: std::time::Duration,
    fail_at: Option<usize>,
}

impl TrainBatches for Slow {
    fn batches_per_epoch(&self) -> usize {
        self.inner.batches_per_epoch()
    }
    fn start_epoch(&mut self, epoch: usize, first_batch: usize) -> anyhow::Result<()> {
        self.inner.start_epoch(epoch, first_batch)
    }
    fn next_batch(&mut self) -> anyhow::Result<Batch> {
        std::thread::sleep(self.delay);
        anyhow::ensure!(
            self.fail_at != Some(self.inner.pos.1),
            "batch {} is unreadable",
            self.inner.pos.1
        );
        self.inner.next_batch()
    }
}

#[test]
fn waiting_for_data_is_measured_and_a_failed_fetch_saves_the_step_before_it() {
    let plan = Plan::new(&tiny_spec(false, false)).unwrap();
    let cfg = |dir: &std::path::Path| TrainConfig {
        stats: None,
        epochs: 1,
        schedule: Schedule::Constant,
        out_dir: dir.to_path_buf(),
        checkpoint_every: 0,
        max_steps: None,
        time_limit: None,
        stop_at_train_error: None,
        progress: false,
        data: None,
    };
    let slow = |fail_at| Slow {
        inner: Synthetic {
            plan: plan.clone(),
            batch: 4,
            per_epoch: 6,
            pos: (0, 0),
        },
        delay: std::time::Duration::from_millis(40),
        fail_at,
    };
    let start = || {
        let (params, _, state) = starting_point(&plan, None, 4, 0.05).unwrap();
        let net = Network::new(&plan, vec![CpuDevice, CpuDevice], &params, state.seed).unwrap();
        (Replica::alone(net, 4), state)
    };
    // The tiny net's steps take about a millisecond: most of the run is the 40 ms waits.
    let dir = tempfile::tempdir().unwrap();
    let (mut net, state) = start();
    let outcome = train(&mut net, state, &mut slow(None), None, &cfg(dir.path())).unwrap();
    assert_eq!(outcome.state.step, 6);
    let share = outcome.data_wait_seconds / outcome.seconds;
    assert!(
        outcome.data_wait_seconds >= 0.24 && share > 0.5,
        "{outcome:?}"
    );
    let log = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
    let last_step: serde_json::Value = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l.get("loss").is_some())
        .last()
        .unwrap();
    assert!(
        last_step["data_wait_fraction"].as_f64().unwrap() > 0.5,
        "{last_step}"
    );

    // Batch 3 cannot be fetched (while step 2 runs): step 2 still counts and is saved.
    let dir = tempfile::tempdir().unwrap();
    let (mut net, state) = start();
    let e = train(&mut net, state, &mut slow(Some(3)), None, &cfg(dir.path())).unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("progress so far is saved") && msg.contains("batch 3 is unreadable"),
        "{msg}"
    );
    let (_, _, saved) = starting_point(&plan, Some(dir.path()), 4, 0.05).unwrap();
    assert_eq!((saved.step, saved.batch_in_epoch), (3, 3));
}
