//! Where the towers run: `--devices 0,1` puts tower A on GPU 0 and tower B on GPU 1 (the paper's
//! layout); `--devices 0` (or `0,0`) puts both on GPU 0, each on a stream of its own — the same
//! code path, the exchange becoming a copy within the GPU (DESIGN.md §2).

use super::driver::{self, plural};
use super::launcher::CudaLauncher;
use anyhow::{Context, Result, bail, ensure};

/// Parses `--devices`: GPU ordinals separated by commas.
pub fn parse_devices(list: &str) -> Result<Vec<usize>> {
    ensure!(
        !list.trim().is_empty(),
        "--devices names no GPU (expected numbers like 0,1)"
    );
    list.split(',')
        .map(|s| {
            s.trim().parse::<usize>().map_err(|_| {
                anyhow::anyhow!("--devices expects GPU numbers like 0,1; {s:?} is not one")
            })
        })
        .collect()
}

/// The GPU of each of `towers` towers, from the `--devices` list, on a machine with `available`
/// GPUs.
pub fn assign(gpus: &[usize], towers: usize, available: usize) -> Result<Vec<usize>> {
    ensure!(towers > 0, "the network has no towers");
    ensure!(!gpus.is_empty(), "--devices names no GPU");
    let list = gpus
        .iter()
        .map(|g| g.to_string())
        .collect::<Vec<_>>()
        .join(",");
    if let Some(&bad) = gpus.iter().find(|&&g| g >= available) {
        let hint = if available == 1 && towers > 1 {
            format!("; --devices 0 puts all {towers} towers on GPU 0")
        } else {
            String::new()
        };
        bail!(
            "--devices {list}: there is no GPU {bad}, this machine has {} (numbered from 0){hint}",
            plural(available, "GPU")
        );
    }
    match gpus.len() {
        1 => Ok(vec![gpus[0]; towers]),
        n if n == towers => Ok(gpus.to_vec()),
        n => bail!(
            "--devices {list} names {} for a network of {}: give one GPU per tower (e.g. {}) or one for all (e.g. {})",
            plural(n, "GPU"),
            plural(towers, "tower"),
            (0..towers)
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(","),
            gpus[0]
        ),
    }
}

/// One launcher per tower, placed by `--devices` (see `assign`), each with a stream of its own,
/// and peer access enabled between every two GPUs used where the hardware allows it.
pub fn launchers(gpus: &[usize], towers: usize) -> Result<Vec<CudaLauncher>> {
    let driver = driver::init()?;
    let placement = assign(gpus, towers, driver.devices)?;
    let launchers = placement
        .iter()
        .enumerate()
        .map(|(t, &g)| {
            CudaLauncher::new(g).with_context(|| format!("placing tower {t} on GPU {g}"))
        })
        .collect::<Result<Vec<_>>>()?;
    for a in &launchers {
        for b in &launchers {
            a.gpu().enable_peer_access(b.gpu())?;
        }
    }
    Ok(launchers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_of_ordinals() {
        assert_eq!(parse_devices("0,1").unwrap(), [0, 1]);
        assert_eq!(parse_devices(" 1 , 0 ").unwrap(), [1, 0]);
        assert_eq!(parse_devices("0").unwrap(), [0]);
        let e = parse_devices("0,x").unwrap_err().to_string();
        assert!(e.contains("\"x\" is not one"), "{e}");
        assert!(parse_devices("").is_err());
        assert!(parse_devices("0,,1").is_err());
        assert!(parse_devices("-1").is_err());
    }

    #[test]
    fn one_gpu_per_tower_or_one_for_all() {
        assert_eq!(assign(&[0, 1], 2, 2).unwrap(), [0, 1]);
        assert_eq!(assign(&[1, 0], 2, 2).unwrap(), [1, 0]);
        assert_eq!(assign(&[0], 2, 1).unwrap(), [0, 0]);
        assert_eq!(assign(&[0, 0], 2, 1).unwrap(), [0, 0]);
        assert_eq!(assign(&[1], 1, 2).unwrap(), [1]);
    }

    #[test]
    fn out_of_range_and_count_mismatch_are_clear_errors() {
        let e = assign(&[0, 1], 2, 1).unwrap_err().to_string();
        assert!(e.contains("there is no GPU 1"), "{e}");
        assert!(e.contains("this machine has 1 GPU"), "{e}");
        assert!(e.contains("--devices 0 puts all 2 towers on GPU 0"), "{e}");
        let e = assign(&[0, 1, 2], 2, 4).unwrap_err().to_string();
        assert!(e.contains("names 3 GPUs for a network of 2 towers"), "{e}");
        assert!(e.contains("(e.g. 0,1)"), "{e}");
        let e = assign(&[0, 1], 1, 2).unwrap_err().to_string();
        assert!(e.contains("names 2 GPUs for a network of 1 tower"), "{e}");
        assert!(assign(&[], 2, 2).is_err());
        assert!(assign(&[0], 0, 2).is_err());
    }
}
