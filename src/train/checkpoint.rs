//! Checkpoints: one safetensors file holding the weights (`<layer>.<tower>.weight|bias`, PyTorch
//! layouts, so `torch.nn.Conv2d`/`Linear` take them as they are), the momentum
//! (`momentum.<layer>.<tower>.weight|bias`), and in its metadata the network spec and the
//! training state. Every random number the engine draws is a function of (seed, counters), so
//! the state's counters are the whole RNG state and a resumed run continues bit-exactly.
//!
//! Files are written to a temporary name and renamed into place: a crash or Ctrl-C during a save
//! leaves the previous checkpoint intact. The metadata also holds an XXH3 checksum of every
//! tensor and a record of the run's data ([`DataRecord`]); loading verifies the checksums and
//! refuses non-finite weights, so a damaged file is never trained on or scored with.

use crate::data::Stats;
use crate::model::init::{NetParams, TowerParams};
use crate::model::{NetSpec, Plan};
use crate::tensor::Tensor;
use anyhow::{Context, Result, anyhow, bail, ensure};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

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

/// What a run trains on, kept in its checkpoint so that `--resume` continues on the same data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataRecord {
    pub source: DataSource,
    /// [`crate::data::Dataset::fingerprint`] of the training set when the run started.
    pub fingerprint: String,
    /// Its images and classes (the class names give labels their meaning).
    pub samples: usize,
    pub classes: Vec<String>,
    /// Side of the base images the run's statistics and crops are taken from.
    pub base: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataSource {
    /// The built-in procedural set, drawn from this seed.
    Synthetic { seed: u64 },
    /// Files: the `--data` root as given (made absolute), the training set found under it, and
    /// the validation set used after each epoch, if any.
    Files {
        root: PathBuf,
        train: PathBuf,
        val: Option<PathBuf>,
    },
}

pub struct Checkpoint {
    pub spec: NetSpec,
    /// What inference needs besides the weights: the mean image, the colour PCA, the base size
    /// and the class names (`None` in checkpoints written before they were kept here; those
    /// read `stats.safetensors` beside them).
    pub stats: Option<Stats>,
    pub state: TrainState,
    /// What the run trained on (`None` in checkpoints written before this was recorded).
    pub data: Option<DataRecord>,
    pub params: NetParams,
    pub momentum: NetParams,
    /// Whether the file carried tensor checksums (all verified) or predates them.
    pub checksummed: bool,
}

const FORMAT: &str = "alexnet-checkpoint-1";

fn tensor_name(prefix: &str, plan: &Plan, layer: usize, tower: usize, part: &str) -> String {
    format!("{prefix}{}.{tower}.{part}", plan.layers[layer].name())
}

