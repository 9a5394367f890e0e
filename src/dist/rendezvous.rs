//! How the processes of a data-parallel run find each other (issue #16), once the launcher's
//! environment has said which is which (`launch`): rank 0 hands every other rank the
//! NCCL unique id (opaque bytes here), over TCP at `MASTER_ADDR:MASTER_PORT` or through a file on
//! a shared filesystem. NCCL is the transport of the run itself; this is only its introduction,
//! plus a liveness link (TCP) that turns a dead rank into an error on the others.
//!
//! Every wait has a deadline and says who did not arrive; every length a peer sends is bounded
//! before anything is allocated for it.

use super::launch::{Launch, Rendezvous};
use anyhow::{Context, Result, bail, ensure};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The rendezvous' wire format: a magic and version, so that anything else that connects to
/// the port is refused at once, and a world size that must match.
const MAGIC: &[u8; 8] = b"ALXRDV01";
/// The most bytes a peer may announce for the id or an error message.
const MAX_PAYLOAD: usize = 4096;
/// One byte each way per liveness check.
const PING: u8 = b'p';
const PONG: u8 = b'o';

/// The run's ranks, introduced: this rank, the id rank 0 handed out, and the liveness link.
pub struct Group {
    pub rank: usize,
    pub world_size: usize,
    pub id: Vec<u8>,
    link: Link,
    timeout: Duration,
}

pub(super) enum Link {
    None,
    /// Closed after a failure (`tcp_collective`): nothing more goes through.
    Broken,
    /// Rank 0: a connection to every other rank (index `r - 1`).
    Hub(Vec<TcpStream>),
    /// The other ranks: their connection to rank 0.
    Spoke(TcpStream),
}

/// Introduces `launch`'s rank to the others at `at` within `timeout`: rank 0 hands out `id`
/// (what `make_id` returns; the other ranks ignore it), everyone gets it.
pub fn join(
    launch: &Launch,
    at: &Rendezvous,
    timeout: Duration,
    make_id: impl FnOnce() -> Result<Vec<u8>>,
) -> Result<Group> {
    let (rank, world) = (launch.rank, launch.world_size);
    let deadline = Instant::now() + timeout;
    let (id, link) = match at {
        Rendezvous::Alone => {
            ensure!(world == 1, "a world of {world} needs a rendezvous");
            (make_id()?, Link::None)
        }
        Rendezvous::Tcp(addr) if rank == 0 => serve(addr, world, deadline, make_id()?)?,
        Rendezvous::Tcp(addr) => dial(addr, rank, world, deadline)?,
        Rendezvous::File(path) if rank == 0 => {
            (file_serve(path, world, deadline, make_id()?)?, Link::None)
        }
        Rendezvous::File(path) => (file_join(path, rank, world, deadline)?, Link::None),
    };
    Ok(Group {
        rank,
        world_size: world,
        id,
        link,
        timeout,
    })
}

fn write_frame(s: &mut TcpStream, tag: u8, payload: &[u8]) -> std::io::Result<()> {
    let mut msg = Vec::with_capacity(13 + payload.len());
    msg.extend_from_slice(MAGIC);
    msg.push(tag);
    msg.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    msg.extend_from_slice(payload);
    s.write_all(&msg)
}

/// Reads one frame (magic, tag, bounded length, payload) before `deadline`.
fn read_frame(s: &mut TcpStream, deadline: Instant, who: &str) -> Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 13];
    read_exact_by(s, &mut head, deadline, who)?;
    ensure!(
        &head[..8] == MAGIC,
        "{who} is not an alexnet rendezvous (or another version of it)"
    );
    let len = u32::from_le_bytes(head[9..13].try_into().unwrap()) as usize;
    ensure!(
        len <= MAX_PAYLOAD,
        "{who} announced {len} bytes, more than the {MAX_PAYLOAD} a rendezvous message may hold"
    );
    let mut payload = vec![0; len];
    read_exact_by(s, &mut payload, deadline, who)?;
    Ok((head[8], payload))
}

/// `read_exact` with a deadline: EOF and the deadline are errors naming `who`.
pub(super) fn read_exact_by(
    s: &mut TcpStream,
    mut buf: &mut [u8],
    deadline: Instant,
    who: &str,
) -> Result<()> {
    while !buf.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        ensure!(!left.is_zero(), "{who} did not answer in time");
        s.set_read_timeout(Some(left))?;
        match s.read(buf) {
            Ok(0) => bail!("{who} closed the connection (it exited or died)"),
            Ok(n) => buf = &mut buf[n..],
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                bail!("{who} closed the connection (it exited or died)")
            }
            Err(e) => return Err(e).with_context(|| format!("reading from {who}")),
        }
    }
    Ok(())
}

