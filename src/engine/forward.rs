//! The forward pass, layer by layer, the softmax on tower 0, and prediction.

use super::{LayerState, Network, Weights, exchange};
use crate::device::{Block, Device};
use crate::model::LayerPlan;
use crate::model::spec::Layer;
use crate::ops::dropout::DropoutGeom;
use crate::ops::precision::Precision;
use anyhow::{Context, Result, bail};

/// Philox stream names: disjoint ranges for initialisation (see `model::init`) and dropout.
const DROPOUT_STREAMS: u64 = 2 << 56;

impl<D: Device> Network<D> {
    /// The forward pass over the loaded images, leaving the logits of the whole net on tower 0.
    /// `step` names the dropout masks in training; `train: false` applies the paper's test-time
    /// dropout scaling instead.
    pub(super) fn forward(&mut self, train: bool, step: u64) -> Result<()> {
        let n = self.loaded;
        for l in 0..self.plan.layers.len() {
            if l > 0 && self.plan.layers[l - 1].fuses_relu {
                continue; // computed by the convolution before it
            }
            self.forward_layer(l, n, train, step)
                .with_context(|| format!("forward {}", self.plan.layers[l].name()))?;
        }
        self.gather_logits(n)
    }

    /// The classifier's slices, side by side, into the logits on tower 0.
    fn gather_logits(&mut self, n: usize) -> Result<()> {
        let last = self.plan.layers.last().expect("plans have layers");
        let (units, classes) = (last.output.len(), self.plan.classes);
        let logits = self.logits.as_mut().expect("allocated with the batch");
        let slices = &self.layers.last().expect("plans have layers").out;
        for (t, out) in slices.iter().enumerate() {
            let from = Block {
                offset: 0,
                pitch: units,
            };
            let to = Block {
                offset: t * units,
                pitch: classes,
            };
            self.devices[0].copy_2d(out, from, logits, to, units, n)?;
        }
        Ok(())
    }

    /// The softmax of the logits into `probs`, its loss gradient and each sample's loss.
    pub(super) fn softmax(&mut self) -> Result<()> {
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
        let (before, rest) = self.layers.split_at_mut(l);
        let (st, after) = rest.split_first_mut().expect("layer l exists");
        let prev_out: &[D::Buf] = if l == 0 {
            &self.images
        } else {
            &before[l - 1].out
        };
        if lp.exchange {
            let prev_len = self.plan.layers[l - 1].output.len();
            exchange::gather(&self.devices, prev_out, &mut st.gathered, prev_len, lp, n)?;
        }
        let LayerState {
            weights,
            out,
            gathered,
            argmax,
            ..
        } = st;
        for t in 0..lp.active_towers {
            let dev = &self.devices[t];
            let x = if lp.exchange {
                // The planted fault: tower 1 reads tower 0's copy of the input.
                let planted = t == 1 && crate::planted::planted("peer-kernel");
                &gathered[if planted { 0 } else { t }]
            } else {
                &prev_out[t]
            };
            if lp.fuses_relu {
                let (wt, y) = (&weights[t], &mut after[0].out[t]);
                dev.conv_forward_relu(&lp.conv_geom(n), prec, x, &wt.w, &wt.b, y)?;
                continue;
            }
            let op = Op {
                weights: weights.get(t),
                argmax: argmax.get_mut(t),
                dropout: match (&lp.layer, train) {
                    (Layer::Dropout(_), true) => {
                        Some(dropout_geom(lp, t, n, self.first_sample, self.seed, step))
                    }
                    _ => None,
                },
            };
            forward_op(dev, lp, n, prec, op, x, &mut out[t])?;
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

    /// Layer `l`'s output of the last forward pass for the whole network, `[n, output_total]`:
    /// each sample's towers side by side (tower 0's values first), as a layer reading every
    /// tower sees them.
    pub fn layer_output(&self, l: usize) -> Result<Vec<f32>> {
        self.plan.check_output_kept(l)?;
        let lp = &self.plan.layers[l];
        let (n, per, towers) = (self.loaded, lp.output.len(), lp.active_towers);
        let mut out = vec![0f32; n * per * towers];
        for (t, buf) in self.layers[l].out.iter().enumerate() {
            let tower = self.devices[t].download(buf)?;
            for (i, row) in tower.chunks_exact(per).take(n).enumerate() {
                out[(i * towers + t) * per..][..per].copy_from_slice(row);
            }
        }
        Ok(out)
    }

    /// The logits of the last forward pass (`[n, classes]`).
    pub fn logits(&self) -> Result<Vec<f32>> {
        match &self.logits {
            Some(l) => self.devices[0].download(l),
            None => bail!("no forward pass has run yet"),
        }
    }
}

/// What one tower's op of a layer uses beside its input and output: the weights of a weighted
/// layer, the argmax of max pooling, the training mask of dropout (`None`: test-time scaling).
struct Op<'a, B> {
    weights: Option<&'a Weights<B>>,
    argmax: Option<&'a mut B>,
    dropout: Option<DropoutGeom>,
}

/// One tower's op of layer `lp` on input `x`, into `y`.
fn forward_op<D: Device>(
    dev: &D,
    lp: &LayerPlan,
    n: usize,
    prec: Precision,
    op: Op<'_, D::Buf>,
    x: &D::Buf,
    y: &mut D::Buf,
) -> Result<()> {
    let weights = || op.weights.expect("a weighted layer has weights");
    match &lp.layer {
        Layer::Conv(_) => {
            let wt = weights();
            dev.conv_forward(&lp.conv_geom(n), prec, x, &wt.w, &wt.b, y)
        }
        Layer::Fc(_) => {
            let wt = weights();
            dev.fc_forward(&lp.fc_geom(n), prec, x, &wt.w, &wt.b, y)
        }
        Layer::Relu(_) => dev.relu_forward(x, y),
        Layer::Tanh(_) => dev.tanh_forward(x, y),
        Layer::Lrn(_) => dev.lrn_forward(&lp.lrn_geom(n), x, y),
        Layer::SpatialNorm(_) => dev.spatial_norm_forward(&lp.spatial_norm_geom(n), x, y),
        Layer::MaxPool(_) => {
            let argmax = op.argmax.expect("pooling keeps its argmax");
            dev.max_pool_forward(&lp.pool_geom(n), x, y, argmax)
        }
        Layer::Dropout(d) => match &op.dropout {
            Some(g) => dev.dropout_forward_train(g, x, y),
            None => dev.dropout_forward_test(d.p, x, y),
        },
    }
}

/// Dropout over tower `tower`'s slice, indexed by each unit's place in the whole layer and
/// each sample's in the global batch, so the masks depend neither on how the layer is split
/// nor on how the batch is.
pub(super) fn dropout_geom(
    lp: &LayerPlan,
    tower: usize,
    n: usize,
    first_sample: usize,
    seed: u64,
    step: u64,
) -> DropoutGeom {
    let Layer::Dropout(d) = &lp.layer else {
        unreachable!("dropout geometry of a {} layer", lp.layer.kind())
    };
    let units = lp.output.len();
    DropoutGeom {
        n,
        first_sample,
        units,
        units_total: units * lp.active_towers,
        unit_offset: tower * units,
        p: d.p,
        seed,
        stream: DROPOUT_STREAMS | (step << 16) | lp.index as u64,
    }
}
