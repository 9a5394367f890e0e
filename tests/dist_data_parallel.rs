//! Data-parallel replicas of the tower pair over the in-process collective (issue #16): R
//! replicas, each on its slice of a global batch of B, apply the update one network applies on
//! the whole batch, and stay identical to each other bit for bit.

pub mod support;

use alexnet::device::cpu::CpuDevice;
use alexnet::dist::replicas::{digest, run_in_process};
use alexnet::engine::Network;
use alexnet::model::init::{NetParams, init_params};
use alexnet::model::{Ablations, Plan, preset};
use support::net::batch;
use support::step_checks::{tensor_errors_with_floor, tensors};

/// The replicas compute the same sums in another order: each sums its B/R samples' terms of a
/// weight's gradient, then the collective adds the R partial means (in replica order) and
/// divides by R, where one network sums all B terms at once and divides by B. For R = 2 the
/// divisions agree exactly (halving is exact in binary, so (x/n)/2 = x/2n) and only the order of
/// the sums differs (measured: 5e-6 of an element, floor 1e-2). For R = 3 the loss gradient
/// (p - y)/2, divided by 3 later, is up to an ulp off (p - y)/6 in every element, so every
/// sample's backward starts ~1e-7 off and the sums that cancel magnify it: measured 1.4e-6 of a
/// tensor's largest magnitude, 1.25e-4 of elements near 1e-2 of it. So errors are taken against a
/// floor of 1e-1 of each tensor's largest magnitude, at 1e-4: 7x over the worst measured, and
/// a replica that drops or doubles a sample (~1/6 of its gradient) or draws another sample's
/// dropout mask (an O(1) change of fc6 and fc7) misses it by three orders. Each step starts from
/// one network's weights and momentum (see below).
const REPLICA_TOL: f64 = 1e-4;
const FLOOR: f64 = 1e-1;
/// Steps of each run: enough for momentum to carry one step's update into the next.
const STEPS: u64 = 3;
const LR: f32 = 0.02;

/// What each step leaves: the gradient (the averaged one, on a replica), the momentum (the
/// update, up to the learning rate) and the loss; and for one network, the weights and momentum
/// each step started from.
#[derive(Default)]
struct Trace {
    grads: Vec<NetParams>,
    velocities: Vec<NetParams>,
    losses: Vec<f64>,
    before: Vec<(NetParams, NetParams)>,
    weights: u64,
}

fn batches(plan: &Plan, n: usize) -> Vec<(Vec<f32>, Vec<u32>)> {
    (0..STEPS).map(|s| batch(plan, n, 40 + s)).collect()
}

fn single(plan: &Plan, params: &NetParams, n: usize, steps: usize) -> Trace {
    let mut net = Network::new(plan, vec![CpuDevice; 2], params, 5).unwrap();
    let mut t = Trace::default();
    for (step, (x, y)) in batches(plan, n).iter().take(steps).enumerate() {
        t.before
            .push((net.params().unwrap(), net.velocities().unwrap()));
        let stats = net.train_step(x, y, LR, step as u64).unwrap();
        t.grads.push(net.gradients().unwrap());
        t.velocities.push(net.velocities().unwrap());
        t.losses.push(stats.loss);
    }
    t.weights = digest(&net.params().unwrap());
    t
}

/// `replicas` replicas from `params` and `velocities`, through the steps `steps` of the
/// batches.
fn replicated(
    plan: &Plan,
    (params, velocities): &(NetParams, NetParams),
    n: usize,
    replicas: usize,
    steps: std::ops::Range<usize>,
) -> Vec<Trace> {
    let data = batches(plan, n);
    run_in_process(
        replicas,
        |_| Ok(vec![CpuDevice; 2]),
        plan,
        params,
        5,
        n,
        |rep| {
            rep.net.set_velocities(velocities)?;
            let mut t = Trace::default();
            for step in steps.clone() {
                let (x, y) = &data[step];
                let stats = rep.train_step(x, y, LR, step as u64)?;
                t.grads.push(rep.net.gradients()?);
                t.velocities.push(rep.net.velocities()?);
                t.losses.push(stats.loss);
            }
            t.weights = digest(&rep.net.params()?);
            Ok(t)
        },
    )
    .unwrap()
}

