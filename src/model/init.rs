//! The paper's initialisation (§5): weights from N(0, σ²) (σ = 0.01 unless the spec says
//! otherwise), biases a constant per layer. Drawn from Philox so that the same seed gives the same
//! network on every machine and for every tower placement.

use super::plan::Plan;
use super::spec::Layer;
use crate::ops::philox;
use crate::tensor::Tensor;
use rayon::prelude::*;

/// One tower's share of one weighted layer.
#[derive(Clone, Debug, PartialEq)]
pub struct TowerParams {
    pub weight: Tensor,
    pub bias: Tensor,
}

/// `params[layer][tower]`: empty for layers without weights, one entry per active tower otherwise.
pub type NetParams = Vec<Vec<TowerParams>>;

/// The Philox stream of the weights of `layer` on `tower`.
fn init_stream(layer: usize, tower: usize) -> u64 {
    (1 << 40) | ((layer as u64) << 8) | tower as u64
}

pub fn init_params(plan: &Plan, seed: u64) -> NetParams {
    plan.layers
        .iter()
        .map(|l| {
            let init = match &l.layer {
                Layer::Conv(c) => c.init,
                Layer::Fc(f) => f.init,
                _ => return Vec::new(),
            };
            let shape = l.weight_shape().expect("conv and fc layers have weights");
            (0..l.active_towers)
                .map(|t| {
                    let n: usize = shape.iter().product();
                    let stream = init_stream(l.index, t);
                    let std = init.weight_std as f64;
                    // Element i takes words 2i and 2i+1: one Philox block serves two elements.
                    let mut weight: Vec<f32> = (0..(n as u64).div_ceil(2))
                        .into_par_iter()
                        .flat_map_iter(|b| {
                            let w = philox::block(seed, stream, b);
                            [philox::normal(w[0], w[1]), philox::normal(w[2], w[3])]
                                .map(|z| (std * z) as f32)
                        })
                        .collect();
                    weight.truncate(n);
                    TowerParams {
                        weight: Tensor::from_vec(&shape, weight),
                        bias: Tensor::from_vec(&[shape[0]], vec![init.bias; shape[0]]),
                    }
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Ablations, preset};

    #[test]
    fn paper_init_has_the_papers_statistics_and_biases() {
        let plan = Plan::new(&preset("paper", &Ablations::default()).unwrap()).unwrap();
        let params = init_params(&plan, 1);
        let count: usize = params
            .iter()
            .flatten()
            .map(|p| p.weight.len() + p.bias.len())
            .sum();
        assert_eq!(count, 60_965_224);
        let fc6 = &params[plan.layer("fc6").unwrap().index][1].weight.data;
        let n = fc6.len() as f64;
        let mean = fc6.iter().map(|&v| v as f64).sum::<f64>() / n;
        let std = (fc6.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
        // 18.9 M draws: the sample std is within 1e-4 relative of 0.01 with overwhelming odds.
        assert!(
            (std - 0.01).abs() < 1e-5 && mean.abs() < 1e-5,
            "std {std} mean {mean}"
        );
        for (name, bias) in [
            ("conv1", 0.0),
            ("conv2", 1.0),
            ("conv3", 0.0),
            ("conv4", 1.0),
            ("conv5", 1.0),
            ("fc6", 1.0),
            ("fc7", 1.0),
            ("fc8", 0.0),
        ] {
            let l = plan.layer(name).unwrap();
            assert!(
                params[l.index]
                    .iter()
                    .all(|p| p.bias.data.iter().all(|&b| b == bias)),
                "{name}"
            );
        }
        // Same seed, same network; towers differ from each other.
        assert_eq!(init_params(&plan, 1)[0], params[0]);
        assert_ne!(params[0][0].weight, params[0][1].weight);
    }
}
