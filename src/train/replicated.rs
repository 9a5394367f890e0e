//! What the training loop of a data-parallel replica (issue #16) does beyond one network's:
//! every replica runs the same loop on its slice of each global batch, and these are the points
//! where the replicas must agree. They agree through the network's collective, whose means are
//! bit-identical on every replica, so every decision taken from them (stop, learning-rate
//! change, goal reached) is the same everywhere and no replica runs a step the others skip.

use super::batches::EvalBatches;
use super::evaluate::{EvalResult, EvalSums, evaluate, score};
use crate::device::Device;
use crate::dist::replicas::{Replica, digest, split};
use crate::engine::StepStats;
use anyhow::{Result, ensure};

/// This replica's place among the others.
#[derive(Clone, Copy, Debug)]
pub struct Peers {
    pub rank: usize,
    pub replicas: usize,
}

impl Peers {
    /// `None` for a network trained alone: the loop is then the single network's.
    pub fn of<D: Device>(replica: &Replica<D>) -> Option<Peers> {
        replica.has_peers().then_some(Peers {
            rank: replica.rank,
            replicas: replica.replicas,
        })
    }

    /// Rank 0 alone writes the run folder (checkpoints, metrics, curves): the weights are the
    /// same on every replica, and one writer needs no shared filesystem and no locking.
    pub fn writes(&self) -> bool {
        self.rank == 0
    }

    /// The global batch's stats from this replica's, and whether any replica wants to stop
    /// (interrupted, or out of time by its own clock) before the next step.
    pub(super) fn after_step<D: Device>(
        &self,
        replica: &mut Replica<D>,
        local: StepStats,
        wants_stop: bool,
    ) -> Result<(StepStats, bool)> {
        let (stats, extra) =
            replica.global_stats_with(local, &[f32::from(u8::from(wants_stop))])?;
        Ok((stats, extra[0] > 0.0))
    }

    /// The sums over the whole evaluation set from each replica's share of its batches. The
    /// counts are whole numbers below 2^24 (exact in f32, and so is their mean times the
    /// replica count below 2^8 replicas); the loss travels as two f32.
    pub(super) fn eval_sums<D: Device>(
        &self,
        replica: &mut Replica<D>,
        mine: EvalSums,
    ) -> Result<EvalSums> {
        ensure!(
            mine.images < 1 << 24,
            "{} evaluation images on one replica: more than the exact range of the reduction",
            mine.images
        );
        let [hi, lo] = split(mine.loss);
        let values = [
            mine.images as f32,
            mine.top1 as f32,
            mine.top5 as f32,
            hi,
            lo,
        ];
        let mean = replica.host_mean(&values)?;
        let r = self.replicas as f64;
        let count = |m: f32| (m as f64 * r).round() as usize;
        Ok(EvalSums {
            images: count(mean[0]),
            top1: count(mean[1]),
            top5: count(mean[2]),
            loss: (mean[3] as f64 + mean[4] as f64) * r,
        })
    }

    /// Fails unless every replica starts from the same weights, momentum and `place` (a digest
    /// of the run's state and arguments): a rank that resumed another checkpoint, or was given
    /// other arguments, would train something else in lockstep with the others and corrupt the
    /// run silently.
    pub fn check_same_start<D: Device>(&self, replica: &mut Replica<D>, place: u64) -> Result<()> {
        let net = &replica.net;
        let digest = digest(&net.params()?)
            ^ digest(&net.velocities()?).rotate_left(1)
            ^ place.rotate_left(2);
        let rank = self.rank;
        replica.check_same(digest).map_err(|e| {
            e.context(format!(
                "replica {rank}: the replicas do not start from the same weights, momentum, step and arguments (every rank must resume the same checkpoint with the same arguments)"
            ))
        })
    }
}

/// [`evaluate`], or for a replica, its share of the batches (the loader gives it every
/// replicas-th) added up with the others'.
pub(super) fn evaluate_replicated<D: Device>(
    replica: &mut Replica<D>,
    data: &mut dyn EvalBatches,
    peers: Option<Peers>,
) -> Result<EvalResult> {
    match peers {
        None => evaluate(&mut replica.net, data),
        Some(p) => {
            let mine = score(&mut replica.net, data)?;
            p.eval_sums(replica, mine)?.result()
        }
    }
}
