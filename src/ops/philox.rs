//! Philox-4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011), the
//! counter-based generator behind dropout masks, initialisation and augmentation. A counter-based
//! generator makes every random number a pure function of (key, counter): CPU and GPU draw the
//! same masks, and a resumed run draws what the uninterrupted run would have, whatever the thread
//! schedule. `cuda/philox.cuh` implements the same rounds.

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = a as u64 * b as u64;
    ((p >> 32) as u32, p as u32)
}

/// Ten rounds of Philox-4x32 on `ctr` under `key`.
pub fn philox4x32_10(ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (mut c, mut k) = (ctr, key);
    for round in 0..10 {
        if round > 0 {
            k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
        }
        let (hi0, lo0) = mulhilo(M0, c[0]);
        let (hi1, lo1) = mulhilo(M1, c[2]);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// Splits a 64-bit seed into the generator's key.
pub fn key(seed: u64) -> [u32; 2] {
    [seed as u32, (seed >> 32) as u32]
}

/// The 32-bit word number `index` of the stream named by (`seed`, `stream`): word `index % 4` of
/// the block at counter `(index / 4, stream)`.
pub fn word(seed: u64, stream: u64, index: u64) -> u32 {
    block(seed, stream, index / 4)[(index % 4) as usize]
}

/// The four words `4·block .. 4·block + 4` of the stream named by (`seed`, `stream`) at once, for
/// callers that walk consecutive indices (one Philox evaluation instead of four).
pub fn block(seed: u64, stream: u64, block: u64) -> [u32; 4] {
    let ctr = [
        block as u32,
        (block >> 32) as u32,
        stream as u32,
        (stream >> 32) as u32,
    ];
    philox4x32_10(ctr, key(seed))
}

/// A uniform float in [0, 1) from the top 24 bits of a word: exact in f32, so CPU and GPU agree.
pub fn uniform(bits: u32) -> f32 {
    (bits >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// A standard normal from two words (Box–Muller, in f64 on the host; used for initialisation and
/// augmentation, which happen on the host only).
pub fn normal(bits_a: u32, bits_b: u32) -> f64 {
    // 1 - u keeps the logarithm's argument in (0, 1].
    let u1 = 1.0 - ((bits_a >> 8) as f64 + 0.5) / 16_777_216.0;
    let u2 = (bits_b >> 8) as f64 / 16_777_216.0;
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known-answer vectors from the Random123 distribution (kat_vectors, philox4x32_10).
    #[test]
    fn known_answers() {
        assert_eq!(
            philox4x32_10([0, 0, 0, 0], [0, 0]),
            [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]
        );
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344],
                [0xa409_3822, 0x299f_31d0]
            ),
            [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1]
        );
    }

    #[test]
    fn uniform_is_in_unit_interval_and_normal_is_standard() {
        assert_eq!(uniform(0), 0.0);
        assert!(uniform(u32::MAX) < 1.0);
        let n = 20_000u64;
        let xs: Vec<f64> = (0..n)
            .map(|i| normal(word(7, 1, 2 * i), word(7, 1, 2 * i + 1)))
            .collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        // Standard errors at n = 20000: 0.007 for the mean, 0.01 for the variance; 5 sigma bounds.
        assert!(mean.abs() < 0.035, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "variance {var}");
    }
}