const TAG_HELLO: u8 = b'h';
const TAG_ID: u8 = b'i';
const TAG_REFUSED: u8 = b'x';

fn missing(arrived: &[bool]) -> String {
    let m: Vec<String> = arrived
        .iter()
        .enumerate()
        .filter(|(_, a)| !**a)
        .map(|(r, _)| r.to_string())
        .collect();
    m.join(", ")
}

/// Rank 0 over TCP: accepts every other rank's hello, then sends each the id. A stranger, a
/// rank that says another world size, or a rank twice is refused by name; the deadline names
/// the ranks that never came, and those that came are told why the run will not start.
fn serve(addr: &str, world: usize, deadline: Instant, id: Vec<u8>) -> Result<(Vec<u8>, Link)> {
    let port = addr
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .with_context(|| format!("rendezvous address {addr:?} has no port"))?;
    let listener = TcpListener::bind(("0.0.0.0", port))
        .with_context(|| format!("rank 0: listening for the other ranks on port {port}"))?;
    listener.set_nonblocking(true)?;
    let mut ranks: Vec<Option<TcpStream>> = (1..world).map(|_| None).collect();
    let mut arrived = vec![false; world];
    arrived[0] = true;
    let refuse = |mut s: TcpStream, why: &str| {
        let _ = write_frame(&mut s, TAG_REFUSED, why.as_bytes());
    };
    while arrived.iter().any(|a| !a) {
        if Instant::now() >= deadline {
            let why = format!(
                "rank 0: rank(s) {} of {world} did not arrive at {addr} in time",
                missing(&arrived)
            );
            for s in ranks.into_iter().flatten() {
                refuse(s, &why);
            }
            bail!(why);
        }
        let (mut s, peer) = match listener.accept() {
            Ok(c) => c,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            Err(e) => return Err(e).context("rank 0: accepting a rank"),
        };
        s.set_nonblocking(false)?;
        s.set_nodelay(true)?;
        // A short deadline per hello: a silent stranger must not hold up the others.
        let hello_by = deadline.min(Instant::now() + Duration::from_secs(10));
        let who = format!("a process at {peer}");
        let (tag, body) = match read_frame(&mut s, hello_by, &who) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("warning: rank 0 ignored {who}: {e:#}");
                continue;
            }
        };
        if tag != TAG_HELLO || body.len() != 16 {
            refuse(s, "expected a hello");
            continue;
        }
        let their_world = u64::from_le_bytes(body[..8].try_into().unwrap()) as usize;
        let r = u64::from_le_bytes(body[8..].try_into().unwrap()) as usize;
        if their_world != world {
            let why = format!(
                "rank {r} at {peer} says the world has {their_world} processes; rank 0 says {world}"
            );
            refuse(s, &why);
            bail!("rank 0: {why}");
        }
        if r == 0 || r >= world || arrived[r] {
            refuse(s, &format!("rank {r} is taken or out of range"));
            bail!(
                "rank 0: a second rank {r} (or one out of range) arrived from {peer}: each rank must be started once"
            );
        }
        arrived[r] = true;
        ranks[r - 1] = Some(s);
    }
    let mut streams: Vec<TcpStream> = ranks.into_iter().map(|s| s.expect("all arrived")).collect();
    for (i, s) in streams.iter_mut().enumerate() {
        write_frame(s, TAG_ID, &id)
            .with_context(|| format!("rank 0: sending the id to rank {}", i + 1))?;
    }
    Ok((id, Link::Hub(streams)))
}

