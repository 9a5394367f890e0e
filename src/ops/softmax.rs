//! Softmax with cross-entropy over `[n, classes]` logits, and top-k for evaluation.

use crate::tensor::Real;

/// Writes the softmax of each row of `logits` into `probs` and `dlogits = (probs - onehot) / n`,
/// the gradient of the mean loss; returns the mean loss `-(1/n) Σ log probs[label]`.
pub fn xent_naive<T: Real>(
    n: usize,
    classes: usize,
    logits: &[T],
    labels: &[u32],
    probs: &mut [T],
    dlogits: &mut [T],
) -> f64 {
    assert_eq!(logits.len(), n * classes);
    assert_eq!(labels.len(), n);
    assert!(probs.len() == logits.len() && dlogits.len() == logits.len());
    let inv_n = T::from_f64_lossy(1.0 / n as f64);
    let mut loss = 0.0;
    for s in 0..n {
        let label = labels[s] as usize;
        assert!(
            label < classes,
            "label {label} out of range for {classes} classes"
        );
        let row = &logits[s * classes..(s + 1) * classes];
        let max = row.iter().copied().fold(T::neg_infinity(), T::max);
        let sum: T = row.iter().map(|&z| (z - max).exp()).sum();
        for c in 0..classes {
            let p = (row[c] - max).exp() / sum;
            probs[s * classes + c] = p;
            let onehot = if c == label { T::one() } else { T::zero() };
            dlogits[s * classes + c] = (p - onehot) * inv_n;
        }
        // log p[label] computed as z - max - log(sum), which stays finite when p underflows.
        loss -= (row[label] - max - sum.ln()).to_f64().unwrap();
    }
    loss / n as f64
}

/// The `k` largest entries of `row`, highest first; ties go to the lower class index.
pub fn top_k<T: Real>(row: &[T], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    idx.sort_by(|&a, &b| {
        row[b]
            .partial_cmp(&row[a])
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.cmp(&b))
    });
    idx.truncate(k);
    idx
}

/// How many of the `n` rows do *not* have their label among the top `k` scores.
pub fn top_k_errors<T: Real>(
    n: usize,
    classes: usize,
    scores: &[T],
    labels: &[u32],
    k: usize,
) -> usize {
    assert_eq!(scores.len(), n * classes);
    (0..n)
        .filter(|&s| {
            !top_k(&scores[s * classes..(s + 1) * classes], k).contains(&(labels[s] as usize))
        })
        .count()
}
