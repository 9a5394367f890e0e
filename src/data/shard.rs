//! A data-parallel replica's share of each global batch: the loader of a replica reads and
//! decodes only its own samples, and the network draws their dropout masks by their place in
//! the global batch (`DropoutGeom::first_sample`).

use anyhow::{Result, ensure};
use std::ops::Range;

/// Replica `rank` of `replicas` takes samples `range` of every global batch of `batch`: equal
/// consecutive slices, so the mean of the replicas' mean gradients is the global batch's mean
/// gradient (unequal slices would need weights; the recipe's 128 splits evenly over 2, 4, 8, 16).
pub fn range(batch: usize, replicas: usize, rank: usize) -> Result<Range<usize>> {
    ensure!(
        replicas > 0 && rank < replicas,
        "replica {rank} of {replicas}"
    );
    ensure!(
        batch.is_multiple_of(replicas) && batch >= replicas,
        "batch {batch} does not split evenly over {replicas} replicas (each takes an equal slice of the global batch): pass a --batch that {replicas} divides, e.g. {}",
        replicas * batch.div_ceil(replicas).max(1)
    );
    let each = batch / replicas;
    Ok(rank * each..(rank + 1) * each)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_are_equal_consecutive_and_cover_the_batch() {
        assert_eq!(range(6, 3, 0).unwrap(), 0..2);
        assert_eq!(range(6, 3, 2).unwrap(), 4..6);
        assert_eq!(range(128, 4, 1).unwrap(), 32..64);
        let e = range(128, 3, 0).unwrap_err().to_string();
        assert!(
            e.contains("batch 128 does not split evenly over 3 replicas"),
            "{e}"
        );
        assert!(e.contains("e.g. 129"), "{e}");
        assert!(range(2, 3, 0).is_err());
    }
}
