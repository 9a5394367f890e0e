//! The buffers of a batch size (activations, their gradients, exchange buffers, the loss's),
//! and putting a batch on the towers.

use super::Network;
use crate::device::{Block, Device};
use crate::model::spec::Layer;
use anyhow::{Result, ensure};

impl<D: Device> Network<D> {
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
            let fused = lp.fuses_relu;
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
            st.fuses_sgd = matches!(lp.layer, Layer::Fc(_))
                && self.devices[0].fuses_fc_sgd(&lp.fc_geom(n), self.plan.spec.precision);
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
    pub(super) fn check_images(&self, images: &[f32], n: usize) -> Result<usize> {
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
    pub(super) fn load_images(&mut self, images: &[f32], n: usize) -> Result<()> {
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
}
