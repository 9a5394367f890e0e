//! `prepare`: the training set's per-pixel mean image and the principal components of its RGB
//! values, computed in one pass, saved beside the dataset and reused.
//!
//! All sums are integers (pixel values are `u8`), so the result does not depend on how the images
//! are split among threads or in which order partial sums meet: it is bit-for-bit the same with
//! any thread count. Covariance and mean are formed from the exact integer sums at the end.

use super::source::Dataset;
use super::{BadSample, thread_pool};
use crate::progress::Progress;
use anyhow::{Context, Result, anyhow, bail, ensure};
use rayon::prelude::*;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const FORMAT: &str = "alexnet-stats-1";

/// What `prepare` learns from the training set. Pixel values are in 0..255 throughout.
#[derive(Clone, Debug, PartialEq)]
pub struct Stats {
    /// Side of the base images the statistics were taken over.
    pub base: usize,
    /// Per-pixel mean image, CHW `[3, base, base]`, RGB.
    pub mean: Vec<f32>,
    /// Covariance of (R, G, B) over every pixel of every image (population covariance, 0..255
    /// units, so 255² units).
    pub covariance: [[f64; 3]; 3],
    /// Eigenvalues of `covariance`, largest first.
    pub eigenvalues: [f64; 3],
    /// `eigenvectors[i]` is the unit eigenvector (R, G, B) of `eigenvalues[i]`; each is signed so
    /// that its largest component is positive.
    pub eigenvectors: [[f64; 3]; 3],
    /// Images the statistics were taken over (unreadable ones are left out).
    pub images: usize,
    /// The dataset's samples when computed: a stats file is reused only if this still matches.
    pub samples: usize,
    /// The dataset's class names, so `predict` can name classes from this file alone.
    pub classes: Vec<String>,
}

/// What [`prepare`] did.
#[derive(Debug)]
pub struct Prepared {
    pub stats: Stats,
    /// The file read or written (`None` for the synthetic dataset, which is not saved).
    pub path: Option<PathBuf>,
    /// Whether the statistics were read from an existing file rather than computed.
    pub reused: bool,
    /// Files that could not be decoded (empty when reused).
    pub bad: Vec<BadSample>,
}

/// The default statistics file: `<dataset>.stats-<base>.safetensors` beside the dataset folder or
/// tar (`imagenet/train.stats-256.safetensors`, `cifar10/train.stats-32.safetensors`).
pub fn default_path(dataset: &Dataset, base: usize) -> Result<PathBuf> {
    ensure!(
        !dataset.is_synthetic(),
        "the synthetic dataset has no folder to keep statistics in"
    );
    let path = dataset
        .path()
        .canonicalize()
        .with_context(|| format!("resolving {}", dataset.path().display()))?;
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("{} has no file name", path.display()))?
        .to_string_lossy();
    let stem = name.strip_suffix(".tar").unwrap_or(&name);
    Ok(path.with_file_name(format!("{stem}.stats-{base}.safetensors")))
}

/// Loads the statistics from `path` (default: [`default_path`]) when that file exists and matches
/// this dataset and `base`; otherwise computes them with `threads` threads and saves them there.
/// The synthetic dataset's are computed and not saved. If the default location cannot be written
/// (shared datasets are often read-only) the error says to pass a path.
pub fn prepare(
    dataset: &Dataset,
    base: usize,
    threads: usize,
    path: Option<&Path>,
) -> Result<Prepared> {
    prepare_with(dataset, base, threads, path, &Progress::hidden())
}

