//! A training step on the loaded batch: forward, loss, backward (with the hooks distribution
//! puts there), update, and what it measured.

use super::{GradientHooks, Network};
use crate::device::{Block, Device};
use anyhow::{Context, Result, ensure};

/// What one training step measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    pub loss: f64,
    /// Samples of the batch whose label was not the top-scoring class.
    pub top1_errors: usize,
    pub top5_errors: usize,
}

impl<D: Device> Network<D> {
    /// Forward, loss and backward for one batch; leaves the gradients in place (see
    /// `gradients`) without updating the weights.
    pub fn forward_backward(
        &mut self,
        images: &[f32],
        labels: &[u32],
        step: u64,
    ) -> Result<StepStats> {
        self.load_batch(images, labels)?;
        self.queue_forward_backward(step, None, None)?;
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
        self.train_step_with(images, labels, lr, step, None)
    }

    /// `train_step` with `hooks` in its backward pass.
    pub fn train_step_with(
        &mut self,
        images: &[f32],
        labels: &[u32],
        lr: f32,
        step: u64,
        hooks: Option<&mut dyn GradientHooks<D>>,
    ) -> Result<StepStats> {
        self.load_batch(images, labels)?;
        self.queue_step(lr, step, hooks)?;
        self.read_stats()
    }

    /// `train_step` on the batch `load_batch` put on the devices, which stays there (the step
    /// bench times this, with the input resident as the peers' benchmarks have it).
    pub fn train_loaded(&mut self, lr: f32, step: u64) -> Result<StepStats> {
        self.queue_step(lr, step, None)?;
        self.read_stats()
    }

    /// Queues a training step on the loaded batch: forward, loss, backward with `hooks`, and
    /// the update at base rate `lr`.
    pub(super) fn queue_step(
        &mut self,
        lr: f32,
        step: u64,
        hooks: Option<&mut (dyn GradientHooks<D> + '_)>,
    ) -> Result<()> {
        self.queue_forward_backward(step, Some(lr), hooks)?;
        self.update(lr)
    }

    /// Queues forward, loss and backward on the loaded batch. Nothing here waits for a device
    /// (on a GPU the host runs ahead); `read_stats` does, once.
    /// `lr`: the base rate of the update that follows, for the layers that take it inside
    /// backward (`keep_gradients`); `None` where none follows.
    pub(super) fn queue_forward_backward(
        &mut self,
        step: u64,
        lr: Option<f32>,
        mut hooks: Option<&mut (dyn GradientHooks<D> + '_)>,
    ) -> Result<()> {
        let n = self.loaded;
        ensure!(
            n > 0 && self.loaded_labels.len() == n,
            "no training batch is loaded (load_batch)"
        );
        self.forward(true, step)?;
        self.softmax()?;
        self.scatter_logit_gradients(n)?;
        // Hooks read the gradients, so nothing may take its update before they have run.
        let fused_rate = lr.filter(|_| !self.keep_gradients && hooks.is_none());
        for l in (0..self.plan.layers.len()).rev() {
            self.backward_layer(l, n, step, fused_rate, hooks.as_deref_mut())
                .with_context(|| format!("backward {}", self.plan.layers[l].name()))?;
        }
        if let Some(h) = hooks {
            h.backward_done(&self.devices)?;
        }
        Ok(())
    }

    /// The gradient of each classifier slice back to its tower.
    fn scatter_logit_gradients(&mut self, n: usize) -> Result<()> {
        let classes = self.plan.classes;
        let last = self.plan.layers.len() - 1;
        let units = self.plan.layers[last].output.len();
        let src = self.grad_logits.as_ref().expect("allocated with the batch");
        for (t, grad) in self.layers[last].grad.iter_mut().enumerate() {
            let from = Block {
                offset: t * units,
                pitch: classes,
            };
            let to = Block {
                offset: 0,
                pitch: units,
            };
            self.devices[t].copy_2d(src, from, grad, to, units, n)?;
        }
        Ok(())
    }

    /// The loss and errors of the last queued step, which this waits for.
    pub(super) fn read_stats(&self) -> Result<StepStats> {
        let (n, classes, labels) = (self.loaded, self.plan.classes, &self.loaded_labels);
        let losses = self.devices[0].download(self.losses.as_ref().unwrap())?;
        let loss = crate::ops::softmax::mean_loss(&losses);
        let probs = self.devices[0].download(self.probs.as_ref().unwrap())?;
        let errors = |k| crate::ops::softmax::top_k_errors(n, classes, &probs, labels, k);
        Ok(StepStats {
            loss,
            top1_errors: errors(1),
            top5_errors: errors(5.min(classes)),
        })
    }
}
