//! The two-tower network (paper §3.2): tower `t` of every layer lives on `devices[t]`;
//! activations cross between devices only where the plan says a layer reads all towers
//! (conv3, fc6, fc7, fc8 in `paper`). Forward, each tower gathers every tower's previous output
//! into one input (its own half plus a copy of the other's); backward, the gradient of each
//! half goes back to its owner and is added to the owner's own.
//!
//! Written against `Device` only, so the same code runs the towers on the CPU reference, on the
//! host executor, or on one or two GPUs. It knows nothing of data parallelism: a training step
//! calls [`GradientHooks`] where a layer's gradients are ready and where backward is done, and
//! `dist` hooks its collective in there.
//!
//! - `batch`: the activation buffers of a batch size, and putting a batch on the towers.
//! - `forward`, `backward`: the passes, layer by layer; `exchange` moves activations and their
//!   gradients between towers.
//! - `step`: a training step (forward, loss, backward, update) and what it measured.
//! - `staging`: the double-buffered input of a training loop.
//! - `update`: the SGD step.
//! - `state`: reading and replacing weights, gradients and momentum; memory held.

mod backward;
mod batch;
mod exchange;
mod forward;
mod staging;
mod state;
mod step;
mod update;

pub use step::StepStats;

use crate::device::Device;
use crate::model::Plan;
use crate::model::init::NetParams;
use anyhow::{Result, ensure};

/// What distribution hooks into a training step, as PyTorch DDP's reducer does: backward calls
/// `gradient_ready` for each tower's weight and bias gradients of a layer as soon as they are
/// queued (so a reduction can run beside the rest of backward), and `backward_done` once every
/// layer is queued, before the update reads them. The update reads the gradients as the hooks
/// left them.
pub trait GradientHooks<D: Device> {
    fn gradient_ready(&mut self, tower: usize, dev: &D, grads: &mut [&mut D::Buf]) -> Result<()>;
    fn backward_done(&mut self, devices: &[D]) -> Result<()>;
}

/// One tower's weights of a layer, with their gradients and momentum.
struct Weights<B> {
    w: B,
    b: B,
    grad_w: B,
    grad_b: B,
    vel_w: B,
    vel_b: B,
    /// This step's SGD step was already taken in backward (`update::Fused`), from a gradient
    /// that was not kept: `update` leaves `w` alone, and `grad_w` is stale until the next
    /// backward pass that keeps it.
    stepped: bool,
    grad_w_stale: bool,
}

/// What a layer holds on each of its active towers.
struct LayerState<B> {
    weights: Vec<Weights<B>>,
    /// Output activations, `[n, output]` per tower.
    out: Vec<B>,
    /// Gradient of the loss with respect to `out`.
    grad: Vec<B>,
    /// At an exchange: every tower's previous output gathered into this tower's input, its
    /// gradient, and a landing buffer on each *source* tower for the gradient coming back.
    gathered: Vec<B>,
    grad_gathered: Vec<B>,
    returned: Vec<B>,
    /// Max pooling: where each output's maximum lay in its window, for the backward pass.
    argmax: Vec<B>,
    /// A fully connected layer whose device takes its filter gradient and SGD step in one pass
    /// at this batch size (`Device::fuses_fc_sgd`), decided with the buffers.
    fuses_sgd: bool,
}

pub struct Network<D: Device> {
    plan: Plan,
    devices: Vec<D>,
    layers: Vec<LayerState<D::Buf>>,
    /// The batch size the activation buffers are allocated for (0: none yet).
    batch: usize,
    /// The images, on every tower.
    images: Vec<D::Buf>,
    /// How many images `images` holds (0: none loaded), and their labels where a training
    /// batch was loaded (empty after `predict`).
    loaded: usize,
    loaded_labels: Vec<u32>,
    /// On tower 0: the labels (as floats), the logits of the whole net, probabilities, their
    /// gradient, and each sample's loss.
    labels: Option<D::Buf>,
    logits: Option<D::Buf>,
    probs: Option<D::Buf>,
    grad_logits: Option<D::Buf>,
    losses: Option<D::Buf>,
    seed: u64,
    /// The double-buffered input's other slot (see `staging`).
    staging: staging::Staging<D::Buf>,
    /// The index of the batches' first sample in the global batch they are a slice of (a
    /// data-parallel replica's; see `DropoutGeom::first_sample`).
    first_sample: usize,
    /// Whether training steps keep the weights' gradients for `gradients` (see
    /// `keep_gradients`).
    keep_gradients: bool,
}

impl<D: Device> Network<D> {
    /// Places `params` (`params[layer][tower]`) on `devices` (one per tower).
    pub fn new(plan: &Plan, devices: Vec<D>, params: &NetParams, seed: u64) -> Result<Self> {
        ensure!(
            devices.len() == plan.spec.towers,
            "the network has {} towers but {} devices were given",
            plan.spec.towers,
            devices.len()
        );
        ensure!(
            params.len() == plan.layers.len(),
            "parameters are for another network: {} layers, not {}",
            params.len(),
            plan.layers.len()
        );
        let layers = plan
            .layers
            .iter()
            .zip(params)
            .map(|(lp, lparams)| {
                Ok(LayerState {
                    weights: state::place_weights(lp, lparams, &devices)?,
                    out: Vec::new(),
                    grad: Vec::new(),
                    gathered: Vec::new(),
                    grad_gathered: Vec::new(),
                    returned: Vec::new(),
                    argmax: Vec::new(),
                    fuses_sgd: false,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Network {
            plan: plan.clone(),
            devices,
            layers,
            batch: 0,
            images: Vec::new(),
            loaded: 0,
            loaded_labels: Vec::new(),
            labels: None,
            logits: None,
            probs: None,
            grad_logits: None,
            losses: None,
            seed,
            staging: Default::default(),
            first_sample: 0,
            keep_gradients: true,
        })
    }

    /// Makes the batches from now on the samples from `first` on of a larger global batch
    /// (a data-parallel replica's slice), whose dropout masks they draw.
    pub fn set_first_sample(&mut self, first: usize) {
        self.first_sample = first;
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub fn devices(&self) -> &[D] {
        &self.devices
    }
}
