//! Data-parallel replicas of the tower pair (issue #16; Krizhevsky's "One weird trick", 2014):
//! every replica holds the whole two-tower network, takes an equal slice of the global batch
//! (`data::shard::range`), and averages each tower's gradients with the other replicas' (a
//! [`Collective`]), so every replica applies the same update and the weights stay identical.
//! The learning rate is the recipe's: the mean over the replicas' mean gradients is the global
//! batch's mean gradient.

use super::collective::{Collective, LocalCollective};
use crate::data::shard;
use crate::device::Device;
use crate::engine::{GradientHooks, Network, StepStats};
use crate::model::Plan;
use crate::model::init::NetParams;
use anyhow::{Context, Result, anyhow};
use std::ops::Range;

/// One replica: the network, the collective it averages its gradients through (none for a
/// network trained alone), and the samples of each global batch it takes.
pub struct Replica<D: Device> {
    /// Declared first so that it is dropped first: dropping the devices waits for their
    /// streams, and an all-reduce whose peer is gone never completes until its communicator is
    /// aborted (NCCL's drop does that).
    collective: Option<Box<dyn Collective<D>>>,
    pub net: Network<D>,
    pub rank: usize,
    pub replicas: usize,
    samples: Range<usize>,
}

impl<D: Device> Replica<D> {
    /// Replica `collective.rank()` of `collective.replicas()` for global batches of `batch`.
    pub fn new(
        mut net: Network<D>,
        collective: Box<dyn Collective<D>>,
        batch: usize,
    ) -> Result<Self> {
        let (rank, replicas) = (collective.rank(), collective.replicas());
        let samples = shard::range(batch, replicas, rank)?;
        net.set_first_sample(samples.start);
        Ok(Replica {
            collective: Some(collective),
            net,
            rank,
            replicas,
            samples,
        })
    }

    /// `net` trained alone, on whole batches of `batch`: the one replica, with no one to
    /// average with.
    pub fn alone(net: Network<D>, batch: usize) -> Self {
        Replica {
            collective: None,
            net,
            rank: 0,
            replicas: 1,
            samples: 0..batch,
        }
    }

    /// Whether other replicas train beside this one.
    pub fn has_peers(&self) -> bool {
        self.collective.is_some()
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
        let hooks = self
            .collective
            .as_mut()
            .map(|c| c as &mut dyn GradientHooks<D>);
        let local = self.net.train_step_with(x, y, lr, step, hooks)?;
        self.check_in_step()?;
        self.global_stats(local)
    }

    /// `Network::queue_staged_step` with this replica's gradients averaged with the others'.
    pub fn queue_staged_step(&mut self, lr: f32, step: u64) -> Result<()> {
        let hooks = self
            .collective
            .as_mut()
            .map(|c| c as &mut dyn GradientHooks<D>);
        self.net.queue_staged_step_with(lr, step, hooks)?;
        self.check_in_step()
    }

    /// In debug builds, that every replica applied the same averaged gradient to the same
    /// weights.
    fn check_in_step(&mut self) -> Result<()> {
        if cfg!(debug_assertions) && self.has_peers() {
            let digest = digest(&self.net.params()?);
            self.check_same(digest)?;
        }
        Ok(())
    }

    /// The global batch's loss and error counts from each replica's (see [`Replica::global_stats_with`]).
    pub fn global_stats(&mut self, local: StepStats) -> Result<StepStats> {
        Ok(self.global_stats_with(local, &[])?.0)
    }

    /// The global batch's loss and error counts from each replica's (equal slices: the mean of
    /// the losses and the sum of the counts), and the mean of `extra` values passed alongside
    /// in the same round.
    pub fn global_stats_with(
        &mut self,
        local: StepStats,
        extra: &[f32],
    ) -> Result<(StepStats, Vec<f32>)> {
        let [hi, lo] = split(local.loss);
        let mut values = vec![hi, lo, local.top1_errors as f32, local.top5_errors as f32];
        values.extend_from_slice(extra);
        let replicas = self.replicas as f64;
        let mean = self.host_mean(&values)?;
        let stats = StepStats {
            loss: mean[0] as f64 + mean[1] as f64,
            top1_errors: (mean[2] as f64 * replicas).round() as usize,
            top5_errors: (mean[3] as f64 * replicas).round() as usize,
        };
        Ok((stats, mean[4..].to_vec()))
    }

    /// The mean over the replicas of a few host values (one round; every replica passes as many
    /// values at the same point of its run). Alone, the values themselves.
    pub fn host_mean(&mut self, values: &[f32]) -> Result<Vec<f32>> {
        let Some(c) = self.collective.as_mut() else {
            return Ok(values.to_vec());
        };
        let dev = &self.net.devices()[0];
        let mut buf = dev.upload(values)?;
        c.start_mean(0, dev, &mut [&mut buf])?;
        c.finish(std::slice::from_ref(dev))?;
        dev.download(&buf)
    }

    /// [`Collective::check_same`] with the other replicas (alone: nothing to check).
    pub fn check_same(&mut self, digest: u64) -> Result<()> {
        match self.collective.as_mut() {
            Some(c) => c.check_same(&self.net.devices()[0], digest),
            None => Ok(()),
        }
    }
}

/// `x` as two f32 (value and remainder), which keep about 48 bits through a mean.
pub fn split(x: f64) -> [f32; 2] {
    let hi = x as f32;
    [hi, (x - hi as f64) as f32]
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
    shard::range(batch, replicas, 0)?;
    let group = take_each(LocalCollective::group(replicas));
    on_threads(replicas, |r| {
        let collective = group.take(r);
        let net = Network::new(plan, devices(r)?, params, seed)?;
        let mut replica = Replica::new(net, Box::new(collective), batch)?;
        body(&mut replica)
    })
}

/// Items handed out once each by index, to threads that each take their own.
pub struct TakeEach<T>(std::sync::Mutex<Vec<Option<T>>>);

pub fn take_each<T>(items: Vec<T>) -> TakeEach<T> {
    TakeEach(std::sync::Mutex::new(items.into_iter().map(Some).collect()))
}

impl<T> TakeEach<T> {
    pub fn take(&self, i: usize) -> T {
        let mut items = self.0.lock().unwrap_or_else(|p| p.into_inner());
        items[i].take().expect("each item is taken once")
    }
}

/// Runs `body(r)` for `r` in `0..replicas` on threads of their own and returns the results in
/// replica order. A replica that fails makes the others fail at their next reduction (it
/// leaves the group), so the error returned is the cause: the first replica's (by rank) that
/// did not fail because another left.
pub fn on_threads<T: Send>(
    replicas: usize,
    body: impl Fn(usize) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let results: Vec<Result<T>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..replicas)
            .map(|r| {
                let body = &body;
                s.spawn(move || body(r).with_context(|| format!("replica {r} of {replicas}")))
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
    let (ok, errors): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
    let errors: Vec<anyhow::Error> = errors.into_iter().filter_map(Result::err).collect();
    let left = super::collective::only_peer_failed;
    match errors
        .iter()
        .position(|e| !left(e))
        .or((!errors.is_empty()).then_some(0))
    {
        Some(i) => Err(errors.into_iter().nth(i).expect("in range")),
        None => Ok(ok.into_iter().filter_map(Result::ok).collect()),
    }
}