/// [`prepare`], reporting each image to `progress` and stopping early if it is interrupted.
pub fn prepare_with(
    dataset: &Dataset,
    base: usize,
    threads: usize,
    path: Option<&Path>,
    progress: &Progress,
) -> Result<Prepared> {
    if dataset.is_synthetic() && path.is_none() {
        let (stats, bad) = compute_with(dataset, base, threads, progress)?;
        return Ok(Prepared {
            stats,
            path: None,
            reused: false,
            bad,
        });
    }
    let explicit = path.is_some();
    let path = match path {
        Some(p) => p.to_path_buf(),
        None => default_path(dataset, base)?,
    };
    if path.exists() {
        let stats = Stats::load(&path)?;
        if stats.base == base
            && stats.samples == dataset.len()
            && stats.classes == dataset.classes()
        {
            return Ok(Prepared {
                stats,
                path: Some(path),
                reused: true,
                bad: Vec::new(),
            });
        }
    }
    let (stats, bad) = compute_with(dataset, base, threads, progress)?;
    stats.save(&path).map_err(|e| {
        if explicit {
            e
        } else {
            e.context(format!(
                "the dataset's folder may be read-only: pass an explicit path for the statistics file instead of {}",
                path.display()
            ))
        }
    })?;
    Ok(Prepared {
        stats,
        path: Some(path),
        reused: false,
        bad,
    })
}

/// Integer sums over images: exact, so any grouping gives the same totals.
pub(crate) struct Sums {
    /// Per pixel and channel, HWC.
    pixel: Vec<u64>,
    /// Σ r, Σ g, Σ b over every pixel.
    channel: [u128; 3],
    /// Σ rr, rg, rb, gg, gb, bb.
    products: [u128; 6],
    images: usize,
    pub(crate) bad: Vec<BadSample>,
}

const PAIRS: [(usize, usize); 6] = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)];

impl Sums {
    pub(crate) fn new(base: usize) -> Sums {
        Sums {
            pixel: vec![0; base * base * 3],
            channel: [0; 3],
            products: [0; 6],
            images: 0,
            bad: Vec::new(),
        }
    }
    pub(crate) fn add_image(&mut self, img: &[u8]) {
        let (mut channel, mut products) = ([0u64; 3], [0u64; 6]);
        for (sum, &v) in self.pixel.iter_mut().zip(img) {
            *sum += v as u64;
        }
        for px in img.chunks_exact(3) {
            let p = [px[0] as u64, px[1] as u64, px[2] as u64];
            for (sum, v) in channel.iter_mut().zip(p) {
                *sum += v;
            }
            for (sum, &(a, b)) in products.iter_mut().zip(&PAIRS) {
                *sum += p[a] * p[b];
            }
        }
        for (total, part) in self.channel.iter_mut().zip(channel) {
            *total += part as u128;
        }
        for (total, part) in self.products.iter_mut().zip(products) {
            *total += part as u128;
        }
        self.images += 1;
    }
    pub(crate) fn merge(mut self, other: Sums) -> Sums {
        for (a, b) in self.pixel.iter_mut().zip(&other.pixel) {
            *a += b;
        }
        for c in 0..3 {
            self.channel[c] += other.channel[c];
        }
        for k in 0..6 {
            self.products[k] += other.products[k];
        }
        self.images += other.images;
        self.bad.extend(other.bad);
        self
    }
}

/// One pass over `dataset` at `base`×`base` with `threads` threads. Unreadable images are left out
/// and returned, sorted by index.
pub fn compute(dataset: &Dataset, base: usize, threads: usize) -> Result<(Stats, Vec<BadSample>)> {
    compute_with(dataset, base, threads, &Progress::hidden())
}

/// [`compute`], reporting each image to `progress`; an interruption ends it with an error.
pub fn compute_with(
    dataset: &Dataset,
    base: usize,
    threads: usize,
    progress: &Progress,
) -> Result<(Stats, Vec<BadSample>)> {
    ensure!(
        !dataset.is_empty(),
        "{} holds no images",
        dataset.path().display()
    );
    let pool = thread_pool(threads)?;
    let sums = pool.install(|| {
        (0..dataset.len())
            .into_par_iter()
            .fold(
                || Sums::new(base),
                |mut sums, i| {
                    if progress.interrupted() {
                        return sums;
                    }
                    match dataset.load_unnamed(i, base) {
                        Ok(img) => sums.add_image(&img),
                        Err(e) => sums.bad.push(BadSample::new(dataset, i, &e)),
                    }
                    progress.inc();
                    sums
                },
            )
            .reduce(|| Sums::new(base), Sums::merge)
    });
    progress.finish();
    if progress.interrupted() {
        bail!(
            "interrupted while computing the statistics of {}",
            dataset.path().display()
        );
    }
    sums.into_stats(dataset, base)
}

