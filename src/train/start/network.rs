//! The network a run trains and where it starts from: the request's (or the resumed run's)
//! spec at the precision settled, sized to the data, and fresh or resumed weights.

use super::RunRequest;
use super::resume::Resume;
use crate::model::Plan;
use crate::model::init::NetParams;
use crate::model::spec::NetSpec;
use crate::train::checkpoint::TrainState;
use crate::train::run::{fresh_start, resumed_start};
use crate::train::settle;
use anyhow::{Context, Result};
use std::path::Path;

/// The network: the checkpoint's when resuming without a choice, else the arguments; at the
/// precision asked, else the resumed run's. A resumed run is checked to be of this network and
/// batch.
pub(super) fn settle_network(req: &RunRequest, resume: Option<&Resume>) -> Result<(NetSpec, Plan)> {
    let synthetic_default = req.data.is_none() && resume.is_none();
    let mut spec = match (resume, req.net.chosen()) {
        (Some(r), false) => r.ck.spec.clone(),
        _ => req
            .net
            .spec_or(if synthetic_default { "cifar" } else { "paper" })?,
    };
    // A resume continues at the precision the run was trained at, unless told otherwise.
    spec.precision = settle::precision(
        req.precision,
        resume.map(|r| r.ck.spec.precision),
        spec.precision,
    );
    let plan = Plan::new(&spec).context("the network spec does not make sense")?;
    if let Some(r) = resume {
        r.ck.check_model(&plan)
            .with_context(|| format!("cannot resume from {}", r.file.display()))?;
        settle::check_resumed_batch(r.ck.state.batch, req.batch)?;
    }
    Ok((spec, plan))
}

/// `spec` with its classifier sized to `classes`, saying so.
pub(super) fn sized_to(spec: NetSpec, classes: usize) -> Result<(NetSpec, Plan)> {
    let (sized, note) = spec.with_classes(classes)?;
    eprintln!(
        "{}: classifier sized to the training set's {classes} classes{}",
        sized.name,
        note.map_or(String::new(), |n| format!(" ({n})"))
    );
    let plan = Plan::new(&sized).context("the network spec does not make sense")?;
    Ok((sized, plan))
}

/// The weights, momentum and state to start from: the resumed run's (saying where it stands),
/// else a fresh initialisation.
pub(super) fn starting_point(
    req: &RunRequest,
    resume: Option<Resume>,
    plan: &Plan,
    out: &Path,
    synthetic: bool,
) -> Result<(NetParams, Option<NetParams>, TrainState)> {
    let spec = &plan.spec;
    let (params, momentum, mut state) = match resume {
        Some(r) => {
            let trained_at = r.ck.spec.precision;
            let precision = if spec.precision == trained_at {
                format!("at the run's precision, {trained_at} (--precision changes it)")
            } else {
                format!(
                    "at {}, as --precision asks (the run was trained at {trained_at})",
                    spec.precision
                )
            };
            eprintln!(
                "resuming {} at epoch {}, batch {} (step {}), {precision}",
                out.display(),
                r.ck.state.epoch + 1,
                r.ck.state.batch_in_epoch,
                r.ck.state.step
            );
            resumed_start(r.ck)
        }
        None => fresh_start(
            plan,
            req.seed,
            settle::initial_lr(req.lr, synthetic, spec.optim.lr),
        ),
    };
    state.batch = req.batch;
    Ok((params, momentum, state))
}
