//! The one-device view of a tower network: the same function as one tower holding every
//! tower's maps, with grouped convolutions and group-bounded LRN where the towers read only their
//! own halves. Used to prove that the exchange is a placement, not a different function, and to
//! run a tower net where only one device exists.

use super::init::{NetParams, TowerParams};
use super::plan::Plan;
use super::spec::{Connect, Layer, NetSpec, Placement};
use crate::tensor::Tensor;
use anyhow::{Result, bail};

/// The single-tower spec computing what `spec`'s towers compute together.
pub fn grouped_spec(spec: &NetSpec) -> Result<NetSpec> {
    let towers = spec.towers;
    let mut out = spec.clone();
    out.name = format!("{}-grouped", spec.name);
    out.towers = 1;
    for (i, layer) in out.layers.iter_mut().enumerate() {
        match layer {
            // The image is whole on every tower, so the first layer needs no groups.
            Layer::Conv(c) if c.input == Connect::Own && i > 0 => c.groups *= towers,
            Layer::Conv(c) => c.input = Connect::Own,
            Layer::Lrn(l) => l.groups *= towers,
            Layer::Fc(f) => {
                f.input = Connect::Own;
                f.placement = Placement::Split;
            }
            Layer::SpatialNorm(_)
            | Layer::MaxPool(_)
            | Layer::Dropout(_)
            | Layer::Relu(_)
            | Layer::Tanh(_) => {}
        }
        if let Layer::Fc(f) = layer
            && spec.layers[i..]
                .iter()
                .skip(1)
                .any(|l| matches!(l, Layer::Conv(_)))
        {
            bail!(
                "{}: a convolution after an fc layer has no grouped equivalent",
                f.name
            );
        }
    }
    Ok(out)
}

/// Stacks each layer's tower parameters along the output dimension: tower `t`'s units become
/// units `t·k .. (t+1)·k` of the grouped layer, which is where `grouped_spec` puts them.
pub fn stack_towers(plan: &Plan, params: &NetParams) -> NetParams {
    plan.layers
        .iter()
        .zip(params)
        .map(|(_, towers)| {
            if towers.is_empty() {
                return Vec::new();
            }
            let cat = |pick: fn(&TowerParams) -> &Tensor| {
                let mut shape = pick(&towers[0]).shape.clone();
                shape[0] *= towers.len();
                Tensor::from_vec(
                    &shape,
                    towers
                        .iter()
                        .flat_map(|p| pick(p).data.iter().copied())
                        .collect(),
                )
            };
            vec![TowerParams {
                weight: cat(|p| &p.weight),
                bias: cat(|p| &p.bias),
            }]
        })
        .collect()
}
