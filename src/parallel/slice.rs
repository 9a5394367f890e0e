//! A data-parallel replica's slice of the global batch: which samples it takes, and dropout
//! drawn by each sample's place in the *global* batch, so a replica sees exactly the masks the
//! same samples get in one undivided run.

use crate::device::{Block, Device};
use crate::ops::dropout::DropoutGeom;
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

/// Dropout (training forward, or backward) over a slice whose first sample is sample `first` of
/// the global batch. The mask of `(sample, unit)` is a function of its index in the layer's
/// stream (`ops::dropout`), whose geometry has no sample offset, so past the first replica the
/// slice is placed at its global rows of a scratch buffer of `first + n` rows and the mask is
/// drawn over all of them. This costs one dropout over `first` extra rows and two copies per
/// dropout layer and pass: dropout is the cheapest op of the net (fc6's 4096 units by 128
/// samples are 2 MB), next to the fc layers around it. A sample offset in `DropoutGeom` would
/// remove it; that geometry is shared with every kernel and belongs to `ops`.
pub fn dropout<D: Device>(
    dev: &D,
    g: &DropoutGeom,
    first: usize,
    backward: bool,
    x: &D::Buf,
    y: &mut D::Buf,
) -> Result<()> {
    let run = |g: &DropoutGeom, x: &D::Buf, y: &mut D::Buf| {
        if backward {
            dev.dropout_backward(g, x, y)
        } else {
            dev.dropout_forward_train(g, x, y)
        }
    };
    if first == 0 {
        return run(g, x, y);
    }
    let (local, skip) = (g.n * g.units, first * g.units);
    let wide = DropoutGeom {
        n: first + g.n,
        ..*g
    };
    let mut wide_x = dev.alloc(skip + local)?;
    let mut wide_y = dev.alloc(skip + local)?;
    let whole = |offset| Block {
        offset,
        pitch: local,
    };
    dev.copy_2d(x, whole(0), &mut wide_x, whole(skip), local, 1)?;
    run(&wide, &wide_x, &mut wide_y)?;
    dev.copy_2d(&wide_y, whole(skip), y, whole(0), local, 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::cpu::CpuDevice;

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

    #[test]
    fn a_slice_draws_the_global_batchs_masks() {
        let (n, units, first) = (6, 10, 4);
        let g = DropoutGeom {
            n,
            units,
            units_total: 2 * units,
            unit_offset: units,
            p: 0.5,
            seed: 3,
            stream: 9,
        };
        let x: Vec<f32> = (0..n * units).map(|i| i as f32 + 1.0).collect();
        let dev = CpuDevice;
        let mut whole = vec![0.0; n * units];
        dropout(&dev, &g, 0, false, &x, &mut whole).unwrap();
        for backward in [false, true] {
            let part = DropoutGeom { n: n - first, ..g };
            let mut y = vec![0.0; (n - first) * units];
            dropout(
                &dev,
                &part,
                first,
                backward,
                &x[first * units..].to_vec(),
                &mut y,
            )
            .unwrap();
            assert_eq!(y, whole[first * units..]);
        }
        // Without the offset the slice would draw the first rows' masks instead.
        let part = DropoutGeom { n: n - first, ..g };
        let mut y = vec![0.0; (n - first) * units];
        dropout(&dev, &part, 0, false, &x[first * units..].to_vec(), &mut y).unwrap();
        assert_ne!(y, whole[first * units..]);
    }
}