impl Sums {
    /// The statistics of `dataset` from its sums, and its unreadable samples sorted by index; an
    /// error if no image at all could be read.
    pub(crate) fn into_stats(
        self,
        dataset: &Dataset,
        base: usize,
    ) -> Result<(Stats, Vec<BadSample>)> {
        let sums = self;
        let mut bad = sums.bad;
        bad.sort_by_key(|b| b.index);
        if sums.images == 0 {
            bail!(
                "none of the {} images of {} could be read; the first error: {}",
                dataset.len(),
                dataset.path().display(),
                bad.first().map(|b| b.error.as_str()).unwrap_or("none")
            );
        }
        let n = sums.images as f64;
        let plane = base * base;
        let mut mean = vec![0f32; 3 * plane];
        for (i, &s) in sums.pixel.iter().enumerate() {
            mean[(i % 3) * plane + i / 3] = (s as f64 / n) as f32;
        }
        // cov(a, b) = (P·Σab − Σa·Σb) / P², the numerator exact in integers.
        let pixels = (sums.images * plane) as i128;
        let mut covariance = [[0f64; 3]; 3];
        for (k, &(a, b)) in PAIRS.iter().enumerate() {
            let num = pixels * sums.products[k] as i128
                - sums.channel[a] as i128 * sums.channel[b] as i128;
            let c = num as f64 / (pixels as f64 * pixels as f64);
            covariance[a][b] = c;
            covariance[b][a] = c;
        }
        let (eigenvalues, eigenvectors) = symmetric_eigen(covariance);
        let stats = Stats {
            base,
            mean,
            covariance,
            eigenvalues,
            eigenvectors,
            images: sums.images,
            samples: dataset.len(),
            classes: dataset.classes().to_vec(),
        };
        Ok((stats, bad))
    }
}

/// Eigen-decomposition of a symmetric 3×3 matrix by cyclic Jacobi rotations: returns the
/// eigenvalues, largest first, and the matching unit eigenvectors (as rows), each signed so its
/// largest-magnitude component is positive.
pub fn symmetric_eigen(m: [[f64; 3]; 3]) -> ([f64; 3], [[f64; 3]; 3]) {
    let mut a = m;
    let mut v = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]; // columns: eigenvectors
    for _sweep in 0..64 {
        let off = a[0][1].powi(2) + a[0][2].powi(2) + a[1][2].powi(2);
        let scale = a[0][0].powi(2) + a[1][1].powi(2) + a[2][2].powi(2);
        if off <= f64::EPSILON.powi(2) * scale || off == 0.0 {
            break;
        }
        for (p, q) in [(0, 1), (0, 2), (1, 2)] {
            if a[p][q] == 0.0 {
                continue;
            }
            // The rotation that zeroes a[p][q] (Golub & Van Loan, Algorithm 8.4.1).
            let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
            let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
            let c = 1.0 / (t * t + 1.0).sqrt();
            let s = t * c;
            // A ← Jᵀ A J: columns p and q, then rows p and q; V ← V J.
            for row in &mut a {
                let (akp, akq) = (row[p], row[q]);
                row[p] = c * akp - s * akq;
                row[q] = s * akp + c * akq;
            }
            let (rp, rq) = (a[p], a[q]);
            a[p] = std::array::from_fn(|k| c * rp[k] - s * rq[k]);
            a[q] = std::array::from_fn(|k| s * rp[k] + c * rq[k]);
            for row in &mut v {
                let (vp, vq) = (row[p], row[q]);
                row[p] = c * vp - s * vq;
                row[q] = s * vp + c * vq;
            }
        }
    }
    let mut order = [0, 1, 2];
    order.sort_by(|&i, &j| a[j][j].total_cmp(&a[i][i]));
    let mut values = [0.0; 3];
    let mut vectors = [[0.0; 3]; 3];
    for (out, &i) in order.iter().enumerate() {
        values[out] = a[i][i];
        let mut e = [v[0][i], v[1][i], v[2][i]];
        let norm = e.iter().map(|x| x * x).sum::<f64>().sqrt();
        let largest = e
            .iter()
            .copied()
            .fold(0.0f64, |m, x| if x.abs() > m.abs() { x } else { m });
        let sign = if largest < 0.0 { -1.0 } else { 1.0 };
        for x in &mut e {
            *x *= sign / norm;
        }
        vectors[out] = e;
    }
    (values, vectors)
}

