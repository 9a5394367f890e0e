//! The towers and their exchanges (paper §3.2): tower `t` of every layer lives on `devices[t]`;
//! activations cross between devices only where the plan says a layer reads all towers
//! (conv3, fc6, fc7, fc8 in `paper`). Forward, each tower gathers every tower's previous output
//! into one input (its own half plus a copy of the other's); backward, the gradient of each
//! half goes back to its owner and is added to the owner's own.
//!
//! Written against `Device` only, so the same code runs the towers on the CPU reference, on the
//! host executor, or on one or two GPUs.

pub mod collective;
pub mod rendezvous;
pub mod replicas;
pub mod slice;
mod staging;
pub mod tcp_collective;
mod update;

use crate::device::{Block, Device};
use crate::model::init::NetParams;
use crate::model::spec::Layer;
use crate::model::{LayerPlan, Plan};
use crate::ops::dropout::DropoutGeom;
use crate::tensor::Tensor;
use anyhow::{Context, Result, bail, ensure};

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
}

/// What one training step measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    pub loss: f64,
    /// Samples of the batch whose label was not the top-scoring class.
    pub top1_errors: usize,
    pub top5_errors: usize,
}

/// Whether layer `l` is a convolution whose ReLU (layer `l + 1`) is fused into it: the
/// convolution writes the ReLU's output directly (one pass over it instead of three), the ReLU's
/// forward is skipped, and the convolution keeps no output of its own (its backward pass reads
/// only its input and the ReLU's gradient).
fn fuses_relu(plan: &Plan, l: usize) -> bool {
    match (plan.layers.get(l), plan.layers.get(l + 1)) {
        (Some(a), Some(b)) => {
            matches!(a.layer, Layer::Conv(_))
                && matches!(b.layer, Layer::Relu(_))
                && !b.exchange
                && a.active_towers == b.active_towers
        }
        _ => false,
    }
}

/// Philox stream names: disjoint ranges for initialisation (see `model::init`) and dropout.
const DROPOUT_STREAMS: u64 = 2 << 56;

fn dropout_stream(step: u64, layer: usize) -> u64 {
    DROPOUT_STREAMS | (step << 16) | layer as u64
}

