//! What a network holds, read and replaced from outside: weights, gradients and momentum
//! (`[layer][tower]`, as `model::init` makes them), and the memory its buffers take.

use super::{Network, Weights};
use crate::device::Device;
use crate::model::LayerPlan;
use crate::model::init::{NetParams, TowerParams};
use crate::tensor::Tensor;
use anyhow::{Result, ensure};

/// Layer `lp`'s weights (`lparams[tower]`) on their towers' devices, with zeroed momentum.
pub(super) fn place_weights<D: Device>(
    lp: &LayerPlan,
    lparams: &[TowerParams],
    devices: &[D],
) -> Result<Vec<Weights<D::Buf>>> {
    let Some(shape) = lp.weight_shape() else {
        return Ok(Vec::new());
    };
    ensure!(
        lparams.len() == lp.active_towers,
        "{}: parameters for {} towers, the layer has {}",
        lp.name(),
        lparams.len(),
        lp.active_towers
    );
    let mut weights = Vec::new();
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
            vel_b: dev.alloc(p.bias.len())?,
            stepped: false,
            grad_w_stale: false,
        });
    }
    Ok(weights)
}

impl<D: Device> Network<D> {
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
                        Ok(TowerParams {
                            weight: Tensor::from_vec(&shape, self.devices[t].download(w)?),
                            bias: Tensor::from_vec(&[shape[0]], self.devices[t].download(b)?),
                        })
                    })
                    .collect()
            })
            .collect()
    }
}
