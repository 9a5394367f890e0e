//! The shipped networks. `paper` follows the paper's text (DESIGN §1); `net145` the released 2012
//! configuration that produced the published numbers; `one-tower` the paper's one-GPU comparison
//! net; `cifar` a small four-layer net for Figure 1 style runs on 32x32 images.

use super::spec::*;
use crate::recipe::Augment;
use anyhow::{Result, bail};

pub const PRESETS: &[&str] = &["paper", "one-tower", "net145", "cifar"];

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Activation {
    #[default]
    Relu,
    Tanh,
}

/// The paper's ablations, as switches over a preset.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ablations {
    /// Local response normalisation layers present.
    pub lrn: bool,
    /// Divide LRN's α by n (cuda-convnet, Caffe). `None` keeps the preset's own choice.
    pub alpha_over_n: Option<bool>,
    /// Pooling window: 3 (overlapping, the paper) or 2 (plain); stride stays 2.
    pub pool_size: usize,
    pub activation: Activation,
    pub dropout: bool,
}

impl Default for Ablations {
    fn default() -> Self {
        Ablations {
            lrn: true,
            alpha_over_n: None,
            pool_size: 3,
            activation: Activation::Relu,
            dropout: true,
        }
    }
}

pub fn preset(name: &str, ab: &Ablations) -> Result<NetSpec> {
    if ab.pool_size == 0 {
        bail!("pool size must be positive");
    }
    let spec = match name {
        "paper" => paper_like("paper", 2, [96, 256, 384, 384, 256], 4096, ab),
        "one-tower" => paper_like("one-tower", 1, [48, 128, 192, 192, 256], 4096, ab),
        "net145" => net145(ab),
        "cifar" => cifar(ab),
        other => bail!(
            "unknown preset {other:?}; the presets are {}",
            PRESETS.join(", ")
        ),
    };
    Ok(spec)
}

fn named(name: &str) -> Named {
    Named { name: name.into() }
}

fn act(ab: &Ablations, name: &str) -> Layer {
    match ab.activation {
        Activation::Relu => Layer::Relu(named(name)),
        Activation::Tanh => Layer::Tanh(named(name)),
    }
}

fn conv(
    name: &str,
    filters: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    input: Connect,
    init: Init,
) -> Layer {
    Layer::Conv(Conv {
        name: name.into(),
        filters,
        kernel,
        stride,
        pad,
        pad_end: None,
        input,
        groups: 1,
        init,
    })
}

fn fc(name: &str, units: usize, init: Init) -> Layer {
    Layer::Fc(Fc {
        name: name.into(),
        units,
        input: Connect::All,
        placement: Placement::Split,
        init,
    })
}

fn lrn(name: &str, alpha_over_n: bool) -> Layer {
    Layer::Lrn(Lrn {
        name: name.into(),
        size: 5,
        k: 2.0,
        alpha: 1e-4,
        beta: 0.75,
        alpha_over_n,
        groups: 1,
    })
}

fn pool(name: &str, ab: &Ablations) -> Layer {
    Layer::MaxPool(MaxPool {
        name: name.into(),
        size: ab.pool_size,
        stride: 2,
    })
}

fn init(weight_std: f32, bias: f32) -> Init {
    Init {
        weight_std,
        bias,
        lr_mult: 1.0,
    }
}

