//! Small exact properties of SGD, softmax/top-k and dropout.

use alexnet::ops::dropout::{self, DropoutGeom};
use alexnet::ops::sgd::{SgdStep, update_naive};
use alexnet::ops::softmax::{top_k, top_k_errors, xent_naive};

#[test]
fn sgd_is_the_papers_formula_with_decay_inside_the_velocity() {
    let s = SgdStep {
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 0.5,
    };
    let (mut w, mut v) = (vec![2.0f64, -1.0], vec![0.3, 0.0]);
    update_naive(&s, &mut w, &mut v, &[1.0, 4.0]);
    // SgdStep holds f32 hyper-parameters (0.1 and 0.9 are not exact in f32), hence 1e-7.
    // v = 0.9·0.3 − 0.5·0.1·2 − 0.1·1 = 0.07; w = 2.07.  v = 0 + 0.05 − 0.4 = −0.35; w = −1.35.
    assert!(
        (v[0] - 0.07).abs() < 1e-7 && (w[0] - 2.07).abs() < 1e-7,
        "{v:?} {w:?}"
    );
    assert!(
        (v[1] + 0.35).abs() < 1e-7 && (w[1] + 1.35).abs() < 1e-7,
        "{v:?} {w:?}"
    );
    // No decay: only momentum and gradient.
    let s = SgdStep {
        weight_decay: 0.0,
        ..s
    };
    let (mut w, mut v) = (vec![2.0f64], vec![0.0]);
    update_naive(&s, &mut w, &mut v, &[1.0]);
    assert!((w[0] - 1.9).abs() < 1e-7);
}

#[test]
fn softmax_top_k_and_extremes() {
    assert_eq!(top_k(&[0.1f32, 0.5, 0.5, 0.2], 3), [1, 2, 3]);
    assert_eq!(
        top_k_errors(2, 3, &[0.1f32, 0.7, 0.2, 0.3, 0.3, 0.4], &[1, 0], 1),
        1
    );
    assert_eq!(
        top_k_errors(2, 3, &[0.1f32, 0.7, 0.2, 0.3, 0.3, 0.4], &[1, 0], 2),
        0
    );
    let logits = [1000.0f64, -1000.0, 0.0, 3.0, 1.0, 2.0];
    let (mut p, mut d) = ([0.0; 6], [0.0; 6]);
    let loss = xent_naive(2, 3, &logits, &[1, 0], &mut p, &mut d);
    // Sample 0: log p[1] = -2000 exactly, no overflow or log(0).
    let want = (2000.0 + (-(3.0f64 - (3f64.exp() + 1f64.exp() + 2f64.exp()).ln()))) / 2.0;
    assert!((loss - want).abs() < 1e-9, "{loss} vs {want}");
    assert!((p[3..].iter().sum::<f64>() - 1.0).abs() < 1e-12);
    assert!((d[3] - (p[3] - 1.0) / 2.0).abs() < 1e-15);
}

#[test]
fn dropout_masks_are_seeded_split_invariant_and_drop_about_p() {
    let whole = DropoutGeom {
        n: 64,
        units: 4096,
        units_total: 4096,
        unit_offset: 0,
        p: 0.5,
        seed: 1,
        stream: 9,
    };
    let kept = (0..whole.n)
        .flat_map(|s| (0..4096).map(move |u| (s, u)))
        .filter(|&(s, u)| whole.keep(s, u))
        .count();
    let total = (whole.n * 4096) as f64;
    // Binomial(262144, 0.5): standard deviation 256 units; 6 sigma is 0.6% of the mean.
    assert!(
        (kept as f64 / total - 0.5).abs() < 6.0 * 256.0 / total,
        "{kept} of {total}"
    );
    // Tower 1 of a two-tower split draws exactly the whole layer's mask for its units.
    let tower1 = DropoutGeom {
        units: 2048,
        unit_offset: 2048,
        ..whole
    };
    assert!((0..64).all(|s| (0..2048).all(|u| tower1.keep(s, u) == whole.keep(s, u + 2048))));
    // Another stream or seed gives another mask.
    let other = DropoutGeom {
        stream: 10,
        ..whole
    };
    assert!((0..4096).any(|u| other.keep(0, u) != whole.keep(0, u)));
    let mut y = [0.0f32; 2];
    dropout::forward_test(0.5, &[3.0f32, -1.0], &mut y);
    assert_eq!(y, [1.5, -0.5]);
}
