//! Nearest neighbours in feature space: an exact Euclidean search of a gallery for a few
//! queries, the paper's Figure 4 (right) and what retrieval with a trained network is.
//!
//! The gallery streams past in blocks of rows. For each block one product on the device —
//! `y = q · gᵀ − ½‖g‖²`, the fc layer's forward with the block as weights and the half norms as
//! bias — gives every query's squared distance to every row as `‖q‖² − 2y`, and a bounded heap per
//! query keeps the nearest. That form loses digits to cancellation for near neighbours (a
//! query's distance to itself comes out as rounding noise, not 0), so the heaps keep more
//! candidates than asked for, and the candidates are ranked again at the end by the distance
//! summed directly in f64, ties broken by row index: the ranks and distances a brute-force
//! search gives, as long as fewer than [`extra_candidates`] rows lie within the product's
//! rounding of the last one kept.

use super::file::FeatureReader;
use crate::device::Device;
use crate::ops::fc::FcGeom;
use crate::ops::precision::Precision;
use crate::progress::Progress;
use anyhow::{Result, bail, ensure};
use rayon::prelude::*;
use std::collections::BinaryHeap;

/// Rows of features read a block at a time.
pub trait Gallery {
    fn rows(&self) -> usize;
    fn cols(&self) -> usize;
    /// Rows `start..start + count`, `[count, cols]`, into `out` (its memory reused).
    fn read_rows(&mut self, start: usize, count: usize, out: &mut Vec<f32>) -> Result<()>;
}

impl Gallery for FeatureReader {
    fn rows(&self) -> usize {
        FeatureReader::rows(self)
    }
    fn cols(&self) -> usize {
        FeatureReader::cols(self)
    }
    fn read_rows(&mut self, start: usize, count: usize, out: &mut Vec<f32>) -> Result<()> {
        self.read_rows_into(start, count, out)
    }
}

/// A gallery held in memory (features just extracted from images; tests).
pub struct Matrix {
    pub cols: usize,
    pub values: Vec<f32>,
}

impl Gallery for Matrix {
    fn rows(&self) -> usize {
        self.values.len() / self.cols
    }
    fn cols(&self) -> usize {
        self.cols
    }
    fn read_rows(&mut self, start: usize, count: usize, out: &mut Vec<f32>) -> Result<()> {
        let range = start * self.cols..(start + count) * self.cols;
        ensure!(
            range.end <= self.values.len(),
            "rows past the gallery's end"
        );
        out.clear();
        out.extend_from_slice(&self.values[range]);
        Ok(())
    }
}

/// A gallery row found for a query: its index, and its Euclidean distance to the query.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hit {
    pub index: usize,
    pub distance: f64,
}

/// How many candidates beyond the `top` asked for each query's heap keeps for the exact ranking.
pub fn extra_candidates(top: usize) -> usize {
    top.max(32)
}

/// Gallery rows per block: 64 MiB of f32 values (4,096 rows of fc7), at least one row.
pub fn default_block_rows(cols: usize) -> usize {
    ((64 << 20) / (4 * cols.max(1))).max(1)
}

/// Each query's `top` nearest gallery rows, nearest first (ties: the lower index first).
/// `queries` is `[q, cols]`; the products run on `device`, `block_rows` gallery rows at a time;
/// `progress` counts gallery rows and can interrupt the search.
pub fn search<D: Device>(
    device: &D,
    queries: &[f32],
    gallery: &mut dyn Gallery,
    top: usize,
    block_rows: usize,
    progress: &Progress,
) -> Result<Vec<Vec<Hit>>> {
    let (rows, cols) = (gallery.rows(), gallery.cols());
    ensure!(top > 0, "asked for the 0 nearest rows");
    ensure!(rows > 0, "the gallery has no rows");
    ensure!(
        cols > 0 && queries.len().is_multiple_of(cols),
        "queries of {} values do not make rows of {cols}",
        queries.len()
    );
    let n = queries.len() / cols;
    let keep = (top + extra_candidates(top)).min(rows);
    let query_norms: Vec<f32> = queries.chunks_exact(cols).map(squared_norm).collect();
    let mut heaps: Vec<Nearest> = (0..n).map(|_| Nearest::new(keep)).collect();
    let q = device.upload(queries)?;
    // The block's buffers, reused from block to block (a fresh 64 MiB each time costs more in
    // page faults than the product).
    let (mut block, mut g) = (Vec::new(), device.alloc(0)?);
    for start in (0..rows).step_by(block_rows.max(1)) {
        if progress.interrupted() {
            bail!("interrupted");
        }
        let count = block_rows.max(1).min(rows - start);
        gallery.read_rows(start, count, &mut block)?;
        let half_norms: Vec<f32> = block
            .par_chunks_exact(cols)
            .map(|g| -0.5 * squared_norm(g))
            .collect();
        if device.len(&g) != block.len() {
            g = device.alloc(block.len())?;
        }
        device.upload_async(&block, &mut g, 0)?;
        device.join_copies()?;
        let b = device.upload(&half_norms)?;
        let mut y = device.alloc(n * count)?;
        let geom = FcGeom {
            n,
            inputs: cols,
            outputs: count,
        };
        device.fc_forward(&geom, Precision::Fp32, &q, &g, &b, &mut y)?;
        device.input_slot_free(0)?;
        let y = device.download(&y)?;
        heaps
            .par_iter_mut()
            .zip(y.par_chunks_exact(count))
            .zip(&query_norms)
            .for_each(|((heap, products), &norm)| {
                for (j, &p) in products.iter().enumerate() {
                    heap.offer(norm - 2.0 * p, start + j);
                }
            });
        progress.inc_by(count as u64);
    }
    progress.finish();
    heaps
        .into_iter()
        .zip(queries.chunks_exact(cols))
        .map(|(heap, query)| rank_exactly(gallery, query, heap.indices(), top))
        .collect()
}

