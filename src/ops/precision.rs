//! The number formats the products of the convolutions and fc layers may be taken in.
//!
//! - `fp32`: plain fp32 (the SIMT kernels and the CPU's GEMM): the exact, bit-reproducible
//!   reference path.
//! - `tf32`: both operands rounded to TF32 (fp32's 8-bit exponent, 10 mantissa bits) and
//!   multiplied on the tensor cores, sums kept in fp32. The rounding is `cvt.rna.tf32.f32`'s:
//!   to nearest, ties away from zero ([`to_tf32`]).
//! - `bf16`: both operands rounded to bfloat16 (8 exponent bits, 7 mantissa bits) to nearest,
//!   ties to even (`cvt.rn.bf16x2.f32`, `half::bf16::from_f32`), sums kept in fp32.
//!
//! Everything else stays fp32: weights, momentum and the SGD update, biases, activations between
//! layers, pooling, normalisation, softmax and the loss. Products of two TF32 or two bf16 values
//! are exact in fp32, so the CPU reference at a precision ([`Precision::round_all`] on both
//! operands, then the fp32 GEMM) computes what the tensor cores do, up to the order of the sums.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// fp32 products (SIMT kernels): exact and bit-reproducible.
    #[default]
    Fp32,
    /// TF32 operands on the tensor cores, fp32 sums.
    Tf32,
    /// bf16 operands on the tensor cores, fp32 sums.
    Bf16,
}

impl Precision {
    pub const ALL: [Precision; 3] = [Precision::Fp32, Precision::Tf32, Precision::Bf16];

    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Tf32 => "tf32",
            Precision::Bf16 => "bf16",
        }
    }

    /// `v` as an operand of this precision's products.
    pub fn round(self, v: f32) -> f32 {
        match self {
            Precision::Fp32 => v,
            Precision::Tf32 => to_tf32(v),
            Precision::Bf16 => half::bf16::from_f32(v).to_f32(),
        }
    }

    /// Every value of `xs` rounded (borrowed unchanged at fp32).
    pub fn round_all(self, xs: &[f32]) -> Cow<'_, [f32]> {
        if self == Precision::Fp32 {
            return Cow::Borrowed(xs);
        }
        Cow::Owned(xs.par_iter().map(|&v| self.round(v)).collect())
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Precision {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        Precision::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| anyhow::anyhow!("unknown precision {s:?}: fp32, tf32 or bf16"))
    }
}

/// `cvt.rna.tf32.f32`: `v` rounded to TF32, to nearest with ties away from zero, as an fp32 value
/// whose low 13 mantissa bits are zero. Infinities and NaN pass through (a NaN keeps being one);
/// values that round past the largest finite number become infinities.
pub fn to_tf32(v: f32) -> f32 {
    if !v.is_finite() {
        return v;
    }
    // Adding half of the dropped unit to the magnitude and truncating rounds ties away from
    // zero in sign-magnitude form; a carry into the exponent is the correct rounding up.
    f32::from_bits((v.to_bits() + 0x1000) & !0x1fff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tf32_rounds_to_nearest_with_ties_away_from_zero() {
        let unit = 2f32.powi(-10); // TF32's spacing in [1, 2)
        assert_eq!(to_tf32(1.0), 1.0);
        assert_eq!(to_tf32(1.0 + unit * 0.49), 1.0);
        assert_eq!(to_tf32(1.0 + unit * 0.51), 1.0 + unit);
        assert_eq!(
            to_tf32(1.0 + unit * 0.5),
            1.0 + unit,
            "a tie goes away from zero"
        );
        assert_eq!(to_tf32(-(1.0 + unit * 0.5)), -(1.0 + unit));
        assert_eq!(to_tf32(1.0 + unit * 1.5), 1.0 + 2.0 * unit);
        assert_eq!(to_tf32(2.0 - unit * 0.5), 2.0, "a carry into the exponent");
        assert_eq!(to_tf32(f32::INFINITY), f32::INFINITY);
        assert!(to_tf32(f32::NAN).is_nan());
        assert_eq!(to_tf32(f32::MAX), f32::INFINITY);
        for v in [0.1f32, -3.75e-3, 12345.678, 1e-30] {
            assert_eq!(to_tf32(v).to_bits() & 0x1fff, 0, "{v}");
            assert!((to_tf32(v) - v).abs() <= v.abs() * 2f32.powi(-11), "{v}");
        }
    }

    #[test]
    fn bf16_rounds_to_nearest_even_and_fp32_is_untouched() {
        let unit = 2f32.powi(-7);
        assert_eq!(
            Precision::Bf16.round(1.0 + unit * 0.5),
            1.0,
            "a tie goes to even"
        );
        assert_eq!(Precision::Bf16.round(1.0 + unit * 1.5), 1.0 + 2.0 * unit);
        assert_eq!(Precision::Bf16.round(1.0 + unit * 0.51), 1.0 + unit);
        let xs = [0.1f32, 2.5, -7.0];
        assert!(matches!(Precision::Fp32.round_all(&xs), Cow::Borrowed(_)));
        assert_eq!("bf16".parse::<Precision>().unwrap(), Precision::Bf16);
        assert!("fp16".parse::<Precision>().is_err());
    }
}