pub struct Network<D: Device> {
    /// Data parallel (see `replicas`): how each tower's gradients are averaged with the other
    /// replicas'. Declared first so that it is dropped first: dropping the devices waits for
    /// their streams, and an all-reduce whose peer is gone never completes until its
    /// communicator is aborted (NCCL's drop does that).
    collective: Option<Box<dyn collective::Collective<D>>>,
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
    /// Where this replica's batch starts in the global batch (for dropout; see `collective`).
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
        let mut layers = Vec::with_capacity(plan.layers.len());
        for (lp, lparams) in plan.layers.iter().zip(params) {
            let mut weights = Vec::new();
            if let Some(shape) = lp.weight_shape() {
                ensure!(
                    lparams.len() == lp.active_towers,
                    "{}: parameters for {} towers, the layer has {}",
                    lp.name(),
                    lparams.len(),
                    lp.active_towers
                );
                for (t, p) in lparams.iter().enumerate() {
                    ensure!(
                        p.weight.shape == shape && p.bias.shape == [shape[0]],
                        "{} tower {t}: weight {:?} and bias {:?} do not fit the layer's {:?}",
                        lp.name(),
                        p.weight.shape,
                        p.bias.shape,
                        shape
                    );
                    let dev = &devices[t];
                    weights.push(Weights {
                        w: dev.upload(&p.weight.data)?,
                        b: dev.upload(&p.bias.data)?,
                        grad_w: dev.alloc(p.weight.len())?,
                        grad_b: dev.alloc(p.bias.len())?,
                        vel_w: dev.alloc(p.weight.len())?,
                        stepped: false,
                        grad_w_stale: false,
                        vel_b: dev.alloc(p.bias.len())?,
                    });
                }
            }
            layers.push(LayerState {
                weights,
                out: Vec::new(),
                grad: Vec::new(),
                gathered: Vec::new(),
                grad_gathered: Vec::new(),
                returned: Vec::new(),
                argmax: Vec::new(),
            });
        }
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
            collective: None,
            first_sample: 0,
            keep_gradients: true,
        })
    }

    /// Makes this network one data-parallel replica: from now on every tower's gradients are
    /// replaced by their mean over the replicas of `collective`, each layer's as soon as backward
    /// has produced them (so the reduction overlaps the rest of backward where the collective
    /// runs beside the device), and its batches are the samples from `first_sample` on of the
    /// global batch, whose dropout masks they draw.
    pub fn join_replicas(
        &mut self,
        collective: Box<dyn collective::Collective<D>>,
        first_sample: usize,
    ) {
        self.collective = Some(collective);
        self.first_sample = first_sample;
    }

    /// The collective this replica averages with, if it is one.
    pub fn collective(&mut self) -> Option<&mut (dyn collective::Collective<D> + 'static)> {
        self.collective.as_deref_mut()
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub fn devices(&self) -> &[D] {
        &self.devices
    }

    /// Allocates the activation buffers for batches of `n` (done by the first pass of each new
    /// batch size; callable ahead to learn the memory a batch size takes).
    pub fn reserve_batch(&mut self, n: usize) -> Result<()> {
        if self.batch == n {
            return Ok(());
        }
        let input_len =
            self.plan.spec.input.channels * self.plan.spec.input.size * self.plan.spec.input.size;
        self.images = self
            .devices
            .iter()
            .map(|d| d.alloc(n * input_len))
            .collect::<Result<_>>()?;
        for (l, lp) in self.plan.layers.iter().enumerate() {
            let prev_active = if l == 0 {
                self.devices.len()
            } else {
                self.plan.layers[l - 1].active_towers
            };
            let fused = fuses_relu(&self.plan, l);
            let st = &mut self.layers[l];
            let on = |t: usize, len: usize| self.devices[t].alloc(n * len);
            st.out = if fused {
                Vec::new()
            } else {
                (0..lp.active_towers)
                    .map(|t| on(t, lp.output.len()))
                    .collect::<Result<_>>()?
            };
            st.grad = (0..lp.active_towers)
                .map(|t| on(t, lp.output.len()))
                .collect::<Result<_>>()?;
            if matches!(lp.layer, Layer::MaxPool(_)) {
                st.argmax = (0..lp.active_towers)
                    .map(|t| on(t, lp.output.len()))
                    .collect::<Result<_>>()?;
            }
            if lp.exchange {
                st.gathered = (0..lp.active_towers)
                    .map(|t| on(t, lp.input.len()))
                    .collect::<Result<_>>()?;
                st.grad_gathered = (0..lp.active_towers)
                    .map(|t| on(t, lp.input.len()))
                    .collect::<Result<_>>()?;
                let prev_len = self.plan.layers[l - 1].output.len();
                st.returned = (0..prev_active)
                    .map(|s| on(s, prev_len))
                    .collect::<Result<_>>()?;
            }
        }
        let classes = self.plan.classes;
        let first = &self.devices[0];
        self.labels = Some(first.alloc(n)?);
        self.logits = Some(first.alloc(n * classes)?);
        self.probs = Some(first.alloc(n * classes)?);
        self.grad_logits = Some(first.alloc(n * classes)?);
        self.losses = Some(first.alloc(n)?);
        self.batch = n;
        self.loaded = 0;
        Ok(())
    }

    /// Refuses `images` unless they are `n > 0` inputs of the network's size; returns the
    /// values per image.
    fn check_images(&self, images: &[f32], n: usize) -> Result<usize> {
        let input = self.plan.spec.input;
        let len = input.channels * input.size * input.size;
        ensure!(
            n > 0 && images.len() == n * len,
            "expected {n} images of {}x{}x{}, got {} values",
            input.size,
            input.size,
            input.channels,
            images.len()
        );
        Ok(len)
    }

    /// Puts `images` (`[n, c, size, size]`) on every tower: one upload from the host, to tower
    /// 0, then device-to-device copies to the others (a peer copy between GPUs), so the host bus
    /// carries each batch once.
    fn load_images(&mut self, images: &[f32], n: usize) -> Result<()> {
        let len = self.check_images(images, n)?;
        self.reserve_batch(n)?;
        self.loaded = 0;
        self.images[0] = self.devices[0].upload(images)?;
        let (first, others) = self.images.split_at_mut(1);
        let whole = Block {
            offset: 0,
            pitch: n * len,
        };
        for (dev, buf) in self.devices[1..].iter().zip(others) {
            dev.copy_2d(&first[0], whole, buf, whole, n * len, 1)?;
        }
        self.loaded = n;
        Ok(())
    }

    /// Puts a training batch on the devices (`load_images`, and the labels on tower 0), for
    /// `train_loaded`.
    pub fn load_batch(&mut self, images: &[f32], labels: &[u32]) -> Result<()> {
        let floats = crate::device::labels_as_floats(labels, self.plan.classes)?;
        self.loaded_labels.clear();
        self.load_images(images, labels.len())?;
        let buf = self.labels.as_mut().expect("allocated with the batch");
        *buf = self.devices[0].upload(&floats)?;
        self.loaded_labels = labels.to_vec();
        Ok(())
    }

    /// The forward pass over the loaded images, leaving the logits of the whole net on tower 0.
    /// `step` names the dropout masks in training; `train: false` applies the paper's test-time
    /// dropout scaling instead.
    fn forward(&mut self, train: bool, step: u64) -> Result<()> {
        let n = self.loaded;
        for l in 0..self.plan.layers.len() {
            if l > 0 && fuses_relu(&self.plan, l - 1) {
                continue; // computed by the convolution before it
            }
            self.forward_layer(l, n, train, step)
                .with_context(|| format!("forward {}", self.plan.layers[l].name()))?;
        }
        // Gather the classifier's slices into the logits on tower 0.
        let last = self.plan.layers.last().expect("plans have layers");
        let (units, classes) = (last.output.len(), self.plan.classes);
        let logits = self.logits.as_mut().expect("allocated with the batch");
        for (t, out) in self
            .layers
            .last()
            .expect("plans have layers")
            .out
            .iter()
            .enumerate()
        {
            self.devices[0].copy_2d(
                out,
                Block {
                    offset: 0,
                    pitch: units,
                },
                logits,
                Block {
                    offset: t * units,
                    pitch: classes,
                },
                units,
                n,
            )?;
        }
        Ok(())
    }

    /// The softmax of the logits into `probs`, its loss gradient and each sample's loss.
    fn softmax(&mut self) -> Result<()> {
        self.devices[0].softmax_xent(
            self.loaded,
            self.plan.classes,
            self.logits.as_ref().unwrap(),
            self.labels.as_ref().unwrap(),
            self.probs.as_mut().unwrap(),
            self.grad_logits.as_mut().unwrap(),
            self.losses.as_mut().unwrap(),
        )
    }

    fn forward_layer(&mut self, l: usize, n: usize, train: bool, step: u64) -> Result<()> {
        let lp = &self.plan.layers[l];
        let prec = self.plan.spec.precision;
        let fused = fuses_relu(&self.plan, l);
        let (before, rest) = self.layers.split_at_mut(l);
        let (st, after) = rest.split_first_mut().expect("layer l exists");
        let prev_out: &[D::Buf] = if l == 0 {
            &self.images
        } else {
            &before[l - 1].out
        };
        if lp.exchange {
            // Every tower's previous output, side by side, on every active tower. The copies
            // between towers go on copy streams, as backward's do; every tower joins them before
            // this layer computes, since its input needs them all. (So forward gains no overlap
            // here: that would take splitting the layer's sum into own and other halves.)
            let prev_len = self.plan.layers[l - 1].output.len();
            for (t, gathered) in st.gathered.iter_mut().enumerate() {
                for (s, src) in prev_out.iter().enumerate() {
                    self.devices[t].copy_2d_async(
                        src,
                        Block {
                            offset: 0,
                            pitch: prev_len,
                        },
                        gathered,
                        Block {
                            offset: s * prev_len,
                            pitch: lp.input.len(),
                        },
                        prev_len,
                        n,
                    )?;
                }
            }
            for dev in &self.devices {
                dev.join_copies()?;
            }
        }
        for t in 0..lp.active_towers {
            let dev = &self.devices[t];
            let x = if lp.exchange {
                // The planted fault: tower 1 reads tower 0's copy of the input.
                let planted = t == 1 && crate::planted::planted("peer-kernel");
                &st.gathered[if planted { 0 } else { t }]
            } else {
                &prev_out[t]
            };
            if fused {
                let (wt, y) = (&st.weights[t], &mut after[0].out[t]);
                dev.conv_forward_relu(&lp.conv_geom(n), prec, x, &wt.w, &wt.b, y)?;
                continue;
            }
            let y = &mut st.out[t];
            match &lp.layer {
                Layer::Conv(_) => {
                    let wt = &st.weights[t];
                    dev.conv_forward(&lp.conv_geom(n), prec, x, &wt.w, &wt.b, y)?;
                }
                Layer::Fc(_) => {
                    let wt = &st.weights[t];
                    dev.fc_forward(&lp.fc_geom(n), prec, x, &wt.w, &wt.b, y)?;
                }
                Layer::Relu(_) => dev.relu_forward(x, y)?,
                Layer::Tanh(_) => dev.tanh_forward(x, y)?,
                Layer::Lrn(_) => dev.lrn_forward(&lp.lrn_geom(n), x, y)?,
                Layer::SpatialNorm(_) => {
                    dev.spatial_norm_forward(&lp.spatial_norm_geom(n), x, y)?
                }
                Layer::MaxPool(_) => {
                    dev.max_pool_forward(&lp.pool_geom(n), x, y, &mut st.argmax[t])?
                }
                Layer::Dropout(_) if train => {
                    let g = dropout_geom(lp, t, n, self.seed, step);
                    slice::dropout(dev, &g, self.first_sample, false, x, y)?
                }
                Layer::Dropout(d) => dev.dropout_forward_test(d.p, x, y)?,
            }
        }
        Ok(())
    }

    /// Forward, loss and backward for one batch; leaves the gradients in place (see
    /// `gradients`) without updating the weights.
    pub fn forward_backward(
        &mut self,
        images: &[f32],
        labels: &[u32],
        step: u64,
    ) -> Result<StepStats> {
        self.load_batch(images, labels)?;
        self.queue_forward_backward(step, None)?;
        self.read_stats()
    }

    /// One training step: forward, backward, update.
    pub fn train_step(
        &mut self,
        images: &[f32],
        labels: &[u32],
        lr: f32,
        step: u64,
    ) -> Result<StepStats> {
        self.load_batch(images, labels)?;
        self.train_loaded(lr, step)
    }

    /// `train_step` on the batch `load_batch` put on the devices, which stays there (the step
    /// bench times this, with the input resident as the peers' benchmarks have it).
    pub fn train_loaded(&mut self, lr: f32, step: u64) -> Result<StepStats> {
        self.queue_forward_backward(step, Some(lr))?;
        self.update(lr)?;
        self.read_stats()
    }

    /// Queues forward, loss and backward on the loaded batch. Nothing here waits for a device
    /// (on a GPU the host runs ahead); `read_stats` does, once.
    /// `lr`: the base rate of the update that follows, for the layers that take it inside
    /// backward (`keep_gradients`); `None` where none follows.
    fn queue_forward_backward(&mut self, step: u64, lr: Option<f32>) -> Result<()> {
        let n = self.loaded;
        ensure!(
            n > 0 && self.loaded_labels.len() == n,
            "no training batch is loaded (load_batch)"
        );
        self.forward(true, step)?;
        self.softmax()?;
        // The gradient of each classifier slice goes back to its tower.
        let classes = self.plan.classes;
        let last = self.plan.layers.len() - 1;
        let units = self.plan.layers[last].output.len();
        for (t, grad) in self.layers[last].grad.iter_mut().enumerate() {
            let src = self.grad_logits.as_ref().unwrap();
            self.devices[t].copy_2d(
                src,
                Block {
                    offset: t * units,
                    pitch: classes,
                },
                grad,
                Block {
                    offset: 0,
                    pitch: units,
                },
                units,
                n,
            )?;
        }
        let fused_rate = self.fused_rate(lr);
        for l in (0..self.plan.layers.len()).rev() {
            self.backward_layer(l, n, step, fused_rate)
                .with_context(|| format!("backward {}", self.plan.layers[l].name()))?;
        }
        if let Some(c) = self.collective.as_mut() {
            c.finish(&self.devices)
                .context("averaging the gradients across replicas")?;
        }
        Ok(())
    }

    /// The loss and errors of the last queued step, which this waits for.
    fn read_stats(&self) -> Result<StepStats> {
        let (n, classes, labels) = (self.loaded, self.plan.classes, &self.loaded_labels);
        let losses = self.devices[0].download(self.losses.as_ref().unwrap())?;
        let loss = crate::ops::softmax::mean_loss(&losses);
        let probs = self.devices[0].download(self.probs.as_ref().unwrap())?;
        Ok(StepStats {
            loss,
            top1_errors: crate::ops::softmax::top_k_errors(n, classes, &probs, labels, 1),
            top5_errors: crate::ops::softmax::top_k_errors(
                n,
                classes,
                &probs,
                labels,
                5.min(classes),
            ),
        })
    }

    /// `fused_rate`: the base rate at which a layer whose device fuses its gradients and update
    /// takes them all here (`Network::fused_rate`).
    fn backward_layer(
        &mut self,
        l: usize,
        n: usize,
        step: u64,
        fused_rate: Option<f32>,
    ) -> Result<()> {
        let lp = &self.plan.layers[l];
        let prec = self.plan.spec.precision;
        let (before, rest) = self.layers.split_at_mut(l);
        let st = &mut rest[0];
        let first = l == 0;
        let (prev_out, mut prev_grad): (&[D::Buf], Option<&mut Vec<D::Buf>>) = if first {
            (&self.images, None)
        } else {
            let p = &mut before[l - 1];
            (&p.out, Some(&mut p.grad))
        };
        // An fc layer's SGD step for weights whose device takes it with their gradients here.
        let fused_step = match (fused_rate, &lp.layer) {
            (Some(rate), Layer::Fc(_)) => {
                let optim = &self.plan.spec.optim;
                Some(update::sgd_steps(optim, &lp.layer, rate).expect("fc").0)
            }
            _ => None,
        };
        for t in 0..lp.active_towers {
            let dev = &self.devices[t];
            // Fetched by the layers that read them: a convolution that fused its ReLU has no
            // output of its own, which neither it nor the ReLU's backward pass reads.
            let x = || {
                if lp.exchange {
                    &st.gathered[t]
                } else {
                    &prev_out[t]
                }
            };
            let dy = &st.grad[t];
            let y = || &st.out[t];
            // Where this tower's input gradient goes: its own slot of the previous layer, or at
            // an exchange the gathered buffer that is split between the owners below.
            let mut dx = match (lp.exchange, prev_grad.as_deref_mut()) {
                (true, _) => Some(&mut st.grad_gathered[t]),
                (false, Some(g)) => Some(&mut g[t]),
                (false, None) => None,
            };
            // Weighted layers: the input gradient first, so at an exchange its copies overlap
            // the filter gradients, which come after them (below).
            match &lp.layer {
                Layer::Conv(_) => {
                    if let Some(dx) = dx {
                        dev.conv_backward_data(&lp.conv_geom(n), prec, dy, &st.weights[t].w, dx)?;
                    }
                }
                Layer::Fc(_) => {
                    let (g, wt) = (lp.fc_geom(n), &mut st.weights[t]);
                    // The data gradient, the filter gradient and the update in one pass over
                    // the weights, where the device has it; stepped weights keep no gradient.
                    let fused = match &fused_step {
                        Some(step) => {
                            let (w, v, db) = (&mut wt.w, &mut wt.vel_w, &mut wt.grad_b);
                            let dx = dx.as_deref_mut();
                            dev.fc_backward_filter_sgd(&g, prec, x(), dy, step, w, v, db, dx)?
                        }
                        None => false,
                    };
                    (wt.stepped, wt.grad_w_stale) = (fused, fused);
                    if let (false, Some(dx)) = (fused, dx) {
                        dev.fc_backward_data(&g, prec, dy, &wt.w, dx)?;
                    }
                }
                // Unweighted layers have no use for the image's gradient.
                _ if dx.is_none() => {}
                Layer::Relu(_) => dev.relu_backward(y(), dy, dx.unwrap())?,
                Layer::Tanh(_) => dev.tanh_backward(y(), dy, dx.unwrap())?,
                Layer::Lrn(_) => dev.lrn_backward(&lp.lrn_geom(n), x(), y(), dy, dx.unwrap())?,
                Layer::SpatialNorm(_) => {
                    dev.spatial_norm_backward(&lp.spatial_norm_geom(n), x(), y(), dy, dx.unwrap())?
                }
                Layer::MaxPool(_) => {
                    dev.max_pool_backward(&lp.pool_geom(n), &st.argmax[t], dy, dx.unwrap())?
                }
                Layer::Dropout(_) => {
                    let g = dropout_geom(lp, t, n, self.seed, step);
                    slice::dropout(dev, &g, self.first_sample, true, dy, dx.unwrap())?
                }
            }
        }
        let exchange = match (lp.exchange, prev_grad) {
            (true, Some(prev_grad)) => {
                let prev_len = self.plan.layers[l - 1].output.len();
                let homing = Homing {
                    prev_len,
                    input_len: lp.input.len(),
                    towers: lp.active_towers,
                    n,
                };
                homing.send(&self.devices, st, prev_grad)?;
                Some((homing, prev_grad))
            }
            _ => None,
        };
        if matches!(lp.layer, Layer::Conv(_) | Layer::Fc(_)) {
            for t in 0..lp.active_towers {
                let dev = &self.devices[t];
                let x = if lp.exchange {
                    &st.gathered[t]
                } else {
                    &prev_out[t]
                };
                let (dy, wt) = (&st.grad[t], &mut st.weights[t]);
                // Weights stepped above have no gradient to take.
                if wt.stepped {
                    continue;
                }
                let (dw, db) = (&mut wt.grad_w, &mut wt.grad_b);
                match &lp.layer {
                    Layer::Conv(_) => {
                        dev.conv_backward_filter(&lp.conv_geom(n), prec, x, dy, dw, db)?
                    }
                    _ => dev.fc_backward_filter(&lp.fc_geom(n), prec, x, dy, dw, db)?,
                }
                if let Some(c) = self.collective.as_mut() {
                    c.start_mean(t, dev, &mut [dw, db])?;
                }
            }
        }
        if let Some((homing, prev_grad)) = exchange {
            homing.sum(&self.devices, st, prev_grad)?;
        }
        Ok(())
    }

    /// Class probabilities (`[n, classes]`) for `images`, with test-time dropout scaling.
    pub fn predict(&mut self, images: &[f32], n: usize) -> Result<Vec<f32>> {
        self.loaded_labels.clear();
        self.load_images(images, n)?;
        // Labels do not change the probabilities; class 0 keeps the softmax's losses finite.
        let zeros = vec![0.0; n];
        *self.labels.as_mut().unwrap() = self.devices[0].upload(&zeros)?;
        self.forward(false, 0)?;
        self.softmax()?;
        self.devices[0].download(self.probs.as_ref().unwrap())
    }

    /// The logits of the last forward pass (`[n, classes]`).
    pub fn logits(&self) -> Result<Vec<f32>> {
        match &self.logits {
            Some(l) => self.devices[0].download(l),
            None => bail!("no forward pass has run yet"),
        }
    }

    /// Each tower's device's peak memory where it is counted (GPUs; two towers on one GPU
    /// report that GPU's total), else `None`.
    pub fn memory_peaks(&self) -> Vec<Option<usize>> {
        self.devices.iter().map(|d| d.memory_peak()).collect()
    }

    /// `memory_peaks` for people, `1.52 GB | 1.52 GB`, or `None` where no device counts them.
    pub fn memory_peaks_text(&self) -> Option<String> {
        let peaks = self.memory_peaks();
        if peaks.iter().all(Option::is_none) {
            return None;
        }
        let each: Vec<String> = peaks
            .iter()
            .map(|p| p.map_or("-".into(), |b| format!("{:.2} GB", b as f64 / 1e9)))
            .collect();
        Some(each.join(" | "))
    }

    /// Bytes of the buffers this network holds on each tower's device: weights, gradients,
    /// momentum, activations and their gradients, exchange buffers (not counting workspaces a
    /// device allocates inside an op).
    pub fn bytes_per_tower(&self) -> Vec<usize> {
        let mut bytes = vec![0usize; self.devices.len()];
        let mut add = |t: usize, b: &D::Buf| bytes[t] += 4 * self.devices[t].len(b);
        for st in &self.layers {
            for (t, w) in st.weights.iter().enumerate() {
                for b in [&w.w, &w.b, &w.grad_w, &w.grad_b, &w.vel_w, &w.vel_b] {
                    add(t, b);
                }
            }
            for list in [
                &st.out,
                &st.grad,
                &st.gathered,
                &st.grad_gathered,
                &st.returned,
                &st.argmax,
            ] {
                for (t, b) in list.iter().enumerate() {
                    add(t, b);
                }
            }
        }
        for (t, b) in self.images.iter().enumerate() {
            add(t, b);
        }
        for b in [&self.logits, &self.probs, &self.grad_logits]
            .into_iter()
            .flatten()
        {
            add(0, b);
        }
        bytes
    }

    /// Current weights and biases, `[layer][tower]`.
    pub fn params(&self) -> Result<NetParams> {
        self.collect(|w| (&w.w, &w.b))
    }

    /// Gradients of the last backward pass, `[layer][tower]`.
    pub fn gradients(&self) -> Result<NetParams> {
        for (lp, st) in self.plan.layers.iter().zip(&self.layers) {
            ensure!(
                !st.weights.iter().any(|w| w.grad_w_stale),
                "{}: its weight gradient was taken into the update and not kept \
                 (Network::keep_gradients(false))",
                lp.name()
            );
        }
        self.collect(|w| (&w.grad_w, &w.grad_b))
    }

    /// Momentum buffers, `[layer][tower]`.
    pub fn velocities(&self) -> Result<NetParams> {
        self.collect(|w| (&w.vel_w, &w.vel_b))
    }

    /// Replaces the momentum buffers (resuming from a checkpoint).
    pub fn set_velocities(&mut self, vel: &NetParams) -> Result<()> {
        ensure!(
            vel.len() == self.layers.len(),
            "momentum is for another network"
        );
        for (l, (st, lv)) in self.layers.iter_mut().zip(vel).enumerate() {
            ensure!(
                lv.len() == st.weights.len(),
                "momentum for layer {l} has the wrong tower count"
            );
            for (t, (wt, v)) in st.weights.iter_mut().zip(lv).enumerate() {
                let dev = &self.devices[t];
                ensure!(
                    dev.len(&wt.vel_w) == v.weight.len() && dev.len(&wt.vel_b) == v.bias.len(),
                    "momentum for layer {l} has the wrong size"
                );
                wt.vel_w = dev.upload(&v.weight.data)?;
                wt.vel_b = dev.upload(&v.bias.data)?;
            }
        }
        Ok(())
    }

    fn collect(&self, pick: impl Fn(&Weights<D::Buf>) -> (&D::Buf, &D::Buf)) -> Result<NetParams> {
        self.plan
            .layers
            .iter()
            .zip(&self.layers)
            .map(|(lp, st)| {
                st.weights
                    .iter()
                    .enumerate()
                    .map(|(t, wt)| {
                        let (w, b) = pick(wt);
                        let shape = lp.weight_shape().expect("weighted layer");
                        Ok(crate::model::init::TowerParams {
                            weight: Tensor::from_vec(&shape, self.devices[t].download(w)?),
                            bias: Tensor::from_vec(&[shape[0]], self.devices[t].download(b)?),
                        })
                    })
                    .collect()
            })
            .collect()
    }
}