/// The paper's text: conv → ReLU → LRN → pool for layers 1 and 2; biases 1 in conv2, conv4,
/// conv5, fc6, fc7 (§5).
fn paper_like(
    name: &str,
    towers: usize,
    f: [usize; 5],
    fc_units: usize,
    ab: &Ablations,
) -> NetSpec {
    let over_n = ab.alpha_over_n.unwrap_or(false);
    let mut layers = vec![
        conv("conv1", f[0], 11, 4, 0, Connect::Own, init(0.01, 0.0)),
        act(ab, "relu1"),
    ];
    if ab.lrn {
        layers.push(lrn("lrn1", over_n));
    }
    layers.push(pool("pool1", ab));
    layers.extend([
        conv("conv2", f[1], 5, 1, 2, Connect::Own, init(0.01, 1.0)),
        act(ab, "relu2"),
    ]);
    if ab.lrn {
        layers.push(lrn("lrn2", over_n));
    }
    layers.push(pool("pool2", ab));
    layers.extend([
        conv("conv3", f[2], 3, 1, 1, Connect::All, init(0.01, 0.0)),
        act(ab, "relu3"),
        conv("conv4", f[3], 3, 1, 1, Connect::Own, init(0.01, 1.0)),
        act(ab, "relu4"),
        conv("conv5", f[4], 3, 1, 1, Connect::Own, init(0.01, 1.0)),
        act(ab, "relu5"),
        pool("pool5", ab),
    ]);
    for (fc_name, act_name, drop_name) in [("fc6", "relu6", "drop6"), ("fc7", "relu7", "drop7")] {
        layers.extend([fc(fc_name, fc_units, init(0.01, 1.0)), act(ab, act_name)]);
        if ab.dropout {
            layers.push(Layer::Dropout(Dropout {
                name: drop_name.into(),
                p: 0.5,
            }));
        }
    }
    layers.push(fc("fc8", 1000, init(0.01, 0.0)));
    NetSpec {
        name: name.into(),
        input: InputSpec {
            channels: 3,
            size: 227,
        },
        towers,
        layers,
        optim: OptimSpec::default(),
        augment: Augment::Paper,
        precision: Default::default(),
    }
}

/// layers-145 of the released 2012 source (DESIGN §1, "The paper's text vs the code").
fn net145(ab: &Ablations) -> NetSpec {
    let over_n = ab.alpha_over_n.unwrap_or(true);
    let mut layers = vec![Layer::Conv(Conv {
        name: "conv1".into(),
        filters: 96,
        kernel: 11,
        stride: 4,
        pad: 0,
        pad_end: Some(3),
        input: Connect::Own,
        groups: 1,
        init: init(0.01, 0.0),
    })];
    // conv1 → LRN → pool → ReLU: no non-linearity before the first normalisation.
    if ab.lrn {
        layers.push(lrn("lrn1", over_n));
    }
    layers.extend([pool("pool1", ab), act(ab, "relu1")]);
    layers.extend([
        conv("conv2", 256, 5, 1, 2, Connect::Own, init(0.01, 1.0)),
        act(ab, "relu2"),
    ]);
    if ab.lrn {
        layers.push(lrn("lrn2", over_n));
        layers.push(Layer::SpatialNorm(SpatialNorm {
            name: "snorm2".into(),
            size: 5,
            k: 1.0,
            alpha: 0.001,
            beta: 0.75,
            alpha_over_area: true,
        }));
    }
    layers.extend([
        pool("pool2", ab),
        conv("conv3", 384, 3, 1, 1, Connect::All, init(0.03, 0.0)),
        act(ab, "relu3"),
        conv("conv4", 384, 3, 1, 1, Connect::Own, init(0.03, 1.0)),
        act(ab, "relu4"),
        conv("conv5", 256, 3, 1, 1, Connect::Own, init(0.03, 1.0)),
        pool("pool5", ab),
        act(ab, "relu5"),
    ]);
    for (fc_name, act_name, drop_name) in [("fc6", "relu6", "drop6"), ("fc7", "relu7", "drop7")] {
        layers.extend([fc(fc_name, 4096, init(0.01, 1.0)), act(ab, act_name)]);
        if ab.dropout {
            layers.push(Layer::Dropout(Dropout {
                name: drop_name.into(),
                p: 0.5,
            }));
        }
    }
    layers.push(Layer::Fc(Fc {
        name: "fc8".into(),
        units: 1000,
        input: Connect::All,
        placement: Placement::First,
        init: init(0.01, 0.0),
    }));
    NetSpec {
        name: "net145".into(),
        input: InputSpec {
            channels: 3,
            size: 224,
        },
        towers: 2,
        layers,
        optim: OptimSpec {
            bias_lr_mult: 2.0,
            bias_decay: false,
            ..OptimSpec::default()
        },
        augment: Augment::Net145,
        precision: Default::default(),
    }
}

