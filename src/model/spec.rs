//! The network as data: a JSON-serialisable spec naming the layers, their towers and the points
//! where the towers exchange activations. Presets (`presets.rs`) build specs; `plan.rs` checks one
//! and works out every shape.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetSpec {
    pub name: String,
    pub input: InputSpec,
    /// How many towers ("GPUs" in the paper) hold the split layers.
    pub towers: usize,
    pub layers: Vec<Layer>,
    #[serde(default)]
    pub optim: OptimSpec,
    /// How training images are augmented and the mean subtracted (`paper` unless a spec says
    /// `net145`, the released code's way).
    #[serde(default)]
    pub augment: crate::recipe::Augment,
    /// The number format of the convolutions' and fc layers' products (`fp32` unless a spec
    /// says `tf32` or `bf16`; see `ops::precision`).
    #[serde(default)]
    pub precision: crate::ops::precision::Precision,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    pub channels: usize,
    /// Height and width of the (square) crop the network sees.
    pub size: usize,
}

/// Which activations a weighted layer reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Connect {
    /// Each tower reads only its own tower's previous output.
    #[default]
    Own,
    /// Each tower reads every tower's previous output: an exchange point (paper Figure 2's
    /// cross connections).
    All,
}

/// How a weighted layer's units are placed on the towers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// Each tower holds `1 / towers` of the units.
    #[default]
    Split,
    /// Tower 0 holds all the units (`net145`'s fc8); the other towers hold none.
    First,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Layer {
    Conv(Conv),
    Fc(Fc),
    Relu(Named),
    Tanh(Named),
    Lrn(Lrn),
    SpatialNorm(SpatialNorm),
    MaxPool(MaxPool),
    Dropout(Dropout),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Named {
    pub name: String,
}

/// Initialisation and learning-rate settings shared by the weighted layers.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Init {
    /// Weights are drawn from N(0, weight_std²).
    #[serde(default = "default_weight_std")]
    pub weight_std: f32,
    /// Biases start at this constant.
    #[serde(default)]
    pub bias: f32,
    /// Multiplies the learning rate of this layer's weights and biases (0 freezes the layer).
    #[serde(default = "one")]
    pub lr_mult: f32,
}

impl Default for Init {
    fn default() -> Self {
        Init {
            weight_std: default_weight_std(),
            bias: 0.0,
            lr_mult: 1.0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conv {
    pub name: String,
    /// Filters of the whole layer, split evenly across the towers.
    pub filters: usize,
    pub kernel: usize,
    #[serde(default = "one_usize")]
    pub stride: usize,
    /// Zeros added before each spatial axis.
    #[serde(default)]
    pub pad: usize,
    /// Zeros added after each spatial axis; `pad` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad_end: Option<usize>,
    #[serde(default)]
    pub input: Connect,
    /// Filter groups within one tower: group g sees only the g-th slice of the input channels.
    /// A one-tower net with `groups = 2` computes what two towers reading their own halves do.
    #[serde(default = "one_usize", skip_serializing_if = "is_one")]
    pub groups: usize,
    #[serde(default)]
    pub init: Init,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fc {
    pub name: String,
    /// Units of the whole layer.
    pub units: usize,
    #[serde(default)]
    pub input: Connect,
    #[serde(default)]
    pub placement: Placement,
    #[serde(default)]
    pub init: Init,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lrn {
    pub name: String,
    pub size: usize,
    pub k: f32,
    pub alpha: f32,
    pub beta: f32,
    /// Divide α by `size` (cuda-convnet, Caffe) instead of using it as the paper's text does.
    #[serde(default)]
    pub alpha_over_n: bool,
    /// Channel groups the window may not cross (a one-tower net holding two towers' maps).
    #[serde(default = "one_usize", skip_serializing_if = "is_one")]
    pub groups: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpatialNorm {
    pub name: String,
    pub size: usize,
    pub k: f32,
    pub alpha: f32,
    pub beta: f32,
    /// Divide α by `size²` (cuda-convnet's `rnorm`).
    #[serde(default)]
    pub alpha_over_area: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxPool {
    pub name: String,
    pub size: usize,
    pub stride: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dropout {
    pub name: String,
    /// Probability of dropping a unit in training.
    pub p: f32,
}

/// The optimiser's settings (paper §5); the learning-rate schedule belongs to the training run.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimSpec {
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    /// Biases learn at this multiple of the weights' rate (`net145`: 2).
    #[serde(default = "one")]
    pub bias_lr_mult: f32,
    /// Whether biases take weight decay (the paper's formula read literally: yes; `net145`: no).
    #[serde(default = "yes")]
    pub bias_decay: bool,
}

impl Default for OptimSpec {
    fn default() -> Self {
        OptimSpec {
            lr: 0.01,
            momentum: 0.9,
            weight_decay: 0.0005,
            bias_lr_mult: 1.0,
            bias_decay: true,
        }
    }
}

fn default_weight_std() -> f32 {
    0.01
}
fn one() -> f32 {
    1.0
}
fn one_usize() -> usize {
    1
}
fn is_one(v: &usize) -> bool {
    *v == 1
}
fn yes() -> bool {
    true
}

impl Layer {
    pub fn name(&self) -> &str {
        match self {
            Layer::Conv(l) => &l.name,
            Layer::Fc(l) => &l.name,
            Layer::Relu(l) | Layer::Tanh(l) => &l.name,
            Layer::Lrn(l) => &l.name,
            Layer::SpatialNorm(l) => &l.name,
            Layer::MaxPool(l) => &l.name,
            Layer::Dropout(l) => &l.name,
        }
    }

    /// The spec's `type` tag, for tables and messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Layer::Conv(_) => "conv",
            Layer::Fc(_) => "fc",
            Layer::Relu(_) => "relu",
            Layer::Tanh(_) => "tanh",
            Layer::Lrn(_) => "lrn",
            Layer::SpatialNorm(_) => "spatial_norm",
            Layer::MaxPool(_) => "max_pool",
            Layer::Dropout(_) => "dropout",
        }
    }
}

impl NetSpec {
    /// The classifier's classes: the units of the last layer (an fc layer in every net here).
    pub fn classes(&self) -> Option<usize> {
        match self.layers.last() {
            Some(Layer::Fc(fc)) => Some(fc.units),
            _ => None,
        }
    }

    /// This network with its classifier sized for `classes`: split across the towers when they
    /// divide it, else on the first tower alone (as `net145` places its fc8). Returns the spec
    /// and, when the placement had to change, a sentence saying so.
    pub fn with_classes(mut self, classes: usize) -> anyhow::Result<(NetSpec, Option<String>)> {
        anyhow::ensure!(classes >= 1, "a classifier needs at least one class");
        let towers = self.towers;
        let Some(Layer::Fc(fc)) = self.layers.last_mut() else {
            anyhow::bail!(
                "the network's last layer is not an fc layer, so it has no classes to size"
            );
        };
        fc.units = classes;
        let mut note = None;
        if fc.placement == Placement::Split && towers > 1 && classes % towers != 0 {
            fc.placement = Placement::First;
            note = Some(format!(
                "{}: {classes} classes do not split across {towers} towers, so it sits on the first tower alone",
                fc.name
            ));
        }
        Ok((self, note))
    }

    pub fn from_json(text: &str) -> anyhow::Result<NetSpec> {
        let spec: NetSpec = serde_json::from_str(text)?;
        Ok(spec)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a spec always serialises")
    }
}
