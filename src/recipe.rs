//! The augmentation recipe a network is trained with: part of the network's spec (`model`) and
//! applied by the loader (`data`), so it lives below both. What each recipe does to an image is
//! `data::augment`'s.

use serde::{Deserialize, Serialize};

/// How training images are augmented and the mean image subtracted: the paper's text, or the
/// released code that produced its numbers (DESIGN §1; `convdata.py` of the 2012 source).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Augment {
    /// §4.1 as written: crop and mirror drawn per image; colour noise Σ p_i α_i λ_i with
    /// α ~ N(0, σ²) per image (see `colour_shift`); the mean image cut where the crop is, and
    /// mirrored with it.
    #[default]
    Paper,
    /// The released code: crop and mirror drawn once per chunk of 32 consecutive images of the
    /// epoch's order; colour noise σ·Σ p_i r_i √λ_i with r ~ N(0, 1) per image, and the
    /// mean-subtracted image plus its noise divided by 1 + σ (in training only); the mean image's
    /// centre crop subtracted from every view, in training and at test.
    Net145,
}

/// Consecutive images that share one crop and mirror under `Augment::Net145` (`crop_chunk`).
pub const NET145_CROP_CHUNK: usize = 32;

impl Augment {
    /// Whose augmentation this is, for `alexnet model`'s header.
    pub fn describe(self) -> &'static str {
        match self {
            Augment::Paper => "the paper's",
            Augment::Net145 => "the released code's",
        }
    }

    /// How many consecutive images of an epoch's order share one crop and mirror.
    pub fn crop_chunk(self) -> usize {
        match self {
            Augment::Paper => 1,
            Augment::Net145 => NET145_CROP_CHUNK,
        }
    }
}
