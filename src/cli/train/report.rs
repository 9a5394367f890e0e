//! What `alexnet train` says at the start of training and at its end.

use crate::model::Plan;
use crate::model::spec::NetSpec;
use crate::train::plot::plot_metrics;
use crate::train::run::TrainOutcome;
use std::path::Path;

/// The run's first line: the network and how it trains.
pub(super) fn announce(
    spec: &NetSpec,
    plan: &Plan,
    batch: usize,
    replicas: usize,
    batches_per_epoch: usize,
    lr: f32,
) {
    eprintln!(
        "{}: {} parameters, {} towers, batch {}{}, {} batches per epoch, learning rate {}, {} products",
        spec.name,
        crate::model::plan::group_digits(plan.params()),
        spec.towers,
        batch,
        if replicas > 1 {
            format!(
                " ({replicas} data-parallel replicas of {} each)",
                batch / replicas
            )
        } else {
            String::new()
        },
        batches_per_epoch,
        lr,
        spec.precision
    );
}

/// What the run did and where its files are; how to continue it.
pub(super) fn report_outcome(
    outcome: &TrainOutcome,
    out: &Path,
    epochs: usize,
    batch: usize,
    secs: f64,
) {
    let png = out.join("curves.png");
    if let Err(e) = plot_metrics(&out.join("metrics.jsonl"), &png, false) {
        eprintln!("warning: could not draw the curves: {e:#}");
    }
    let s = &outcome.state;
    println!(
        "{} after {} steps ({} epochs and {} batches) in {:.0} s.",
        if outcome.interrupted {
            "Interrupted"
        } else {
            "Stopped"
        },
        s.step,
        s.epoch,
        s.batch_in_epoch,
        secs
    );
    let waited = outcome.data_wait_seconds / outcome.seconds.max(1e-9);
    if waited >= crate::train::report::DATA_WAIT_SHOWN {
        println!(
            "The steps waited {:.0} s for data ({:.0}% of the run): the loader set the pace. A pack \
             (alexnet prepare --pack) decodes several times faster; more --threads help too.",
            outcome.data_wait_seconds,
            100.0 * waited
        );
    }
    if let Some(e) = outcome.last_eval {
        println!(
            "Validation: top-1 error {:.2}%, top-5 error {:.2}% ({} images).",
            100.0 * e.top1_error,
            100.0 * e.top5_error,
            e.images
        );
    }
    println!(
        "Checkpoint {}; metrics {}; curves {}.",
        outcome.checkpoint.display(),
        out.join("metrics.jsonl").display(),
        png.display()
    );
    if s.epoch < epochs {
        println!(
            "Continue with: alexnet train --resume {} --batch {}",
            out.display(),
            batch
        );
    }
}
