//! One training job per replica of this process: what it trains from, on what batches, and
//! how it starts on the devices it is given (alone, or as a replica with a collective).

use crate::device::Device;
use crate::dist::collective::Collective;
use crate::dist::dispatch::{Job, ReplicaJob};
use crate::dist::replicas::Replica;
use crate::engine::Network;
use crate::model::Plan;
use crate::model::init::NetParams;
use crate::train::batches::{EvalBatches, LoaderBatches, LoaderEval};
use crate::train::checkpoint::TrainState;
use crate::train::replicated::Peers;
use crate::train::run::{TrainConfig, TrainOutcome, interrupt_flag, train};
use anyhow::{Result, ensure};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub(super) struct TrainJob {
    pub(super) plan: Plan,
    pub(super) batch: usize,
    pub(super) params: NetParams,
    pub(super) momentum: Option<NetParams>,
    pub(super) state: TrainState,
    pub(super) train: LoaderBatches,
    pub(super) val: Option<LoaderEval>,
    pub(super) cfg: TrainConfig,
    /// Set once the devices hold the network: the run has begun (see [`RunFolder::start_flag`]).
    pub(super) started: Arc<AtomicBool>,
}

impl Job for TrainJob {
    type Output = TrainOutcome;
    fn run<D: Device>(self, devices: Vec<D>) -> Result<TrainOutcome> {
        self.run_on(devices, None)
    }
}

impl ReplicaJob for TrainJob {
    type Output = TrainOutcome;
    fn run<D: Device + 'static>(
        self,
        devices: Vec<D>,
        collective: Box<dyn Collective<D>>,
    ) -> Result<TrainOutcome> {
        self.run_on(devices, Some(collective))
    }
}

impl TrainJob {
    /// One network on `devices`, or with `collective` one data-parallel replica, whose batches
    /// are its slice of each global batch (the loader makes only that slice).
    fn run_on<D: Device>(
        mut self,
        devices: Vec<D>,
        collective: Option<Box<dyn Collective<D>>>,
    ) -> Result<TrainOutcome> {
        let names: Vec<String> = devices.iter().map(|d| d.describe()).collect();
        let who = match &collective {
            Some(c) => format!("replica {} of {}: ", c.rank(), c.replicas()),
            None => String::new(),
        };
        eprintln!("{who}towers on: {}", names.join(" | "));
        let mut net = Network::new(&self.plan, devices, &self.params, self.state.seed)?;
        // Training reads no gradients: the fc layers may take their update in backward.
        net.keep_gradients(false);
        if let Some(m) = &self.momentum {
            net.set_velocities(m)?;
        }
        let mut replica = match collective {
            Some(c) => Replica::new(net, c, self.batch)?,
            None => Replica::alone(net, self.batch),
        };
        let batch = replica.samples().len();
        replica.net.reserve_batch(batch)?;
        let mb: Vec<String> = replica
            .net
            .bytes_per_tower()
            .iter()
            .map(|b| format!("{:.0} MB", *b as f64 / 1e6))
            .collect();
        eprintln!(
            "{who}memory held per tower at batch {batch}: {} (before op workspaces)",
            mb.join(" | ")
        );
        ensure!(
            !interrupt_flag().load(Ordering::SeqCst),
            "interrupted before training began; the run folder is as it was"
        );
        if let Some(peers) = Peers::of(&replica) {
            // The place in the run and the arguments that shape every step.
            let place = format!("{:?} batch {}", self.state, self.batch);
            let place = xxhash_rust::xxh3::xxh3_64(place.as_bytes());
            peers.check_same_start(&mut replica, place)?;
        }
        self.started.store(true, Ordering::SeqCst);
        let val = self.val.as_mut().map(|v| v as &mut dyn EvalBatches);
        train(&mut replica, self.state, &mut self.train, val, &self.cfg)
    }
}