fn f32_bytes(data: &[f32]) -> Vec<u8> {
    data.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The checksum stored for a tensor: XXH3-64 of its little-endian bytes, as `xxh3:<16 hex>`.
fn checksum(bytes: &[u8]) -> String {
    format!("xxh3:{:016x}", xxhash_rust::xxh3::xxh3_64(bytes))
}

/// Checks tensor `name`'s bytes against its stored checksum (checkpoints older than checksums
/// have none to check).
fn verify(name: &str, bytes: &[u8], checksums: Option<&BTreeMap<String, String>>) -> Result<()> {
    if let Some(sums) = checksums {
        let stored = sums
            .get(name)
            .with_context(|| format!("tensor {name} has no checksum in the metadata"))?;
        ensure!(
            *stored == checksum(bytes),
            "tensor {name} does not match its checksum: the file was changed or damaged after it \
             was saved"
        );
    }
    Ok(())
}

/// Little-endian f32 bytes as values.
fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Writes `path` atomically (see [`crate::files::write_atomic`]), with a checksum of every
/// tensor in the metadata.
pub fn save(
    path: &Path,
    plan: &Plan,
    state: &TrainState,
    params: &NetParams,
    momentum: &NetParams,
    data: Option<&DataRecord>,
) -> Result<()> {
    save_with_stats(path, plan, state, params, momentum, data, None)
}

/// The mean image's tensor, and the metadata key of the rest of the statistics.
const STATS_MEAN: &str = "inference.mean";
const STATS_KEY: &str = "inference";

/// [`save`], also keeping `stats` (the mean image as the tensor `inference.mean`, the rest in
/// the metadata) so that `predict` and `eval` need no other file.
#[allow(clippy::too_many_arguments)]
pub fn save_with_stats(
    path: &Path,
    plan: &Plan,
    state: &TrainState,
    params: &NetParams,
    momentum: &NetParams,
    data: Option<&DataRecord>,
    stats: Option<&Stats>,
) -> Result<()> {
    let mut named: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    if let Some(s) = stats {
        named.push((
            STATS_MEAN.into(),
            vec![3, s.base, s.base],
            f32_bytes(&s.mean),
        ));
    }
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
    let checksums: BTreeMap<&str, String> = named
        .iter()
        .map(|(name, _, bytes)| (name.as_str(), checksum(bytes)))
        .collect();
    let views = named
        .iter()
        .map(|(name, shape, bytes)| {
            Ok((
                name.clone(),
                TensorView::new(Dtype::F32, shape.clone(), bytes)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut metadata = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("spec".to_string(), serde_json::to_string(&plan.spec)?),
        ("state".to_string(), serde_json::to_string(state)?),
        ("checksums".to_string(), serde_json::to_string(&checksums)?),
    ]);
    if let Some(data) = data {
        metadata.insert("data".to_string(), serde_json::to_string(data)?);
    }
    if let Some(s) = stats {
        let rest = serde_json::json!({
            "base": s.base, "images": s.images, "samples": s.samples, "classes": s.classes,
            "covariance": s.covariance, "eigenvalues": s.eigenvalues, "eigenvectors": s.eigenvectors,
        });
        metadata.insert(STATS_KEY.to_string(), rest.to_string());
    }
    let bytes = safetensors::serialize(views, Some(metadata))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    crate::files::write_atomic(path, &bytes)
}

/// Reads a checkpoint written by `save`: checks that it is one, that every tensor has the shape
/// its spec gives and matches its checksum, and that every weight is finite. Every error names
/// the file.
pub fn load(path: &Path) -> Result<Checkpoint> {
    parse(path).with_context(|| format!("checkpoint {}", path.display()))
}

fn parse(path: &Path) -> Result<Checkpoint> {
    let bytes = crate::files::read_whole(path)?;
    let (_, meta) =
        SafeTensors::read_metadata(&bytes).map_err(|e| anyhow!("not a safetensors file ({e})"))?;
    let meta = meta.metadata().clone().unwrap_or_default();
    ensure!(
        meta.get("format").map(String::as_str) == Some(FORMAT),
        "not an alexnet checkpoint (no alexnet metadata)"
    );
    let field = |key: &str, what: &str| -> Result<&String> {
        meta.get(key)
            .with_context(|| format!("the metadata lacks {what} (key {key:?})"))
    };
    let spec: NetSpec = serde_json::from_str(field("spec", "the network spec")?)
        .context("reading the network spec in its metadata")?;
    let state: TrainState = serde_json::from_str(field("state", "the training state")?)
        .context("reading the training state in its metadata")?;
    let data: Option<DataRecord> = meta
        .get("data")
        .map(|d| serde_json::from_str(d))
        .transpose()
        .context("reading the data record in its metadata")?;
    let checksums: Option<BTreeMap<String, String>> = meta
        .get("checksums")
        .map(|c| serde_json::from_str(c))
        .transpose()
        .context("reading the tensor checksums in its metadata")?;
    let plan = Plan::new(&spec).context("its network spec does not plan")?;
    let tensors = SafeTensors::deserialize(&bytes).map_err(|e| anyhow!("damaged tensors ({e})"))?;
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
                            let view = tensors
                                .tensor(&name)
                                .map_err(|_| anyhow!("missing tensor {name}"))?;
                            ensure!(
                                view.dtype() == Dtype::F32 && view.shape() == want,
                                "tensor {name}: expected f32 {want:?}, found {:?} {:?}",
                                view.dtype(),
                                view.shape()
                            );
                            verify(&name, view.data(), checksums.as_ref())?;
                            let data = f32s(view.data());
                            if let Some(i) = data.iter().position(|v| !v.is_finite()) {
                                bail!(
                                    "tensor {name} holds {} non-finite values (the first, {}, at \
                                     element {i}): the run diverged or the file is damaged",
                                    data.iter().filter(|v| !v.is_finite()).count(),
                                    data[i]
                                );
                            }
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
    let stats = match meta.get(STATS_KEY) {
        None => None,
        Some(text) => Some(
            read_stats(text, &tensors, checksums.as_ref())
                .context("reading the statistics kept in it")?,
        ),
    };
    Ok(Checkpoint {
        stats,
        params: read("")?,
        momentum: read("momentum.")?,
        spec,
        state,
        data,
        checksummed: checksums.is_some(),
    })
}

/// The statistics `save_with_stats` kept: the metadata's JSON and the mean image tensor.
fn read_stats(
    text: &str,
    tensors: &SafeTensors,
    checksums: Option<&BTreeMap<String, String>>,
) -> Result<Stats> {
    #[derive(Deserialize)]
    struct Rest {
        base: usize,
        images: usize,
        samples: usize,
        classes: Vec<String>,
        covariance: [[f64; 3]; 3],
        eigenvalues: [f64; 3],
        eigenvectors: [[f64; 3]; 3],
    }
    let r: Rest = serde_json::from_str(text)?;
    let view = tensors
        .tensor(STATS_MEAN)
        .map_err(|_| anyhow!("missing tensor {STATS_MEAN}"))?;
    ensure!(
        view.dtype() == Dtype::F32 && view.shape() == [3, r.base, r.base],
        "tensor {STATS_MEAN}: expected f32 [3, {0}, {0}]",
        r.base
    );
    verify(STATS_MEAN, view.data(), checksums)?;
    let mean = f32s(view.data());
    ensure!(
        mean.iter().all(|m| (0.0..=255.0).contains(m)),
        "tensor {STATS_MEAN} holds values that are no mean pixel"
    );
    Ok(Stats {
        base: r.base,
        mean,
        covariance: r.covariance,
        eigenvalues: r.eigenvalues,
        eigenvectors: r.eigenvectors,
        images: r.images,
        samples: r.samples,
        classes: r.classes,
    })
}

impl Checkpoint {
    /// Refuses a checkpoint of another network than `plan`'s, saying how they differ.
    pub fn check_model(&self, plan: &Plan) -> Result<()> {
        // The precision of the products is not part of the model: fp32 weights serve any.
        let mut theirs_at_ours = self.spec.clone();
        theirs_at_ours.precision = plan.spec.precision;
        if theirs_at_ours == plan.spec {
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