/// A rank other than 0 over TCP: connects (retrying until rank 0 listens), says hello, and
/// waits for the id.
fn dial(addr: &str, rank: usize, world: usize, deadline: Instant) -> Result<(Vec<u8>, Link)> {
    let mut last_error = String::from("no attempt");
    let mut s = loop {
        ensure!(
            Instant::now() < deadline,
            "rank {rank}: rank 0 did not answer at {addr} in time ({last_error})"
        );
        let addrs: Vec<SocketAddr> = match addr.to_socket_addrs() {
            Ok(a) => a.collect(),
            Err(e) => {
                last_error = format!("cannot resolve {addr}: {e}");
                Vec::new()
            }
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let try_for = left
            .min(Duration::from_secs(2))
            .max(Duration::from_millis(1));
        if let Some(s) = addrs
            .iter()
            .find_map(|a| match TcpStream::connect_timeout(a, try_for) {
                Ok(s) => Some(s),
                Err(e) => {
                    last_error = e.to_string();
                    None
                }
            })
        {
            break s;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    s.set_nodelay(true)?;
    let mut hello = (world as u64).to_le_bytes().to_vec();
    hello.extend_from_slice(&(rank as u64).to_le_bytes());
    write_frame(&mut s, TAG_HELLO, &hello)
        .with_context(|| format!("rank {rank}: greeting rank 0"))?;
    let (tag, body) = read_frame(&mut s, deadline, "rank 0")
        .with_context(|| format!("rank {rank}: waiting for the other ranks at {addr}"))?;
    match tag {
        TAG_ID => Ok((body, Link::Spoke(s))),
        TAG_REFUSED => bail!(
            "rank {rank}: rank 0 refused to start: {}",
            String::from_utf8_lossy(&body)
        ),
        _ => bail!("rank {rank}: rank 0 sent an unknown message"),
    }
}

fn arrival_file(path: &Path, rank: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".rank{rank}"));
    PathBuf::from(name)
}

/// Reads a small file the rendezvous wrote, or `None` while it is not there.
fn read_small(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        Ok(m) => ensure!(
            m.len() as usize <= 16 + MAX_PAYLOAD,
            "{} holds {} bytes: not a rendezvous file",
            path.display(),
            m.len()
        ),
    }
    match std::fs::read(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        r => r
            .map(Some)
            .with_context(|| format!("reading {}", path.display())),
    }
}

/// The file's contents: magic, world size, the id.
fn file_record(world: usize, id: &[u8]) -> Vec<u8> {
    let mut v = MAGIC.to_vec();
    v.extend_from_slice(&(world as u64).to_le_bytes());
    v.extend_from_slice(id);
    v
}