/// `candidates` ranked by their distance to `query` summed in f64; the first `top`.
fn rank_exactly(
    gallery: &mut dyn Gallery,
    query: &[f32],
    candidates: Vec<usize>,
    top: usize,
) -> Result<Vec<Hit>> {
    let mut row = Vec::new();
    let mut hits = candidates
        .into_iter()
        .map(|index| {
            gallery.read_rows(index, 1, &mut row)?;
            Ok(Hit {
                index,
                distance: distance(query, &row),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    hits.sort_by(|a, b| {
        a.distance
            .total_cmp(&b.distance)
            .then(a.index.cmp(&b.index))
    });
    hits.truncate(top);
    Ok(hits)
}

/// The Euclidean distance of two rows, summed in f64.
pub fn distance(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// `‖row‖²`, summed in f64 over eight interleaved lanes (independent sums the compiler puts in
/// vector registers; the order is fixed, so the result is the same on every run).
fn squared_norm(row: &[f32]) -> f32 {
    let mut lanes = [0f64; 8];
    let chunks = row.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (lane, &v) in lanes.iter_mut().zip(c) {
            *lane += v as f64 * v as f64;
        }
    }
    let tail: f64 = rest.iter().map(|&v| v as f64 * v as f64).sum();
    (lanes.iter().sum::<f64>() + tail) as f32
}

/// The `keep` smallest (approximate squared distance, index) pairs offered, the largest on top
/// of a max-heap so that a nearer row replaces it.
struct Nearest {
    keep: usize,
    heap: BinaryHeap<Candidate>,
}

#[derive(PartialEq)]
struct Candidate(f32, usize);

impl Eq for Candidate {}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0).then(self.1.cmp(&other.1))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Nearest {
    fn new(keep: usize) -> Nearest {
        Nearest {
            keep,
            heap: BinaryHeap::with_capacity(keep + 1),
        }
    }

    fn offer(&mut self, distance: f32, index: usize) {
        let c = Candidate(distance, index);
        if self.heap.len() < self.keep {
            self.heap.push(c);
        } else if self.heap.peek().is_some_and(|worst| c < *worst) {
            self.heap.pop();
            self.heap.push(c);
        }
    }

    fn indices(self) -> Vec<usize> {
        self.heap.into_iter().map(|c| c.1).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::cpu::CpuDevice;
    use crate::device::kernels::KernelDevice;
    use crate::emu::EmuLauncher;
    use crate::features::file::FeatureWriter;
    use rand::{Rng, SeedableRng};

    fn random(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..rows * cols)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect()
    }

    /// Every row's distance summed in f64, sorted by (distance, index): the reference.
    fn brute_force(queries: &[f32], gallery: &[f32], cols: usize, top: usize) -> Vec<Vec<Hit>> {
        queries
            .chunks_exact(cols)
            .map(|q| {
                let mut all: Vec<Hit> = gallery
                    .chunks_exact(cols)
                    .enumerate()
                    .map(|(index, g)| Hit {
                        index,
                        distance: distance(q, g),
                    })
                    .collect();
                all.sort_by(|a, b| {
                    a.distance
                        .total_cmp(&b.distance)
                        .then(a.index.cmp(&b.index))
                });
                all.truncate(top);
                all
            })
            .collect()
    }

    fn on_cpu(
        queries: &[f32],
        gallery: &mut dyn Gallery,
        top: usize,
        block: usize,
    ) -> Vec<Vec<Hit>> {
        search(
            &CpuDevice,
            queries,
            gallery,
            top,
            block,
            &Progress::hidden(),
        )
        .unwrap()
    }

    #[test]
    fn ranks_equal_a_brute_force_search_with_blocks_smaller_than_the_gallery() {
        let cols = 48;
        let values = random(1000, cols, 1);
        let queries = random(7, cols, 2);
        let expected = brute_force(&queries, &values, cols, 6);
        // 128 does not divide 1000: the last block is short.
        for block in [128, 1000, 4096] {
            let mut gallery = Matrix {
                cols,
                values: values.clone(),
            };
            assert_eq!(
                on_cpu(&queries, &mut gallery, 6, block),
                expected,
                "block {block}"
            );
        }
    }

    #[test]
    fn ties_go_to_the_lower_index_and_a_query_in_the_gallery_is_first_at_distance_zero() {
        // Small integers: every product and distance is exact, so rows 5, 17 and 90 (copies of
        // each other) tie exactly, and row 40 is the query itself.
        let cols = 16;
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut values: Vec<f32> = (0..100 * cols)
            .map(|_| rng.random_range(-8i32..8) as f32)
            .collect();
        let copy: Vec<f32> = values[40 * cols..41 * cols]
            .iter()
            .map(|v| v + 1.0)
            .collect();
        for r in [90, 17, 5] {
            values[r * cols..(r + 1) * cols].copy_from_slice(&copy);
        }
        let query = values[40 * cols..41 * cols].to_vec();
        let mut gallery = Matrix { cols, values };
        let hits = &on_cpu(&query, &mut gallery, 4, 32)[0];
        let order: Vec<usize> = hits.iter().map(|h| h.index).collect();
        assert_eq!(order, [40, 5, 17, 90]);
        assert_eq!(hits[0].distance, 0.0);
        assert_eq!(hits[1].distance, (cols as f64).sqrt());
        assert!(hits[1..].iter().all(|h| h.distance == hits[1].distance));
    }

    #[test]
    fn asking_for_more_than_the_gallery_holds_ranks_all_of_it() {
        let cols = 8;
        let values = random(20, cols, 4);
        let queries = random(2, cols, 5);
        let mut gallery = Matrix {
            cols,
            values: values.clone(),
        };
        let hits = on_cpu(&queries, &mut gallery, 50, 6);
        assert_eq!(hits, brute_force(&queries, &values, cols, 20));
        assert!(hits.iter().all(|h| h.len() == 20));
    }

    #[test]
    fn feature_files_stream_and_the_host_executor_finds_the_same() {
        let cols = 24;
        let values = random(300, cols, 6);
        let queries = random(3, cols, 7);
        let expected = brute_force(&queries, &values, cols, 5);
        let dir = tempfile::tempdir().unwrap();
        for name in ["g.npy", "g.safetensors"] {
            let path = dir.path().join(name);
            let mut w = FeatureWriter::create(&path, cols, false, vec![]).unwrap();
            for (i, row) in values.chunks_exact(cols).enumerate() {
                w.push(row, &format!("{i}.jpg"), "").unwrap();
            }
            w.finish().unwrap();
            let mut reader = FeatureReader::open(&path).unwrap();
            assert_eq!(on_cpu(&queries, &mut reader, 5, 64), expected, "{name}");
        }
        // The products on the kernels the GPU runs (fc forward), here on the host executor.
        let emu = KernelDevice::new(EmuLauncher::new());
        let mut gallery = Matrix { cols, values };
        let hits = search(&emu, &queries, &mut gallery, 5, 100, &Progress::hidden()).unwrap();
        assert_eq!(hits, expected);
    }

    #[test]
    fn a_bounded_heap_keeps_the_nearest_and_bad_requests_are_refused() {
        let mut near = Nearest::new(3);
        for (d, i) in [(5.0, 0), (1.0, 1), (3.0, 2), (1.0, 3), (0.5, 4), (3.0, 5)] {
            near.offer(d, i);
        }
        let mut kept = near.indices();
        kept.sort();
        assert_eq!(kept, [1, 3, 4]);
        let mut gallery = Matrix {
            cols: 4,
            values: vec![0.0; 8],
        };
        let e = search(
            &CpuDevice,
            &[0.0; 3],
            &mut gallery,
            1,
            8,
            &Progress::hidden(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("rows of 4"), "{e}");
        let e = search(
            &CpuDevice,
            &[0.0; 4],
            &mut gallery,
            0,
            8,
            &Progress::hidden(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("0 nearest"), "{e}");
    }
}
