//! What data-parallel replicas of the tower pair need from each other (issue #16): each tower's
//! gradients averaged across the replicas, started layer by layer as backward produces them. Two
//! implementations: [`LocalCollective`] here (replicas as threads of one process, any device,
//! a fixed reduction order), and NCCL over GPUs (`nccl`).
//!
//! Every replica makes the same calls in the same order (the network is the same on all of
//! them), which is what both implementations rely on to pair a call with its peers'.

use crate::device::Device;
use crate::engine::GradientHooks;
use anyhow::{Context, Result, bail, ensure};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What an error says when it only reports that another replica failed (it left the group, or
/// did not answer in time): the error shown for a run is the cause, not these
/// (`replicas::on_threads`).
pub const PEER_FAILED: &str = "another replica failed";

/// Whether `e` only reports another replica's failure (see [`PEER_FAILED`]).
pub fn only_peer_failed(e: &anyhow::Error) -> bool {
    format!("{e:#}").contains(PEER_FAILED)
}

pub trait Collective<D: Device> {
    /// How many replicas take part, and which one this is (0-based).
    fn replicas(&self) -> usize;
    fn rank(&self) -> usize;

    /// Starts replacing every buffer of `bufs` (tower `tower`'s, on `dev`) by its mean over the
    /// replicas. It may run beside the device's later work; the buffers hold the mean, and may
    /// be touched again, only after [`Collective::finish`].
    fn start_mean(&mut self, tower: usize, dev: &D, bufs: &mut [&mut D::Buf]) -> Result<()>;

    /// Orders the devices' (`devices[tower]`) later work after every `start_mean` so far.
    fn finish(&mut self, devices: &[D]) -> Result<()>;

    /// Fails unless every replica passed the same `digest` (the debug builds' check that the
    /// weights stay identical). Built on the mean alone, so every implementation has it: per
    /// byte `b` of the digest, the replicas' means of `b` and `b²` equal `b` and `b²` exactly
    /// when all bytes agree (then every sum is exact and so is its division); when they differ
    /// the variance `mean(b²) − mean(b)²` is at least `(R−1)/R²`, far above the rounding of a
    /// mean of values below 2^16 over fewer than 2^8 replicas.
    fn check_same(&mut self, dev: &D, digest: u64) -> Result<()> {
        let bytes = digest.to_le_bytes();
        let mut values: Vec<f32> = bytes.iter().map(|&b| b as f32).collect();
        values.extend(bytes.iter().map(|&b| (b as f32) * (b as f32)));
        let mut buf = dev.upload(&values)?;
        self.start_mean(0, dev, &mut [&mut buf])?;
        self.finish(std::slice::from_ref(dev))?;
        let mean = dev.download(&buf)?;
        ensure!(
            mean == values,
            "replica {} of {} disagrees with the others (weights digest {digest:016x}): replicas drifted apart",
            self.rank(),
            self.replicas()
        );
        Ok(())
    }
}

/// How long a replica waits for the others at one reduction before it gives up: a replica
/// that failed leaves at once (see `Drop`), so this only bounds a replica stuck elsewhere.
pub const LOCAL_TIMEOUT: Duration = Duration::from_secs(600);

/// Replicas as threads of one process: every reduction is done on the host, in replica order
/// (`((x0 + x1) + x2) + ...`, then divided by the count), by whichever replica arrives last, and
/// every replica copies the same result, so the mean is bit-identical on all of them and from
/// run to run, whatever the thread schedule.
pub struct LocalCollective {
    rank: usize,
    shared: Arc<Shared>,
}

struct Shared {
    replicas: usize,
    timeout: Duration,
    state: Mutex<State>,
    turn: Condvar,
}

#[derive(Default)]
struct State {
    /// Reductions completed so far.
    done: u64,
    /// This round's contributions, by replica.
    parts: Vec<Option<Vec<f32>>>,
    /// The last completed round's mean, until every replica has taken it.
    mean: Option<Arc<Vec<f32>>>,
    taken: usize,
    /// Why the group cannot go on (a replica left before the end).
    broken: Option<String>,
}

impl LocalCollective {
    /// One handle per replica, for `replicas` threads.
    pub fn group(replicas: usize) -> Vec<LocalCollective> {
        Self::group_with_timeout(replicas, LOCAL_TIMEOUT)
    }

    pub fn group_with_timeout(replicas: usize, timeout: Duration) -> Vec<LocalCollective> {
        let shared = Arc::new(Shared {
            replicas,
            timeout,
            state: Mutex::new(State {
                parts: vec![None; replicas],
                ..Default::default()
            }),
            turn: Condvar::new(),
        });
        (0..replicas)
            .map(|rank| LocalCollective {
                rank,
                shared: shared.clone(),
            })
            .collect()
    }

    /// The mean over the replicas of `data`, which every replica passes in the same round.
    pub fn mean(&self, data: Vec<f32>) -> Result<Arc<Vec<f32>>> {
        let sh = &*self.shared;
        let deadline = Instant::now() + sh.timeout;
        let mut st = sh.state.lock().unwrap_or_else(|p| p.into_inner());
        // The previous round's mean must be taken by everyone before this round starts.
        st = self.wait(st, deadline, |st| st.mean.is_none())?;
        let round = st.done;
        let len = data.len();
        st.parts[self.rank] = Some(data);
        if st.parts.iter().all(Option::is_some) {
            let parts: Vec<Vec<f32>> = st.parts.iter_mut().map(|p| p.take().unwrap()).collect();
            if let Some((r, p)) = parts.iter().enumerate().find(|(_, p)| p.len() != len) {
                let why = format!(
                    "replica {r} reduced {} values where replica {} reduced {len}: the replicas run different networks",
                    p.len(),
                    self.rank
                );
                st.broken = Some(why.clone());
                sh.turn.notify_all();
                bail!(why);
            }
            let mut sum = parts[0].clone();
            for p in &parts[1..] {
                for (s, &x) in sum.iter_mut().zip(p) {
                    *s += x;
                }
            }
            let count = sh.replicas as f32;
            for s in &mut sum {
                *s /= count;
            }
            st.mean = Some(Arc::new(sum));
            st.done += 1;
            sh.turn.notify_all();
        } else {
            st = self.wait(st, deadline, |st| st.done > round)?;
        }
        let mean = st.mean.clone().expect("set by the round's last replica");
        st.taken += 1;
        if st.taken == sh.replicas {
            st.mean = None;
            st.taken = 0;
            sh.turn.notify_all();
        }
        Ok(mean)
    }

    fn wait<'a>(
        &self,
        mut st: MutexGuard<'a, State>,
        deadline: Instant,
        ready: impl Fn(&State) -> bool,
    ) -> Result<MutexGuard<'a, State>> {
        loop {
            if ready(&st) {
                return Ok(st);
            }
            if let Some(why) = &st.broken {
                bail!("replica {}: {why}", self.rank);
            }
            let now = Instant::now();
            if now >= deadline {
                let missing: Vec<String> = (0..self.shared.replicas)
                    .filter(|&r| st.parts.get(r).is_some_and(Option::is_none))
                    .map(|r| r.to_string())
                    .collect();
                bail!(
                    "replica {}: no all-reduce after {:?}: replica(s) {} did not arrive",
                    self.rank,
                    self.shared.timeout,
                    missing.join(", ")
                );
            }
            st = self
                .shared
                .turn
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

impl Drop for LocalCollective {
    /// A replica that leaves (done, or failed) breaks the group for anyone still waiting on a
    /// round it will never join, so they fail at once instead of waiting out the timeout. A
    /// replica that finished all its rounds leaves no one waiting for it.
    fn drop(&mut self) {
        let mut st = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.broken.is_none() {
            st.broken = Some(format!(
                "replica {} left the group ({PEER_FAILED})",
                self.rank
            ));
        }
        self.shared.turn.notify_all();
    }
}

impl<D: Device> Collective<D> for LocalCollective {
    fn replicas(&self) -> usize {
        self.shared.replicas
    }

    fn rank(&self) -> usize {
        self.rank
    }

    fn start_mean(&mut self, _tower: usize, dev: &D, bufs: &mut [&mut D::Buf]) -> Result<()> {
        on_host(dev, bufs, |data| Ok(self.mean(data)?.to_vec()))
    }

    fn finish(&mut self, _devices: &[D]) -> Result<()> {
        Ok(())
    }
}

/// What a replica's backward pass calls: each tower's gradients averaged as soon as they are
/// ready, and the update ordered after every average.
impl<D: Device> GradientHooks<D> for Box<dyn Collective<D>> {
    fn gradient_ready(&mut self, tower: usize, dev: &D, grads: &mut [&mut D::Buf]) -> Result<()> {
        self.start_mean(tower, dev, grads)
    }

    fn backward_done(&mut self, devices: &[D]) -> Result<()> {
        self.finish(devices)
            .context("averaging the gradients across replicas")
    }
}

/// A reduction done on the host: `bufs` downloaded into one vector (one round per call: the
/// buffers travel together), `mean` of it, and the result uploaded back in place.
pub(super) fn on_host<D: Device>(
    dev: &D,
    bufs: &mut [&mut D::Buf],
    mean: impl FnOnce(Vec<f32>) -> Result<Vec<f32>>,
) -> Result<()> {
    let mut data = Vec::new();
    for b in bufs.iter() {
        data.extend(dev.download(b)?);
    }
    let mean = mean(data)?;
    let mut at = 0;
    for b in bufs.iter_mut() {
        let len = dev.len(b);
        **b = dev.upload(&mean[at..at + len])?;
        at += len;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::cpu::CpuDevice;

    #[test]
    fn the_mean_is_the_same_on_every_replica_and_in_replica_order() {
        let group = LocalCollective::group(3);
        let got: Vec<Vec<f32>> = std::thread::scope(|s| {
            let handles: Vec<_> = group
                .into_iter()
                .map(|mut c| {
                    s.spawn(move || {
                        let r = c.rank;
                        let mut out = Vec::new();
                        for round in 0..4 {
                            // Large and small terms, so the order of the sum shows.
                            let x = [1e8f32, 1.0, -1e8][r] + round as f32;
                            let mut buf = vec![x, r as f32];
                            let dev = CpuDevice;
                            Collective::<CpuDevice>::start_mean(&mut c, 0, &dev, &mut [&mut buf])
                                .unwrap();
                            out.extend(buf);
                        }
                        out
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for g in &got {
            assert_eq!(g, &got[0]);
        }
        for round in 0..4 {
            let r = round as f32;
            let want = (((1e8f32 + r) + (1.0 + r)) + (-1e8 + r)) / 3.0;
            assert_eq!(got[0][2 * round], want, "round {round}");
            assert_eq!(got[0][2 * round + 1], 1.0);
        }
    }

    #[test]
    fn a_replica_that_leaves_fails_the_others_at_once() {
        let mut group = LocalCollective::group_with_timeout(2, Duration::from_secs(60));
        let second = group.pop().unwrap();
        let first = group.pop().unwrap();
        let start = Instant::now();
        let waiter = std::thread::spawn(move || first.mean(vec![1.0]).map(|_| ()));
        std::thread::sleep(Duration::from_millis(50));
        drop(second);
        let e = waiter.join().unwrap().unwrap_err().to_string();
        assert!(e.contains("replica 1 left the group"), "{e}");
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_missing_replica_is_named_after_the_timeout() {
        let group = LocalCollective::group_with_timeout(3, Duration::from_millis(100));
        let e = group[0].mean(vec![1.0]).unwrap_err().to_string();
        assert!(e.contains("replica(s) 1, 2 did not arrive"), "{e}");
    }

    #[test]
    fn different_digests_are_caught() {
        let group = LocalCollective::group(2);
        let results: Vec<Result<()>> = std::thread::scope(|s| {
            let handles: Vec<_> = group
                .into_iter()
                .map(|mut c| {
                    s.spawn(move || {
                        let dev = CpuDevice;
                        Collective::<CpuDevice>::check_same(&mut c, &dev, 0xabcd)?;
                        let digest = if c.rank == 0 { 7 } else { 6 };
                        Collective::<CpuDevice>::check_same(&mut c, &dev, digest)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for r in results {
            let e = r.unwrap_err().to_string();
            assert!(e.contains("replicas drifted apart"), "{e}");
        }
    }
}