/// Rank 0 through a file: waits for every rank's arrival file (`PATH.rank<r>`), writes the id
/// to `PATH`, waits for each rank to take it (its arrival file gone), then removes `PATH`. A
/// `PATH` already there is an earlier run's, whose id would join this run to nothing: refused.
fn file_serve(path: &Path, world: usize, deadline: Instant, id: Vec<u8>) -> Result<Vec<u8>> {
    ensure!(
        !path.exists(),
        "rank 0: the rendezvous file {} already exists (left by an earlier run?): remove it, or name another",
        path.display()
    );
    let wait_for = |what: &str, want_present: bool| -> Result<()> {
        loop {
            let pending: Vec<usize> = (1..world)
                .filter(|&r| arrival_file(path, r).exists() != want_present)
                .collect();
            if pending.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = std::fs::remove_file(path);
                let list: Vec<String> = pending.iter().map(|r| r.to_string()).collect();
                bail!(
                    "rank 0: rank(s) {} of {world} did not {what} at {} in time",
                    list.join(", "),
                    path.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for("arrive", true)?;
    for r in 1..world {
        let got = read_small(&arrival_file(path, r))?.unwrap_or_default();
        ensure!(
            got == file_record(world, &[]),
            "rank 0: {} was not written by rank {r} of a world of {world}",
            arrival_file(path, r).display()
        );
    }
    crate::files::write_atomic(path, &file_record(world, &id))?;
    let taken = wait_for("take the id", false);
    let _ = std::fs::remove_file(path);
    taken?;
    Ok(id)
}

/// A rank other than 0 through a file: announces itself, waits for the id, takes it.
fn file_join(path: &Path, rank: usize, world: usize, deadline: Instant) -> Result<Vec<u8>> {
    let mine = arrival_file(path, rank);
    crate::files::write_atomic(&mine, &file_record(world, &[]))
        .with_context(|| format!("rank {rank}: announcing itself"))?;
    loop {
        if let Some(bytes) = read_small(path)? {
            let head = file_record(world, &[]);
            ensure!(
                bytes.len() > head.len() && bytes[..head.len()] == head[..],
                "rank {rank}: {} is not rank 0's rendezvous for a world of {world}",
                path.display()
            );
            std::fs::remove_file(&mine).with_context(|| format!("removing {}", mine.display()))?;
            return Ok(bytes[head.len()..].to_vec());
        }
        if Instant::now() >= deadline {
            let _ = std::fs::remove_file(&mine);
            bail!(
                "rank {rank}: rank 0 did not write {} in time",
                path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Group {
    /// The TCP links and the timeout, for a collective over them (`tcp_collective`).
    pub(super) fn into_link(self) -> (Link, Duration) {
        (self.link, self.timeout)
    }

    /// Waits until every rank has called `check_alive` as often (once per step): rank 0 hears
    /// from every other rank, then answers them all. A rank that died (its connection closed)
    /// or is stuck past the timeout is named, and rank 0 closes every connection, so the other
    /// ranks fail at once too instead of waiting for it. Without a TCP link it does nothing.
    pub fn check_alive(&mut self) -> Result<()> {
        let deadline = Instant::now() + self.timeout;
        match &mut self.link {
            Link::None | Link::Broken => Ok(()),
            Link::Hub(streams) => {
                let mut result = Ok(());
                for (i, s) in streams.iter_mut().enumerate() {
                    let who = format!("rank {}", i + 1);
                    let mut b = [0u8];
                    if let Err(e) = read_exact_by(s, &mut b, deadline, &who) {
                        result = Err(e);
                        break;
                    }
                    if b[0] != PING {
                        result = Err(anyhow::anyhow!("{who} sent an unexpected byte"));
                        break;
                    }
                }
                if let Err(e) = result {
                    for s in streams.iter() {
                        let _ = s.shutdown(Shutdown::Both);
                    }
                    self.link = Link::None;
                    return Err(e).context("rank 0: a rank is gone; stopping the run");
                }
                for (i, s) in streams.iter_mut().enumerate() {
                    s.write_all(&[PONG])
                        .with_context(|| format!("rank 0: rank {} is gone", i + 1))?;
                }
                Ok(())
            }
            Link::Spoke(s) => {
                let rank = self.rank;
                s.write_all(&[PING])
                    .with_context(|| format!("rank {rank}: rank 0 is gone"))?;
                let mut b = [0u8];
                read_exact_by(s, &mut b, deadline, "rank 0").with_context(|| {
                    format!("rank {rank}: waiting for the other ranks (rank 0 closes the run when one is gone)")
                })?;
                ensure!(b[0] == PONG, "rank {rank}: rank 0 sent an unexpected byte");
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch(world: usize, rank: usize) -> Launch {
        Launch {
            world_size: world,
            rank,
            local_rank: rank,
            master: None,
        }
    }

    #[test]
    fn a_stranger_is_refused_and_missing_ranks_are_named() {
        let port = free_port();
        let at = Rendezvous::Tcp(format!("127.0.0.1:{port}"));
        let server = {
            let at = at.clone();
            std::thread::spawn(move || {
                join(&launch(3, 0), &at, Duration::from_millis(1500), || {
                    Ok(vec![1; 128])
                })
                .map(|_| ())
            })
        };
        // A stranger who sends a huge length: ignored, and nothing that size is allocated.
        let mut stranger = loop {
            if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
                break s;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut frame = MAGIC.to_vec();
        frame.push(TAG_HELLO);
        frame.extend_from_slice(&u32::MAX.to_le_bytes());
        stranger.write_all(&frame).unwrap();
        let one = std::thread::spawn(move || {
            join(
                &launch(3, 1),
                &at,
                Duration::from_secs(5),
                || unreachable!(),
            )
            .map(|g| g.id)
        });
        let e = server.join().unwrap().unwrap_err().to_string();
        assert!(e.contains("rank(s) 2 of 3 did not arrive"), "{e}");
        let e = one.join().unwrap().unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.contains("rank 0 refused to start") && e.contains("rank(s) 2"),
            "{e}"
        );
    }

    #[test]
    fn file_rendezvous_hands_out_the_id_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rdv");
        let at = Rendezvous::File(path.clone());
        let ids: Vec<Vec<u8>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..3)
                .map(|r| {
                    let at = at.clone();
                    s.spawn(move || {
                        join(&launch(3, r), &at, Duration::from_secs(10), || {
                            Ok(vec![7, 8, 9])
                        })
                        .unwrap()
                        .id
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(ids.iter().all(|id| id == &[7, 8, 9]), "{ids:?}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // A rank alone names rank 0's file; rank 0 alone names the missing ranks.
        let e = join(
            &launch(2, 1),
            &at,
            Duration::from_millis(200),
            || unreachable!(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("rank 0 did not write"), "{e}");
        let e = join(&launch(3, 0), &at, Duration::from_millis(200), || {
            Ok(vec![1])
        })
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("rank(s) 1, 2 of 3 did not arrive"), "{e}");
        std::fs::write(&path, b"old").unwrap();
        let e = join(&launch(2, 0), &at, Duration::from_millis(200), || {
            Ok(vec![1])
        })
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("already exists"), "{e}");
    }

    /// A port nothing listens on now (the OS's pick, released).
    pub fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}