fn replicas_match_one_network(name: &str, n: usize, steps: usize) {
    let plan = Plan::new(&preset(name, &Ablations::default()).unwrap()).unwrap();
    let params = init_params(&plan, 1);
    let one = single(&plan, &params, n, steps);
    assert!(
        tensors(&one.grads[0]).iter().flatten().any(|&g| g != 0.0),
        "{name}: the gradients are all zero"
    );
    for replicas in [2, 3] {
        let case = format!("{name}, batch {n}, {replicas} replicas");
        // Several steps in a row: the replicas stay identical, bit for bit.
        let reps = replicated(&plan, &one.before[0], n, replicas, 0..steps);
        for (r, t) in reps.iter().enumerate() {
            assert_eq!(t.weights, reps[0].weights, "{case}: replica {r}'s weights");
            for s in 0..steps {
                assert_eq!(
                    tensors(&t.velocities[s]),
                    tensors(&reps[0].velocities[s]),
                    "{case}: replica {r}'s update at step {s}"
                );
                assert_eq!(t.losses[s], reps[0].losses[s], "{case}: replica {r}'s loss");
            }
        }
        // Each step against one network's same step from the same weights and momentum. (Run on
        // from the replicas' own weights, the paper's net soon differs from one network's by
        // more than reordering: weights one ulp apart move a near-tie of max pooling to the other
        // element now and then, which routes one position's gradient elsewhere, about 1% of a
        // conv1 filter gradient that sums 18,150 positions. That is the fp32 reordering's effect
        // on a discontinuous function, not a different update.)
        for s in 0..steps {
            let t = &replicated(&plan, &one.before[s], n, replicas, s..s + 1)[0];
            let g = tensor_errors_with_floor(&tensors(&t.grads[0]), &tensors(&one.grads[s]), FLOOR);
            let v = tensor_errors_with_floor(
                &tensors(&t.velocities[0]),
                &tensors(&one.velocities[s]),
                FLOOR,
            );
            println!("{case}, step {s}: gradient error {g:.2e}, update error {v:.2e}");
            assert!(g < REPLICA_TOL, "{case}, step {s}: gradients differ by {g}");
            assert!(v < REPLICA_TOL, "{case}, step {s}: updates differ by {v}");
            let l = (t.losses[0] - one.losses[s]).abs() / one.losses[s];
            assert!(
                l < 1e-6,
                "{case}, step {s}: loss {} vs {}",
                t.losses[0],
                one.losses[s]
            );
        }
    }
}

/// The paper's net, dropout included (a slice must draw the masks of its global samples).
#[test]
fn paper_replicas_equal_one_network() {
    // Two steps: the paper net is the slow one (about 2 s a step on two cores).
    replicas_match_one_network("paper", 6, 2);
}

#[test]
fn cifar_replicas_equal_one_network() {
    replicas_match_one_network("cifar", 12, STEPS as usize);
}

#[test]
fn a_batch_that_does_not_split_is_refused() {
    let plan = Plan::new(&preset("cifar", &Ablations::default()).unwrap()).unwrap();
    let params = init_params(&plan, 1);
    let e = run_in_process(
        3,
        |_| Ok(vec![CpuDevice; 2]),
        &plan,
        &params,
        5,
        8,
        |_| Ok(()),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("batch 8 does not split evenly over 3 replicas"),
        "{e}"
    );
}