fn f64_bytes(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn read_f64(st: &SafeTensors, name: &str, len: usize) -> Result<Vec<f64>> {
    let t = st.tensor(name).map_err(|e| anyhow!("tensor {name}: {e}"))?;
    ensure!(
        t.dtype() == Dtype::F64 && t.data().len() == len * 8,
        "tensor {name}: expected {len} f64"
    );
    Ok(t.data()
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().unwrap_or_default()))
        .collect())
}

impl Stats {
    /// Writes a safetensors file: `mean` f32 `[3, base, base]`, `covariance` and `eigenvectors`
    /// f64 `[3, 3]` (eigenvectors as rows), `eigenvalues` f64 `[3]`; base, counts and class names
    /// in its metadata. Written to a temporary file and renamed, so a reader never sees half.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mean: Vec<u8> = self.mean.iter().flat_map(|x| x.to_le_bytes()).collect();
        let cov = f64_bytes(&self.covariance.concat());
        let values = f64_bytes(&self.eigenvalues);
        let vectors = f64_bytes(&self.eigenvectors.concat());
        let b = self.base;
        let tensors = [
            ("mean", TensorView::new(Dtype::F32, vec![3, b, b], &mean)?),
            ("covariance", TensorView::new(Dtype::F64, vec![3, 3], &cov)?),
            (
                "eigenvalues",
                TensorView::new(Dtype::F64, vec![3], &values)?,
            ),
            (
                "eigenvectors",
                TensorView::new(Dtype::F64, vec![3, 3], &vectors)?,
            ),
        ];
        let metadata = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("base".to_string(), b.to_string()),
            ("images".to_string(), self.images.to_string()),
            ("samples".to_string(), self.samples.to_string()),
            ("classes".to_string(), serde_json::to_string(&self.classes)?),
        ]);
        let bytes = safetensors::serialize(tensors, Some(metadata))?;
        crate::files::write_atomic(path, &bytes)
    }

    pub fn load(path: &Path) -> Result<Stats> {
        let bytes = crate::files::read_whole(path)?;
        Self::parse(&bytes).with_context(|| format!("reading statistics file {}", path.display()))
    }

    fn parse(bytes: &[u8]) -> Result<Stats> {
        let (_, meta) = SafeTensors::read_metadata(bytes)?;
        let info = meta.metadata().clone().unwrap_or_default();
        let get = |k: &str| info.get(k).ok_or_else(|| anyhow!("metadata lacks {k:?}"));
        ensure!(get("format")? == FORMAT, "not an {FORMAT} file");
        let base: usize = get("base")?.parse()?;
        let st = SafeTensors::deserialize(bytes)?;
        let t = st.tensor("mean").map_err(|e| anyhow!("tensor mean: {e}"))?;
        ensure!(
            t.dtype() == Dtype::F32 && t.shape() == [3, base, base],
            "tensor mean: expected f32 [3, {base}, {base}]"
        );
        let mean = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let rows = |v: Vec<f64>| [[v[0], v[1], v[2]], [v[3], v[4], v[5]], [v[6], v[7], v[8]]];
        let values = read_f64(&st, "eigenvalues", 3)?;
        let stats = Stats {
            base,
            mean,
            covariance: rows(read_f64(&st, "covariance", 9)?),
            eigenvalues: [values[0], values[1], values[2]],
            eigenvectors: rows(read_f64(&st, "eigenvectors", 9)?),
            images: get("images")?.parse()?,
            samples: get("samples")?.parse()?,
            classes: serde_json::from_str(get("classes")?)?,
        };
        let finite = stats.mean.iter().all(|m| (0.0..=255.0).contains(m))
            && stats.covariance.iter().flatten().all(|v| v.is_finite())
            && stats.eigenvalues.iter().all(|v| v.is_finite())
            && stats.eigenvectors.iter().flatten().all(|v| v.is_finite());
        ensure!(
            finite,
            "the mean image or colour PCA holds values that are not finite pixel statistics: the file is damaged"
        );
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_go_beside_the_dataset_or_where_told() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("train");
        std::fs::create_dir_all(root.join("a")).unwrap();
        image::RgbImage::from_pixel(6, 4, image::Rgb([10, 20, 30]))
            .save(root.join("a/x.png"))
            .unwrap();
        let ds = Dataset::open(&root).unwrap();
        let path = default_path(&ds, 8).unwrap();
        let beside = dir
            .path()
            .canonicalize()
            .unwrap()
            .join("train.stats-8.safetensors");
        assert_eq!(path, beside);

        // The default location cannot be written (a folder squats on the temporary file's name:
        // tests run as root, whom read-only permissions do not stop): the error says what to do.
        std::fs::create_dir(crate::files::partial_path(&path)).unwrap();
        let e = format!("{:#}", prepare(&ds, 8, 1, None).unwrap_err());
        assert!(
            e.contains("pass an explicit path for the statistics file"),
            "{e}"
        );
        let told = dir.path().join("elsewhere.safetensors");
        let prepared = prepare(&ds, 8, 1, Some(&told)).unwrap();
        assert_eq!(prepared.path.as_deref(), Some(told.as_path()));
        assert_eq!(&prepared.stats.mean[..2], &[10.0, 10.0]);
        assert_eq!(
            prepared.stats.eigenvalues, [0.0; 3],
            "one colour: no variance"
        );

        // Writable again: written beside the dataset once, then reused.
        std::fs::remove_dir(crate::files::partial_path(&path)).unwrap();
        assert!(!prepare(&ds, 8, 1, None).unwrap().reused);
        let again = prepare(&ds, 8, 1, None).unwrap();
        assert!(again.reused && again.path == Some(beside));
        assert_eq!(again.stats, prepared.stats);
    }

    #[test]
    fn jacobi_diagonalises_a_symmetric_matrix() {
        let m = [[4.0, 1.0, 2.0], [1.0, 3.0, 0.5], [2.0, 0.5, 5.0]];
        let (values, vectors) = symmetric_eigen(m);
        assert!(values[0] >= values[1] && values[1] >= values[2]);
        // Trace is preserved: sum of eigenvalues = 12.
        assert!((values.iter().sum::<f64>() - 12.0).abs() < 1e-12);
        for i in 0..3 {
            // m v = λ v to within rounding (entries of size ~5, so 1e-12 is ~1e3 ulps).
            for r in 0..3 {
                let mv: f64 = (0..3).map(|c| m[r][c] * vectors[i][c]).sum();
                assert!(
                    (mv - values[i] * vectors[i][r]).abs() < 1e-12,
                    "pair {i} row {r}"
                );
            }
            for j in 0..3 {
                let dot: f64 = (0..3).map(|c| vectors[i][c] * vectors[j][c]).sum();
                assert!((dot - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
        // Already diagonal: eigenvalues sorted, eigenvectors the axes.
        let (values, vectors) =
            symmetric_eigen([[1.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 2.0]]);
        assert_eq!(values, [3.0, 2.0, 1.0]);
        assert_eq!(vectors, [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]);
    }
}
