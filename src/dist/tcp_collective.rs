//! Replicas in several processes without NCCL (CPU and host-executor devices): the mean of each
//! reduction travels over the rendezvous' TCP links (`rendezvous::Group`), rank 0 in the middle.
//! Every other rank sends its values to rank 0, which adds them in rank order
//! (`((x0 + x1) + x2) + ...`, then divides by the count, as `LocalCollective` does, so two
//! processes compute what two threads do, bit for bit) and sends the mean back to each.
//!
//! This is for CPU runs and tests, not for speed: every value crosses rank 0's link twice per
//! reduction. GPUs use NCCL. A rank that dies closes its connection, which fails rank 0 at once,
//! which closes every other connection, which fails the others: no rank waits out a dead one.

use super::collective::{Collective, on_host};
use super::rendezvous::{Group, Link, read_exact_by};
use crate::device::Device;
use anyhow::{Context, Result, bail, ensure};
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

pub struct TcpCollective {
    rank: usize,
    ranks: usize,
    link: Link,
    /// How long one reduction waits for the slowest rank (rank 0 may be saving a checkpoint).
    timeout: Duration,
}

impl TcpCollective {
    /// The collective of `group`'s ranks, over its TCP links; `timeout` bounds each reduction.
    pub fn new(group: Group, timeout: Duration) -> Result<TcpCollective> {
        let (rank, ranks) = (group.rank, group.world_size);
        let (link, _) = group.into_link();
        ensure!(
            ranks == 1 || !matches!(link, Link::None),
            "CPU replicas in several processes reduce over the TCP rendezvous: set MASTER_ADDR and MASTER_PORT (a file rendezvous has no link between the ranks)"
        );
        for s in streams(&link) {
            s.set_write_timeout(Some(timeout))?;
            s.set_nodelay(true)?;
        }
        Ok(TcpCollective {
            rank,
            ranks,
            link,
            timeout,
        })
    }

    /// The mean over the ranks of `data`, the same on every rank.
    pub fn mean(&mut self, mut data: Vec<f32>) -> Result<Vec<f32>> {
        let deadline = Instant::now() + self.timeout;
        let (rank, ranks) = (self.rank, self.ranks);
        match &mut self.link {
            Link::None => Ok(data),
            Link::Broken => bail!("rank {rank}: the run stopped at an earlier reduction"),
            Link::Hub(streams) => {
                let summed = (|| -> Result<()> {
                    let mut part = vec![0u8; 4 * data.len()];
                    for (i, s) in streams.iter_mut().enumerate() {
                        let who = format!("rank {}", i + 1);
                        receive(s, &mut part, deadline, &who)?;
                        for (x, b) in data.iter_mut().zip(part.chunks_exact(4)) {
                            *x += f32::from_le_bytes(b.try_into().expect("4 bytes"));
                        }
                    }
                    let count = ranks as f32;
                    for x in &mut data {
                        *x /= count;
                    }
                    let reply = frame(&data);
                    for (i, s) in streams.iter_mut().enumerate() {
                        s.write_all(&reply)
                            .with_context(|| format!("sending the mean to rank {}", i + 1))?;
                    }
                    Ok(())
                })();
                if let Err(e) = summed {
                    // The others fail at once instead of waiting for a mean that never comes.
                    for s in streams.iter() {
                        let _ = s.shutdown(Shutdown::Both);
                    }
                    self.link = Link::Broken;
                    return Err(e.context("rank 0: a rank is gone; stopping the run"));
                }
                Ok(data)
            }
            Link::Spoke(s) => {
                s.write_all(&frame(&data))
                    .with_context(|| format!("rank {rank}: sending to rank 0 (it is gone)"))?;
                let mut reply = vec![0u8; 4 * data.len()];
                receive(s, &mut reply, deadline, "rank 0").with_context(|| {
                    format!("rank {rank}: waiting for the mean (rank 0 closes the run when a rank is gone)")
                })?;
                for (x, b) in data.iter_mut().zip(reply.chunks_exact(4)) {
                    *x = f32::from_le_bytes(b.try_into().expect("4 bytes"));
                }
                Ok(data)
            }
        }
    }
}

fn streams(link: &Link) -> Vec<&TcpStream> {
    match link {
        Link::None | Link::Broken => Vec::new(),
        Link::Hub(v) => v.iter().collect(),
        Link::Spoke(s) => vec![s],
    }
}

/// The values' count (u64) and their bytes, little-endian.
fn frame(data: &[f32]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(8 + 4 * data.len());
    msg.extend_from_slice(&(data.len() as u64).to_le_bytes());
    for x in data {
        msg.extend_from_slice(&x.to_le_bytes());
    }
    msg
}

/// Reads one frame of exactly `into.len() / 4` values: a peer announcing another count runs
/// another network (or is not a peer), refused before anything is read into `into`.
fn receive(s: &mut TcpStream, into: &mut [u8], deadline: Instant, who: &str) -> Result<()> {
    let mut count = [0u8; 8];
    read_exact_by(s, &mut count, deadline, who)?;
    let count = u64::from_le_bytes(count);
    if count != (into.len() / 4) as u64 {
        bail!(
            "{who} reduced {count} values where this rank reduces {}: the ranks run different networks",
            into.len() / 4
        );
    }
    read_exact_by(s, into, deadline, who)
}

impl<D: Device> Collective<D> for TcpCollective {
    fn replicas(&self) -> usize {
        self.ranks
    }

    fn rank(&self) -> usize {
        self.rank
    }

    fn start_mean(&mut self, _tower: usize, dev: &D, bufs: &mut [&mut D::Buf]) -> Result<()> {
        on_host(dev, bufs, |data| self.mean(data))
    }

    fn finish(&mut self, _devices: &[D]) -> Result<()> {
        Ok(())
    }
}