/// A four-layer two-tower net for 32x32 images (three convolutions and the classifier), in the
/// spirit of the CIFAR-10 net of the paper's Figure 1 and cuda-convnet's layers-18pct, with the
/// same exchange pattern as `paper` (conv3 and the classifier read both towers).
fn cifar(ab: &Ablations) -> NetSpec {
    let mut layers = vec![
        conv("conv1", 32, 5, 1, 2, Connect::Own, init(0.01, 0.0)),
        act(ab, "relu1"),
        pool("pool1", ab),
    ];
    if ab.lrn {
        layers.push(lrn("lrn1", ab.alpha_over_n.unwrap_or(false)));
    }
    layers.extend([
        conv("conv2", 32, 5, 1, 2, Connect::Own, init(0.01, 0.0)),
        act(ab, "relu2"),
        pool("pool2", ab),
        conv("conv3", 64, 5, 1, 2, Connect::All, init(0.01, 0.0)),
        act(ab, "relu3"),
        pool("pool3", ab),
    ]);
    // The four-layer net of Figure 1 has no dropout, so the switch changes nothing here.
    layers.push(fc("fc4", 10, init(0.01, 0.0)));
    NetSpec {
        name: "cifar".into(),
        input: InputSpec {
            channels: 3,
            size: 32,
        },
        towers: 2,
        layers,
        optim: OptimSpec::default(),
        augment: Augment::Paper,
        precision: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Plan;

    fn plan(name: &str) -> Plan {
        Plan::new(&preset(name, &Ablations::default()).unwrap()).unwrap()
    }

    #[test]
    fn paper_totals_match_the_paper() {
        let p = plan("paper");
        assert_eq!(p.params(), 60_965_224);
        assert_eq!(p.macs(), 724_406_816);
        let out = |n: &str| p.layer(n).unwrap().output_total().to_string();
        assert_eq!(out("conv1"), "55x55x96");
        assert_eq!(out("pool1"), "27x27x96");
        assert_eq!(out("pool2"), "13x13x256");
        assert_eq!(out("conv5"), "13x13x256");
        assert_eq!(out("pool5"), "6x6x256");
        assert_eq!(out("fc8"), "1000");
        let exchanges: Vec<&str> = p
            .layers
            .iter()
            .filter(|l| l.exchange)
            .map(|l| l.name())
            .collect();
        assert_eq!(exchanges, ["conv3", "fc6", "fc7", "fc8"]);
    }

    #[test]
    fn every_preset_and_ablation_plans() {
        for name in PRESETS {
            for ab in [
                Ablations::default(),
                Ablations {
                    lrn: false,
                    pool_size: 2,
                    activation: Activation::Tanh,
                    dropout: false,
                    alpha_over_n: Some(true),
                },
            ] {
                let spec = preset(name, &ab).unwrap();
                let p = Plan::new(&spec).unwrap_or_else(|e| panic!("{name} {ab:?}: {e}"));
                // The spec survives a JSON round trip unchanged.
                assert_eq!(NetSpec::from_json(&spec.to_json()).unwrap(), spec);
                assert!(p.params() > 0);
            }
        }
    }

    #[test]
    fn net145_differs_from_the_text_where_the_design_says() {
        let p = plan("net145");
        assert_eq!(p.layer("conv1").unwrap().output.to_string(), "55x55x48");
        assert_eq!(p.layer("fc8").unwrap().active_towers, 1);
        assert!(p.layer("snorm2").is_some());
        // conv1 feeds LRN directly: no ReLU before the first normalisation.
        assert_eq!(p.layers[1].layer.kind(), "lrn");
        assert_eq!(p.spec.optim.bias_lr_mult, 2.0);
    }

    #[test]
    fn one_tower_keeps_conv5_and_fc_full_size() {
        let p = plan("one-tower");
        assert_eq!(p.layer("conv4").unwrap().output.c, 192);
        assert_eq!(p.layer("conv5").unwrap().output.c, 256);
        assert_eq!(p.layer("fc6").unwrap().output.c, 4096);
    }

    #[test]
    fn nonsense_specs_name_the_field() {
        let mut spec = preset("paper", &Ablations::default()).unwrap();
        if let Layer::Conv(c) = &mut spec.layers[0] {
            c.filters = 95;
        }
        let e = Plan::new(&spec).unwrap_err().to_string();
        assert!(e.contains("layers[0] (conv1).filters"), "{e}");

        let mut spec = preset("cifar", &Ablations::default()).unwrap();
        spec.input.size = 8;
        let e = Plan::new(&spec).unwrap_err().to_string();
        assert!(e.contains(".size") || e.contains(".kernel"), "{e}");

        let bad = r#"{"name":"x","input":{"channels":3,"size":8},"towers":1,
            "layers":[{"type":"fc","name":"fc","units":10,"unitz":3}]}"#;
        let e = NetSpec::from_json(bad).unwrap_err().to_string();
        assert!(e.contains("unitz"), "{e}");
    }
}
