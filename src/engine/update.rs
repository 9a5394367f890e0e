//! The SGD step: each weighted layer's weights and biases at the spec's multipliers of the base
//! rate, after backward (`update`), or for a fully connected layer whose device takes its filter
//! gradient and update in one pass, inside backward (`Network::keep_gradients`).

use super::Network;
use crate::device::Device;
use crate::model::spec::{Layer, OptimSpec};
use crate::ops::sgd::SgdStep;
use anyhow::Result;

/// The SGD steps of a layer's weights and of its biases at base rate `lr`; `None` for a layer
/// without weights.
pub(super) fn sgd_steps(optim: &OptimSpec, layer: &Layer, lr: f32) -> Option<(SgdStep, SgdStep)> {
    let lr_mult = match layer {
        Layer::Conv(c) => c.init.lr_mult,
        Layer::Fc(f) => f.init.lr_mult,
        _ => return None,
    };
    let weights = SgdStep {
        lr: lr * lr_mult,
        momentum: optim.momentum,
        weight_decay: optim.weight_decay,
    };
    let biases = SgdStep {
        lr: lr * lr_mult * optim.bias_lr_mult,
        momentum: optim.momentum,
        weight_decay: if optim.bias_decay {
            optim.weight_decay
        } else {
            0.0
        },
    };
    Some((weights, biases))
}

impl<D: Device> Network<D> {
    /// Whether training steps keep the weights' gradients for `gradients` (the default). With
    /// `false`, a training step may take a fully connected layer's weight update inside
    /// backward, in one pass with its filter gradient, where the layer's device has that
    /// (the CPU, in fp32, at batches up to 8) and no hooks read the gradients first: the
    /// same weights and momentum to the bit, with less of the memory traffic that bounds those
    /// layers, and no weight gradient left to read. `alexnet train` and the step bench run so.
    pub fn keep_gradients(&mut self, keep: bool) {
        self.keep_gradients = keep;
    }

    /// Applies one SGD step with base learning rate `lr` (the spec's multipliers and decay
    /// switches applied per parameter), but for the weights backward already stepped.
    pub fn update(&mut self, lr: f32) -> Result<()> {
        let optim = self.plan.spec.optim;
        for (lp, st) in self.plan.layers.iter().zip(&mut self.layers) {
            let Some((weight_step, bias_step)) = sgd_steps(&optim, &lp.layer, lr) else {
                continue;
            };
            for (t, wt) in st.weights.iter_mut().enumerate() {
                let dev = &self.devices[t];
                if !std::mem::take(&mut wt.stepped) {
                    dev.sgd_update(&weight_step, &mut wt.w, &mut wt.vel_w, &wt.grad_w)?;
                }
                dev.sgd_update(&bias_step, &mut wt.b, &mut wt.vel_b, &wt.grad_b)?;
            }
        }
        Ok(())
    }
}
