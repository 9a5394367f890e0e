//! The backward pass of one layer, in the order it schedules the work of every tower: the
//! input gradients first, then (at an exchange) their copies home started, the weight gradients
//! beside those copies (each handed to the hooks as soon as it is queued), and last the copies
//! waited for and added up on their owners.

use super::exchange::Homing;
use super::update::sgd_steps;
use super::{GradientHooks, LayerState, Network, forward::dropout_geom};
use crate::device::Device;
use crate::model::spec::Layer;
use crate::ops::sgd::SgdStep;
use anyhow::Result;

impl<D: Device> Network<D> {
    /// `fused_rate`: the base rate at which a fully connected layer whose device fuses its
    /// filter gradient and update (`LayerState::fuses_sgd`) takes its step here; `None`
    /// where the gradients must be kept.
    pub(super) fn backward_layer(
        &mut self,
        l: usize,
        n: usize,
        step: u64,
        fused_rate: Option<f32>,
        hooks: Option<&mut (dyn GradientHooks<D> + '_)>,
    ) -> Result<()> {
        let lp = &self.plan.layers[l];
        let fused_step = match fused_rate {
            Some(rate) if self.layers[l].fuses_sgd => Some(
                sgd_steps(&self.plan.spec.optim, &lp.layer, rate)
                    .expect("fc")
                    .0,
            ),
            _ => None,
        };
        let homing = (lp.exchange && l > 0).then(|| Homing {
            prev_len: self.plan.layers[l - 1].output.len(),
            input_len: lp.input.len(),
            towers: lp.active_towers,
            n,
        });
        self.input_gradients(l, n, step, fused_step.as_ref())?;
        if let Some(homing) = &homing {
            let (st, prev) = this_and_previous(&mut self.layers, l);
            homing.send(&self.devices, st, &mut prev.grad)?;
        }
        self.weight_gradients(l, n, hooks)?;
        if let Some(homing) = &homing {
            let (st, prev) = this_and_previous(&mut self.layers, l);
            homing.sum(&self.devices, st, &mut prev.grad)?;
        }
        Ok(())
    }

    /// Each tower's gradient of layer `l`'s input: into the previous layer's gradient, or at an
    /// exchange into the gathered gradient that `Homing` splits between the owners. With
    /// `fused_step`, a fully connected layer takes its filter gradient and SGD step here too,
    /// in one pass over the weights, and keeps no weight gradient.
    fn input_gradients(
        &mut self,
        l: usize,
        n: usize,
        step: u64,
        fused_step: Option<&SgdStep>,
    ) -> Result<()> {
        let lp = &self.plan.layers[l];
        let prec = self.plan.spec.precision;
        let (before, rest) = self.layers.split_at_mut(l);
        let st = &mut rest[0];
        let (prev_out, mut prev_grad): (&[D::Buf], Option<&mut Vec<D::Buf>>) = if l == 0 {
            (&self.images, None)
        } else {
            let p = &mut before[l - 1];
            (&p.out, Some(&mut p.grad))
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
            let dx = match (lp.exchange, prev_grad.as_deref_mut()) {
                (true, _) => Some(&mut st.grad_gathered[t]),
                (false, Some(g)) => Some(&mut g[t]),
                (false, None) => None,
            };
            match &lp.layer {
                Layer::Conv(_) => {
                    if let Some(dx) = dx {
                        dev.conv_backward_data(&lp.conv_geom(n), prec, dy, &st.weights[t].w, dx)?;
                    }
                }
                Layer::Fc(_) => {
                    let (g, wt) = (lp.fc_geom(n), &mut st.weights[t]);
                    if let Some(step) = fused_step {
                        let (w, v, db) = (&mut wt.w, &mut wt.vel_w, &mut wt.grad_b);
                        dev.fc_backward_filter_sgd(&g, prec, x(), dy, step, w, v, db, dx)?;
                    } else if let Some(dx) = dx {
                        dev.fc_backward_data(&g, prec, dy, &wt.w, dx)?;
                    }
                    (wt.stepped, wt.grad_w_stale) = (fused_step.is_some(), fused_step.is_some());
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
                    let g = dropout_geom(lp, t, n, self.first_sample, self.seed, step);
                    dev.dropout_backward(&g, dy, dx.unwrap())?
                }
            }
        }
        Ok(())
    }

    /// Each tower's weight and bias gradients of a weighted layer `l` (but for weights stepped
    /// in `input_gradients`), each handed to `hooks` once queued.
    fn weight_gradients(
        &mut self,
        l: usize,
        n: usize,
        mut hooks: Option<&mut (dyn GradientHooks<D> + '_)>,
    ) -> Result<()> {
        let lp = &self.plan.layers[l];
        if !matches!(lp.layer, Layer::Conv(_) | Layer::Fc(_)) {
            return Ok(());
        }
        let prec = self.plan.spec.precision;
        let (before, rest) = self.layers.split_at_mut(l);
        let st = &mut rest[0];
        for t in 0..lp.active_towers {
            let dev = &self.devices[t];
            let x = match (lp.exchange, l) {
                (true, _) => &st.gathered[t],
                (false, 0) => &self.images[t],
                (false, _) => &before[l - 1].out[t],
            };
            let (dy, wt) = (&st.grad[t], &mut st.weights[t]);
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
            if let Some(h) = hooks.as_deref_mut() {
                h.gradient_ready(t, dev, &mut [dw, db])?;
            }
        }
        Ok(())
    }
}

/// Layer `l`'s state and the previous layer's (`l > 0`).
fn this_and_previous<B>(
    layers: &mut [LayerState<B>],
    l: usize,
) -> (&mut LayerState<B>, &mut LayerState<B>) {
    let (before, rest) = layers.split_at_mut(l);
    (&mut rest[0], &mut before[l - 1])
}
