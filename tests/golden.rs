//! The engine against golden values from an independent implementation: `scripts/golden.py`
//! computes small two-tower networks in JAX, in float64, from the paper's definitions; this test
//! runs the same networks on the CPU device and compares logits, loss, every gradient, and the
//! weights after one SGD step.

use alexnet::device::cpu::CpuDevice;
use alexnet::model::init::{NetParams, TowerParams};
use alexnet::model::{NetSpec, Plan};
use alexnet::parallel::Network;
use alexnet::tensor::{Tensor, max_rel_err};
use serde_json::Value;

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn net_params(plan: &Plan, v: &Value) -> NetParams {
    plan.layers
        .iter()
        .zip(v.as_array().unwrap())
        .map(|(lp, towers)| {
            towers
                .as_array()
                .unwrap()
                .iter()
                .map(|t| {
                    let shape = lp.weight_shape().unwrap();
                    TowerParams {
                        weight: Tensor::from_vec(&shape, floats(&t["weight"])),
                        bias: Tensor::from_vec(&shape[..1], floats(&t["bias"])),
                    }
                })
                .collect()
        })
        .collect()
}

fn flatten(p: &NetParams) -> Vec<f32> {
    p.iter()
        .flatten()
        .flat_map(|t| t.weight.data.iter().chain(&t.bias.data).copied())
        .collect()
}

// Tolerances. The engine runs in f32, the fixture in f64. Every quantity here is a sum of at
// most a few hundred products of values of order one, so the f32 result carries a relative error
// of a few 1e-6 on its magnitude; 1e-4 leaves a wide margin and still catches any wrong term.
// Relative error is taken against max(|want|, floor) so elements that cancel to near zero do not
// inflate it. A gradient is a sum over the batch and the output pixels of products up to the size
// of the largest gradient, so its f32 rounding error is absolute, about eps·sqrt(terms)·max|g|:
// the floor is 1e-2 of the largest gradient, below which an element is judged by that absolute
// error. Logits and weights are of order one; their floor is 1e-2.
const TOL: f64 = 1e-4;
const GRAD_FLOOR: f64 = 1e-2;

fn check(name: &str) {
    let path = format!(
        "{}/tests/fixtures/golden_{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let fx: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let spec: NetSpec = serde_json::from_value(fx["spec"].clone()).unwrap();
    let plan = Plan::new(&spec).unwrap();
    let params = net_params(&plan, &fx["params"]);
    let mut net = Network::new(
        &plan,
        vec![CpuDevice; spec.towers],
        &params,
        fx["seed"].as_u64().unwrap(),
    )
    .unwrap();
    let images = floats(&fx["images"]);
    let labels: Vec<u32> = fx["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_u64().unwrap() as u32)
        .collect();
    let stats = net
        .forward_backward(&images, &labels, fx["step"].as_u64().unwrap())
        .unwrap();

    let want_loss = fx["loss"].as_f64().unwrap();
    assert!(
        (stats.loss - want_loss).abs() < TOL * want_loss,
        "{name}: loss {} vs {want_loss}",
        stats.loss
    );
    let logits = net.logits().unwrap();
    let err = max_rel_err(&logits, &floats(&fx["logits"]), 1e-2);
    println!(
        "{name}: loss {:.3e} logits {err:.3e}",
        (stats.loss - want_loss).abs() / want_loss
    );
    assert!(err < TOL, "{name}: logits differ by {err}");

    let grads = flatten(&net.gradients().unwrap());
    let want = flatten(&net_params(&plan, &fx["grads"]));
    let scale = want.iter().fold(0f32, |m, g| m.max(g.abs())) as f64;
    let err = max_rel_err(&grads, &want, GRAD_FLOOR * scale);
    let abs = grads
        .iter()
        .zip(&want)
        .map(|(g, w)| (g - w).abs())
        .fold(0f32, f32::max) as f64;
    println!(
        "{name}: gradients {err:.3e}, largest absolute error {:.3e} of the largest |g| {scale:.3}",
        abs / scale
    );
    assert!(err < TOL, "{name}: gradients differ by {err}");
    // Gradient by gradient, so a failure names the layer.
    for (l, (got, want)) in net
        .gradients()
        .unwrap()
        .iter()
        .zip(net_params(&plan, &fx["grads"]))
        .enumerate()
    {
        for (t, (g, w)) in got.iter().zip(&want).enumerate() {
            let e = max_rel_err(&g.weight.data, &w.weight.data, GRAD_FLOOR * scale)
                .max(max_rel_err(&g.bias.data, &w.bias.data, GRAD_FLOOR * scale));
            assert!(
                e < TOL,
                "{name}: {} tower {t} gradient differs by {e}",
                plan.layers[l].name()
            );
        }
    }

    net.update(fx["lr"].as_f64().unwrap() as f32).unwrap();
    let err = max_rel_err(
        &flatten(&net.params().unwrap()),
        &flatten(&net_params(&plan, &fx["updated"])),
        1e-2,
    );
    println!("{name}: updated weights {err:.3e}");
    assert!(err < TOL, "{name}: weights after one step differ by {err}");
}

#[test]
fn paper_style_two_tower_net_matches_jax() {
    check("paper_tiny");
}

#[test]
fn net145_style_two_tower_net_matches_jax() {
    check("net145_tiny");
}