/// A replica that fails ends the run with its own error, not a hang, and the others stop.
#[test]
fn a_failing_replica_stops_the_others() {
    let plan = Plan::new(&preset("cifar", &Ablations::default()).unwrap()).unwrap();
    let params = init_params(&plan, 1);
    let data = batches(&plan, 4);
    let e = run_in_process(
        2,
        |_| Ok(vec![CpuDevice; 2]),
        &plan,
        &params,
        5,
        4,
        |rep| {
            for (step, (x, y)) in data.iter().enumerate() {
                if rep.rank == 1 && step == 1 {
                    anyhow::bail!("replica 1 gives up");
                }
                rep.train_step(x, y, LR, step as u64)?;
            }
            Ok(())
        },
    )
    .unwrap_err();
    let e = format!("{e:#}");
    assert!(e.contains("replica 1 gives up"), "{e}");
}

/// Asking for replicas where libnccl is missing is an error naming it, before anything of the
/// run is written.
#[test]
fn replicas_without_nccl_are_a_clear_error() {
    if alexnet::cuda::nccl::library_present() {
        println!("SKIP: libnccl is on this machine; the missing-NCCL error cannot be shown here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let got = std::process::Command::new(env!("CARGO_BIN_EXE_alexnet"))
        .args(["train", "--devices", "0,1,2,3", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!got.status.success());
    let e = String::from_utf8_lossy(&got.stderr);
    assert!(e.contains("need NCCL") && e.contains("libnccl"), "{e}");
    assert!(!out.exists(), "the refused run wrote {}", out.display());
    let report = std::process::Command::new(env!("CARGO_BIN_EXE_alexnet"))
        .arg("devices")
        .output()
        .unwrap();
    let r = String::from_utf8_lossy(&report.stdout);
    assert!(r.contains("NCCL: not loaded"), "{r}");
}

/// On a GPU with NCCL: a world of one replica over NCCL steps exactly as the plain network
/// (the mean over one replica is the gradient itself; NCCL's average of one rank copies it).
#[test]
fn a_world_of_one_over_nccl_equals_the_plain_step() {
    use alexnet::cuda::nccl::unique_id;
    use alexnet::dist::nccl::NcclCollective;
    let why_not = if !alexnet::cuda::nccl::library_present() {
        Some("no libnccl")
    } else if !alexnet::fatbins::KERNELS_EMBEDDED {
        Some("no GPU kernels in this build")
    } else if alexnet::cuda::driver::init().map_or(true, |d| d.devices == 0) {
        Some("no GPU")
    } else {
        None
    };
    if let Some(why) = why_not {
        println!("SKIP: a world of one over NCCL needs a GPU and libnccl ({why})");
        return;
    }
    let plan = Plan::new(&preset("cifar", &Ablations::default()).unwrap()).unwrap();
    let params = init_params(&plan, 1);
    let data = batches(&plan, 8);
    let mut plain =
        Network::new(&plan, alexnet::cuda::devices(&[0], 2).unwrap(), &params, 5).unwrap();
    let devices = alexnet::cuda::devices(&[0], 2).unwrap();
    let ids = vec![unique_id().unwrap(), unique_id().unwrap()];
    let nccl =
        NcclCollective::new(&devices, &ids, 0, 1, std::time::Duration::from_secs(60)).unwrap();
    let net = Network::new(&plan, devices, &params, 5).unwrap();
    let mut rep = alexnet::dist::replicas::Replica::new(net, Box::new(nccl), 8).unwrap();
    for (step, (x, y)) in data.iter().enumerate() {
        let a = plain.train_step(x, y, LR, step as u64).unwrap();
        let b = rep.train_step(x, y, LR, step as u64).unwrap();
        assert_eq!(a.top1_errors, b.top1_errors);
        assert!(
            (a.loss - b.loss).abs() <= 1e-6 * a.loss,
            "{} vs {}",
            a.loss,
            b.loss
        );
        assert_eq!(
            tensors(&plain.velocities().unwrap()),
            tensors(&rep.net.velocities().unwrap()),
            "step {step}: the update over NCCL differs"
        );
    }
}
