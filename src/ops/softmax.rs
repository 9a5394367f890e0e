//! Softmax with cross-entropy over `[n, classes]` logits, and top-k for evaluation.

use crate::tensor::Real;

/// Writes the softmax of each row of `logits` into `probs`, `dlogits = (probs - onehot) / n`
/// (the gradient of the mean loss) and each row's loss `-log probs[label]` into `losses`.
pub fn xent_rows_naive<T: Real>(
    n: usize,
    classes: usize,
    logits: &[T],
    labels: &[u32],
    probs: &mut [T],
    dlogits: &mut [T],
    losses: &mut [T],
) {
    assert_eq!(logits.len(), n * classes);
    assert!(labels.len() == n && losses.len() == n);
    assert!(probs.len() == logits.len() && dlogits.len() == logits.len());
    let inv_n = T::from_f64_lossy(1.0 / n as f64);
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
        losses[s] = -(row[label] - max - sum.ln());
    }
}

/// `xent_rows_naive` that returns the mean loss instead of each row's.
pub fn xent_naive<T: Real>(
    n: usize,
    classes: usize,
    logits: &[T],
    labels: &[u32],
    probs: &mut [T],
    dlogits: &mut [T],
) -> f64 {
    let mut losses = vec![T::zero(); n];
    xent_rows_naive(n, classes, logits, labels, probs, dlogits, &mut losses);
    mean_loss(&losses)
}

/// The mean of per-row losses, summed in f64 in row order.
pub fn mean_loss<T: Real>(losses: &[T]) -> f64 {
    losses.iter().map(|l| l.to_f64().unwrap()).sum::<f64>() / losses.len() as f64
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_breaks_ties_towards_the_lower_index() {
        let row = [1.0f32, 3.0, 3.0, 2.0, 3.0];
        assert_eq!(top_k(&row, 1), vec![1]);
        assert_eq!(top_k(&row, 2), vec![1, 2]);
        assert_eq!(top_k(&row, 3), vec![1, 2, 4]);
        assert_eq!(top_k(&row, 5), vec![1, 2, 4, 3, 0]);
        assert_eq!(top_k(&row, 9), vec![1, 2, 4, 3, 0], "k past the row");
        assert_eq!(top_k(&[0.0f64; 4], 2), vec![0, 1], "all tied");
    }

    #[test]
    fn top_k_errors_counts_rows_missing_their_label() {
        let scores = [
            0.1f32, 0.9, 0.5, 0.2, // top-1 [1], top-2 [1, 2]
            0.7, 0.7, 0.7, 0.0, // all tied but one: top-1 [0], top-2 [0, 1]
            0.0, 0.1, 0.2, 0.3, // top-1 [3], top-2 [3, 2]
        ];
        let labels = [2, 2, 3];
        assert_eq!(top_k_errors(3, 4, &scores, &labels, 1), 2);
        // Row 1's label (2) ties with 0 and 1 but loses the tie to both.
        assert_eq!(top_k_errors(3, 4, &scores, &labels, 2), 1);
        assert_eq!(top_k_errors(3, 4, &scores, &labels, 3), 0);
    }

    fn xent<T: Real>(classes: usize, logits: &[T], labels: &[u32]) -> (f64, Vec<T>, Vec<T>) {
        let n = labels.len();
        let (mut probs, mut dlogits) = (vec![T::zero(); n * classes], vec![T::zero(); n * classes]);
        let loss = xent_naive(n, classes, logits, labels, &mut probs, &mut dlogits);
        (loss, probs, dlogits)
    }

    #[test]
    fn probabilities_sum_to_one_and_loss_is_minus_log_p_label() {
        let classes = 10;
        let logits: Vec<f64> = (0..3 * classes)
            .map(|i| 4.0 * (i as f64 * 1.3).sin())
            .collect();
        let labels = [3, 0, 9];
        let (loss, probs, dlogits) = xent(classes, &logits, &labels);
        let mut want_loss = 0.0;
        for (s, &label) in labels.iter().enumerate() {
            let p = &probs[s * classes..(s + 1) * classes];
            // Ten terms, each rounded once: a few ulps of 1.
            assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-14);
            assert!(p.iter().all(|&p| p > 0.0 && p < 1.0));
            want_loss -= p[label as usize].ln();
            // dlogits = (p − onehot) / n.
            for c in 0..classes {
                let onehot = if c == label as usize { 1.0 } else { 0.0 };
                // (Computed as a product with 1/n: within an ulp of the quotient.)
                assert!((dlogits[s * classes + c] - (p[c] - onehot) / 3.0).abs() < 1e-16);
            }
        }
        // The mean of −ln p[label] (log of a rounded p vs the log-sum-exp form: ~1e-16 apart).
        assert!(
            (loss - want_loss / 3.0).abs() < 1e-14,
            "{loss} vs {}",
            want_loss / 3.0
        );

        // The same in f32: ten terms, sum within a few f32 ulps of 1.
        let logits32: Vec<f32> = logits.iter().map(|&z| z as f32).collect();
        let (loss32, probs32, _) = xent(classes, &logits32, &labels);
        for s in 0..3 {
            let sum: f32 = probs32[s * classes..(s + 1) * classes].iter().sum();
            assert!((sum - 1.0).abs() < 1e-6, "f32 row {s} sums to {sum}");
        }
        assert!((loss32 - loss).abs() < 1e-5 * loss.abs());
    }

    #[test]
    fn extreme_logits_stay_finite() {
        // Row 0: the label's probability underflows to 0, yet the loss is the exact 2000 (the
        // log-sum-exp form never takes log 0). Row 1: the label wins by 2000: loss 0.
        let logits = [1000.0f64, -1000.0, 0.0, 1000.0, -1000.0, 0.0];
        let (loss, probs, dlogits) = xent(3, &logits, &[1, 0]);
        assert!(probs.iter().chain(&dlogits).all(|v| v.is_finite()));
        assert_eq!(probs[1], 0.0);
        assert!(
            (loss - 1000.0).abs() < 1e-9,
            "mean of 2000 and 0, got {loss}"
        );

        // f32, where exp overflows past 88.7: logits far beyond that stay finite too.
        let logits = [1e30f32, -1e30, 0.0, 200.0, 100.0, -300.0];
        let (loss, probs, dlogits) = xent(3, &logits, &[2, 0]);
        assert!(probs.iter().chain(&dlogits).all(|v| v.is_finite()));
        assert!(loss.is_finite());
        // Row 0 (label 2): −(0 − 1e30) = 1e30; row 1 (label 0): −(0 − ln(1 + e^−100)) ≈ 0.
        let want = (1e30f32 as f64) / 2.0;
        assert!((loss - want).abs() <= 1e-6 * want, "{loss} vs {want}");
        for s in 0..2 {
            let sum: f32 = probs[s * 3..(s + 1) * 3].iter().sum();
            assert!((sum - 1.0).abs() < 1e-6);
        }
    }
}
