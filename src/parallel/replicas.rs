//! Data-parallel replicas of the tower pair (issue #16; Krizhevsky's "One weird trick", 2014):
//! every replica holds the whole two-tower network, takes an equal slice of the global batch
//! (`slice::range`), and averages each tower's gradients with the other replicas' (a
//! [`Collective`]), so every replica applies the same update and the weights stay identical.
//! The learning rate is the recipe's: the mean over the replicas' mean gradients is the global
//! batch's mean gradient.

use super::collective::{Collective, LocalCollective};
use super::{Network, StepStats, slice};
use crate::device::Device;
use crate::model::Plan;
use crate::model::init::NetParams;
use anyhow::{Context, Result, anyhow};
use std::ops::Range;

/// One replica: the network and the samples of each global batch it takes.
pub struct Replica<D: Device> {
    pub net: Network<D>,
    pub rank: usize,
    pub replicas: usize,
    samples: Range<usize>,
}

impl<D: Device + 'static> Replica<D> {
    /// Replica `collective.rank()` of `collective.replicas()` for global batches of `batch`.
    pub fn new(
        mut net: Network<D>,
        collective: Box<dyn Collective<D>>,
        batch: usize,
    ) -> Result<Self> {
        let (rank, replicas) = (collective.rank(), collective.replicas());
        let samples = slice::range(batch, replicas, rank)?;
        net.join_replicas(collective, samples.start);
        Ok(Replica {
            net,
            rank,
            replicas,
            samples,
        })
    }

    /// The samples of each global batch this replica takes.
    pub fn samples(&self) -> Range<usize> {
        self.samples.clone()
    }

    /// This replica's part of a global batch: its images and labels.
    pub fn take<'a>(&self, images: &'a [f32], labels: &'a [u32]) -> Result<(&'a [f32], &'a [u32])> {
        let batch = self.replicas * self.samples.len();
        anyhow::ensure!(
            labels.len() == batch && images.len().is_multiple_of(batch),
            "replica {}: expected a global batch of {batch} samples, got {} labels and {} values",
            self.rank,
            labels.len(),
            images.len()
        );
        let per = images.len() / batch;
        let s = &self.samples;
        Ok((&images[s.start * per..s.end * per], &labels[s.clone()]))
    }

    /// One step on the replica's slice of a global batch; its stats are the global batch's.
    pub fn train_step(
        &mut self,
        images: &[f32],
        labels: &[u32],
        lr: f32,
        step: u64,
    ) -> Result<StepStats> {
        let (x, y) = self.take(images, labels)?;
        let local = self.net.train_step(x, y, lr, step)?;
        self.global_stats(local)
    }

    /// The global batch's loss and error counts from each replica's (equal slices: the mean of
    /// the losses and the sum of the counts). The loss travels as two f32 (value and remainder),
    /// so it keeps about 48 bits.
    pub fn global_stats(&mut self, local: StepStats) -> Result<StepStats> {
        let hi = local.loss as f32;
        let lo = (local.loss - hi as f64) as f32;
        let values = [hi, lo, local.top1_errors as f32, local.top5_errors as f32];
        let net = &mut self.net;
        let dev = &net.devices[0];
        let mut buf = dev.upload(&values)?;
        let replicas = self.replicas as f64;
        let c = net.collective.as_mut().expect("a replica has a collective");
        c.start_mean(0, dev, &mut [&mut buf])?;
        c.finish(std::slice::from_ref(dev))?;
        let mean = dev.download(&buf)?;
        Ok(StepStats {
            loss: mean[0] as f64 + mean[1] as f64,
            top1_errors: (mean[2] as f64 * replicas).round() as usize,
            top5_errors: (mean[3] as f64 * replicas).round() as usize,
        })
    }
}

/// A digest of a network's weights (XXH3 of every tensor's bytes, in order), for checking that
/// replicas hold the same.
pub fn digest(params: &NetParams) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for t in params.iter().flatten() {
        for x in t.weight.data.iter().chain(&t.bias.data) {
            h.update(&x.to_le_bytes());
        }
    }
    h.digest()
}

/// Runs `replicas` replicas of `plan` as threads of this process over a [`LocalCollective`]:
/// replica `r` gets the devices `devices(r)` makes, the same `params` and seed, and global
/// batches of `batch`; `body` drives each and its results come back in replica order. A
/// replica that fails makes the others fail at their next reduction, and the first error (by
/// replica) is returned.
pub fn run_in_process<D, T>(
    replicas: usize,
    devices: impl Fn(usize) -> Result<Vec<D>> + Sync,
    plan: &Plan,
    params: &NetParams,
    seed: u64,
    batch: usize,
    body: impl Fn(&mut Replica<D>) -> Result<T> + Sync,
) -> Result<Vec<T>>
where
    D: Device + 'static,
    T: Send,
{
    slice::range(batch, replicas, 0)?;
    let group = LocalCollective::group(replicas);
    let results: Vec<Result<T>> = std::thread::scope(|s| {
        let handles: Vec<_> = group
            .into_iter()
            .enumerate()
            .map(|(r, collective)| {
                let (devices, body) = (&devices, &body);
                s.spawn(move || -> Result<T> {
                    let net = Network::new(plan, devices(r)?, params, seed)?;
                    let mut replica = Replica::new(net, Box::new(collective), batch)?;
                    body(&mut replica).with_context(|| format!("replica {r} of {replicas}"))
                })
            })
            .collect();
        handles
            .into_iter()
            .enumerate()
            .map(|(r, h)| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("replica {r} of {replicas} panicked")))
            })
            .collect()
    });
    // The cause is the first replica that failed on its own; the others failed because it
    // left the group.
    let (ok, errors): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
    let errors: Vec<anyhow::Error> = errors.into_iter().filter_map(Result::err).collect();
    let left = |e: &anyhow::Error| format!("{e:#}").contains("left the group");
    match errors
        .iter()
        .position(|e| !left(e))
        .or((!errors.is_empty()).then_some(0))
    {
        Some(i) => Err(errors.into_iter().nth(i).expect("in range")),
        None => Ok(ok.into_iter().filter_map(Result::ok).collect()),
    }
}