/// Dropout over tower `tower`'s slice, indexed by each unit's place in the whole layer so the
/// masks do not depend on how the layer is split.
/// Backward at an exchange: every tower's gradient of its gathered input holds a block for each
/// owner of the previous layer (block `s` for tower `s`'s output), which goes home and is added
/// there: the owner's own block first, then the others' in tower order.
struct Homing {
    /// Floats per sample of one tower's previous output, and of the gathered input.
    prev_len: usize,
    input_len: usize,
    towers: usize,
    n: usize,
}

impl Homing {
    /// Owner `s`'s block of a gathered gradient.
    fn from(&self, s: usize) -> Block {
        Block {
            offset: s * self.prev_len,
            pitch: self.input_len,
        }
    }

    fn whole(&self) -> Block {
        Block {
            offset: 0,
            pitch: self.prev_len,
        }
    }

    /// The towers whose blocks owner `s` adds up, in order: its own first.
    fn sources(&self, s: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.towers).collect();
        if let Some(own) = order.iter().position(|&t| t == s) {
            order.remove(own);
            order.insert(0, s);
        }
        order
    }

    /// Starts the first two copies to each owner, asynchronously (the exchange), so they run
    /// beside the filter gradients queued next.
    fn send<D: Device>(
        &self,
        devices: &[D],
        st: &mut LayerState<D::Buf>,
        prev_grad: &mut [D::Buf],
    ) -> Result<()> {
        let (n, len) = (self.n, self.prev_len);
        for (s, owner_grad) in prev_grad.iter_mut().enumerate() {
            let dev = &devices[s];
            let order = self.sources(s);
            let own = &st.grad_gathered[order[0]];
            dev.copy_2d_async(own, self.from(s), owner_grad, self.whole(), len, n)?;
            if let Some(&t) = order.get(1) {
                let other = &st.grad_gathered[t];
                let landing = &mut st.returned[s];
                dev.copy_2d_async(other, self.from(s), landing, self.whole(), len, n)?;
            }
        }
        Ok(())
    }

    /// Waits for `send`'s copies and adds the blocks up on each owner.
    fn sum<D: Device>(
        &self,
        devices: &[D],
        st: &mut LayerState<D::Buf>,
        prev_grad: &mut [D::Buf],
    ) -> Result<()> {
        let (n, len) = (self.n, self.prev_len);
        for dev in devices {
            dev.join_copies()?;
        }
        for (s, owner_grad) in prev_grad.iter_mut().enumerate() {
            let dev = &devices[s];
            for (i, &t) in self.sources(s).iter().enumerate().skip(1) {
                if i > 1 {
                    // Past two towers, the rest one by one through the same landing buffer.
                    let other = &st.grad_gathered[t];
                    dev.copy_2d(
                        other,
                        self.from(s),
                        &mut st.returned[s],
                        self.whole(),
                        len,
                        n,
                    )?;
                }
                dev.add_assign(owner_grad, &st.returned[s])?;
            }
        }
        Ok(())
    }
}

fn dropout_geom(lp: &LayerPlan, tower: usize, n: usize, seed: u64, step: u64) -> DropoutGeom {
    let Layer::Dropout(d) = &lp.layer else {
        unreachable!("dropout geometry of a {} layer", lp.layer.kind())
    };
    let units = lp.output.len();
    DropoutGeom {
        n,
        units,
        units_total: units * lp.active_towers,
        unit_offset: tower * units,
        p: d.p,
        seed,
        stream: dropout_stream(step, lp.index),
    }
}
