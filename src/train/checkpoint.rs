//! Checkpoints: one safetensors file holding the weights (`<layer>.<tower>.weight|bias`, PyTorch
//! layouts, so `torch.nn.Conv2d`/`Linear` take them as they are), the momentum
//! (`momentum.<layer>.<tower>.weight|bias`), and in its metadata the network spec and the
//! training state. Every random number the engine draws is a function of (seed, counters), so
//! the state's counters are the whole RNG state and a resumed run continues bit-exactly.
//!
//! Files are written to a temporary name and renamed into place: a crash or Ctrl-C during a save
//! leaves the previous checkpoint intact.

use crate::model::init::{NetParams, TowerParams};
use crate::model::{NetSpec, Plan};
use crate::tensor::Tensor;
use anyhow::{Context, Result, bail, ensure};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// Where training stands: enough to continue exactly where it stopped.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimiser steps taken so far.
    pub step: u64,
    /// The epoch in progress and how many of its batches are done.
    pub epoch: usize,
    pub batch_in_epoch: usize,
    /// The base learning rate now in force.
    pub lr: f32,
    pub seed: u64,
    /// The batch size the run trains with (0: not recorded); a resumed run must keep it.
    #[serde(default)]
    pub batch: usize,
    /// Learning-rate schedule state: best validation top-1 error so far, epochs since it
    /// improved, and how many times the rate has been divided.
    pub best_val_error: Option<f64>,
    pub epochs_since_best: usize,
    pub lr_drops: usize,
}

pub struct Checkpoint {
    pub spec: NetSpec,
    pub state: TrainState,
    pub params: NetParams,
    pub momentum: NetParams,
}

fn tensor_name(prefix: &str, plan: &Plan, layer: usize, tower: usize, part: &str) -> String {
    format!("{prefix}{}.{tower}.{part}", plan.layers[layer].name())
}

fn f32_bytes(data: &[f32]) -> Vec<u8> {
    data.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Writes `path` atomically.
pub fn save(
    path: &Path,
    plan: &Plan,
    state: &TrainState,
    params: &NetParams,
    momentum: &NetParams,
) -> Result<()> {
    let mut named: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (prefix, set) in [("", params), ("momentum.", momentum)] {
        for (l, towers) in set.iter().enumerate() {
            for (t, p) in towers.iter().enumerate() {
                named.push((
                    tensor_name(prefix, plan, l, t, "weight"),
                    p.weight.shape.clone(),
                    f32_bytes(&p.weight.data),
                ));
                named.push((
                    tensor_name(prefix, plan, l, t, "bias"),
                    p.bias.shape.clone(),
                    f32_bytes(&p.bias.data),
                ));
            }
        }
    }
    let views = named
        .iter()
        .map(|(name, shape, bytes)| {
            Ok((
                name.clone(),
                TensorView::new(Dtype::F32, shape.clone(), bytes)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata = HashMap::from([
        ("format".to_string(), "alexnet-checkpoint-1".to_string()),
        ("spec".to_string(), serde_json::to_string(&plan.spec)?),
        ("state".to_string(), serde_json::to_string(state)?),
    ]);
    let bytes = safetensors::serialize(views, Some(metadata))?;
    let tmp = path.with_extension("safetensors.partial");
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

/// Reads a checkpoint written by `save`, checking that it is one.
pub fn load(path: &Path) -> Result<Checkpoint> {
    let bytes =
        std::fs::read(path).with_context(|| format!("reading checkpoint {}", path.display()))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes)
        .with_context(|| format!("{} is not a safetensors file", path.display()))?;
    let meta = meta.metadata().clone().unwrap_or_default();
    ensure!(
        meta.get("format").map(String::as_str) == Some("alexnet-checkpoint-1"),
        "{} is not an alexnet checkpoint (no alexnet metadata)",
        path.display()
    );
    let spec: NetSpec = serde_json::from_str(
        meta.get("spec")
            .context("checkpoint metadata lacks the spec")?,
    )?;
    let state: TrainState = serde_json::from_str(
        meta.get("state")
            .context("checkpoint metadata lacks the training state")?,
    )?;
    let plan = Plan::new(&spec).context("the checkpoint's spec does not plan")?;
    let tensors = SafeTensors::deserialize(&bytes)?;
    let read = |prefix: &str| -> Result<NetParams> {
        plan.layers
            .iter()
            .enumerate()
            .map(|(l, lp)| {
                let Some(shape) = lp.weight_shape() else {
                    return Ok(Vec::new());
                };
                (0..lp.active_towers)
                    .map(|t| {
                        let get = |part: &str, want: &[usize]| -> Result<Tensor> {
                            let name = tensor_name(prefix, &plan, l, t, part);
                            let view = tensors.tensor(&name).with_context(|| {
                                format!("{}: missing tensor {name}", path.display())
                            })?;
                            ensure!(
                                view.dtype() == Dtype::F32 && view.shape() == want,
                                "{name}: expected f32 {want:?}, found {:?} {:?}",
                                view.dtype(),
                                view.shape()
                            );
                            let data = view
                                .data()
                                .chunks_exact(4)
                                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                                .collect();
                            Ok(Tensor::from_vec(want, data))
                        };
                        Ok(TowerParams {
                            weight: get("weight", &shape)?,
                            bias: get("bias", &shape[..1])?,
                        })
                    })
                    .collect()
            })
            .collect()
    };
    Ok(Checkpoint {
        params: read("")?,
        momentum: read("momentum.")?,
        spec,
        state,
    })
}

impl Checkpoint {
    /// Refuses a checkpoint of another network than `plan`'s, saying how they differ.
    pub fn check_model(&self, plan: &Plan) -> Result<()> {
        if self.spec == plan.spec {
            return Ok(());
        }
        let theirs = Plan::new(&self.spec)?;
        if let Some((a, b)) = plan
            .layers
            .iter()
            .zip(&theirs.layers)
            .find(|(a, b)| a.layer != b.layer || a.output != b.output)
        {
            bail!(
                "the checkpoint is of network {:?}, not {:?}: layer {} differs ({} {} here, {} {} there)",
                self.spec.name,
                plan.spec.name,
                a.index,
                a.name(),
                a.output_total(),
                b.name(),
                b.output_total()
            );
        }
        let (here, there) = (&plan.spec, &self.spec);
        let same_net = here.layers == there.layers && here.towers == there.towers;
        if same_net && (here.optim != there.optim || here.augment != there.augment) {
            bail!(
                "the checkpoint's network {:?} has the same layers as {:?} but is trained \
                 differently (optimiser {:?} vs {:?}; augmentation {:?} vs {:?})",
                there.name,
                here.name,
                there.optim,
                here.optim,
                there.augment,
                here.augment
            );
        }
        bail!(
            "the checkpoint is of network {:?} ({} layers, {} towers), not {:?} ({} layers, {} towers)",
            self.spec.name,
            self.spec.layers.len(),
            self.spec.towers,
            plan.spec.name,
            plan.spec.layers.len(),
            plan.spec.towers
        )
    }
}
