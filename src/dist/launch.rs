//! Who this process is in a data-parallel run and where the ranks meet, as the user's launcher
//! says (torchrun, Slurm's srun, or a hand-written loop starts one process per machine or per
//! replica and says which is which in the environment).

use anyhow::{Result, bail, ensure};
use std::path::PathBuf;

/// Who this process is in the run, as the launcher says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    pub world_size: usize,
    pub rank: usize,
    /// The rank among the processes of this machine (picks its GPUs).
    pub local_rank: usize,
    /// `MASTER_ADDR:MASTER_PORT`, where given.
    pub master: Option<String>,
}

impl Launch {
    /// From the environment: torchrun's `WORLD_SIZE`, `RANK`, `LOCAL_RANK`, else Slurm's
    /// `SLURM_NTASKS`, `SLURM_PROCID`, `SLURM_LOCALID`; `MASTER_ADDR` and `MASTER_PORT` either way.
    /// Neither set: a world of one. `get` reads a variable (`std::env::var` in use).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Launch> {
        let number = |name: &str| -> Result<Option<usize>> {
            match get(name) {
                None => Ok(None),
                Some(v) => v.trim().parse::<usize>().map(Some).map_err(|_| {
                    anyhow::anyhow!("{name}={v:?} is not a non-negative whole number")
                }),
            }
        };
        let (world, rank, local, names) = match (number("WORLD_SIZE")?, number("RANK")?) {
            (Some(w), Some(r)) => (w, r, number("LOCAL_RANK")?, ("WORLD_SIZE", "RANK")),
            (Some(_), None) => {
                bail!("WORLD_SIZE is set but RANK is not: set both (as torchrun does)")
            }
            (None, Some(_)) => {
                bail!("RANK is set but WORLD_SIZE is not: set both (as torchrun does)")
            }
            (None, None) => match (number("SLURM_NTASKS")?, number("SLURM_PROCID")?) {
                (Some(w), Some(r)) => (
                    w,
                    r,
                    number("SLURM_LOCALID")?,
                    ("SLURM_NTASKS", "SLURM_PROCID"),
                ),
                _ => (1, 0, None, ("WORLD_SIZE", "RANK")),
            },
        };
        ensure!(world > 0, "{}=0: a run has at least one process", names.0);
        ensure!(
            rank < world,
            "{}={rank} is not below {}={world}",
            names.1,
            names.0
        );
        let master = match (get("MASTER_ADDR"), get("MASTER_PORT")) {
            (Some(a), Some(p)) => {
                let port: u16 = p
                    .trim()
                    .parse()
                    .map_err(|_| anyhow::anyhow!("MASTER_PORT={p:?} is not a port number"))?;
                Some(format!("{}:{port}", a.trim()))
            }
            (Some(_), None) => bail!("MASTER_ADDR is set but MASTER_PORT is not"),
            (None, Some(_)) => bail!("MASTER_PORT is set but MASTER_ADDR is not"),
            (None, None) => None,
        };
        Ok(Launch {
            world_size: world,
            rank,
            local_rank: local.unwrap_or(0),
            master,
        })
    }

    /// Where the ranks meet: `spec` as `--rendezvous` gave it (`tcp:HOST:PORT` or `file:PATH`),
    /// else `MASTER_ADDR:MASTER_PORT`.
    pub fn rendezvous(&self, spec: Option<&str>) -> Result<Rendezvous> {
        match spec {
            Some(s) => s.parse(),
            None => match &self.master {
                Some(m) => Ok(Rendezvous::Tcp(m.clone())),
                None if self.world_size == 1 => Ok(Rendezvous::Alone),
                None => bail!(
                    "{} processes but no rendezvous: set MASTER_ADDR and MASTER_PORT (rank 0's host and a free port), or pass --rendezvous file:PATH on a filesystem every rank sees",
                    self.world_size
                ),
            },
        }
    }
}

/// Where the ranks meet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rendezvous {
    /// A world of one: nothing to exchange.
    Alone,
    /// Rank 0 listens on this port (all interfaces); the others connect to this address.
    Tcp(String),
    /// Rank 0 writes the id to this file, which every rank can read.
    File(PathBuf),
}

impl std::str::FromStr for Rendezvous {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        if let Some(path) = s.strip_prefix("file:") {
            ensure!(!path.is_empty(), "--rendezvous file: names no file");
            Ok(Rendezvous::File(PathBuf::from(path)))
        } else if let Some(addr) = s.strip_prefix("tcp:") {
            ensure!(
                addr.rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()),
                "--rendezvous tcp:{addr}: expected tcp:HOST:PORT"
            );
            Ok(Rendezvous::Tcp(addr.to_string()))
        } else {
            bail!("--rendezvous {s:?}: expected tcp:HOST:PORT or file:PATH")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn torchrun_slurm_and_nothing() {
        let l = Launch::from_env(env(&[
            ("WORLD_SIZE", "4"),
            ("RANK", "3"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "node0"),
            ("MASTER_PORT", "29500"),
            ("SLURM_NTASKS", "9"),
        ]))
        .unwrap();
        assert_eq!((l.world_size, l.rank, l.local_rank), (4, 3, 1));
        assert_eq!(
            l.rendezvous(None).unwrap(),
            Rendezvous::Tcp("node0:29500".into())
        );
        let l = Launch::from_env(env(&[
            ("SLURM_NTASKS", "2"),
            ("SLURM_PROCID", "1"),
            ("SLURM_LOCALID", "0"),
        ]))
        .unwrap();
        assert_eq!((l.world_size, l.rank, l.local_rank), (2, 1, 0));
        let e = l.rendezvous(None).unwrap_err().to_string();
        assert!(e.contains("set MASTER_ADDR and MASTER_PORT"), "{e}");
        let l = Launch::from_env(env(&[])).unwrap();
        assert_eq!((l.world_size, l.rank), (1, 0));
        assert_eq!(l.rendezvous(None).unwrap(), Rendezvous::Alone);
        assert_eq!(
            l.rendezvous(Some("file:/shared/rdv")).unwrap(),
            Rendezvous::File("/shared/rdv".into())
        );
    }

    #[test]
    fn bad_launch_variables_are_named() {
        for (vars, want) in [
            (
                vec![("WORLD_SIZE", "2"), ("RANK", "2")],
                "RANK=2 is not below WORLD_SIZE=2",
            ),
            (
                vec![("WORLD_SIZE", "two"), ("RANK", "0")],
                "WORLD_SIZE=\"two\"",
            ),
            (vec![("WORLD_SIZE", "2")], "RANK is not"),
            (
                vec![("SLURM_NTASKS", "2"), ("SLURM_PROCID", "5")],
                "SLURM_PROCID=5",
            ),
            (vec![("MASTER_ADDR", "a")], "MASTER_PORT is not"),
            (
                vec![("MASTER_ADDR", "a"), ("MASTER_PORT", "99999")],
                "MASTER_PORT=\"99999\"",
            ),
        ] {
            let e = Launch::from_env(env(&vars)).unwrap_err().to_string();
            assert!(e.contains(want), "{vars:?}: {e}");
        }
        for bad in ["tcp:nohost", "tcp::1", "udp:x:1", "file:"] {
            assert!(bad.parse::<Rendezvous>().is_err(), "{bad}");
        }
    }
}
