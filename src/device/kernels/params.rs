//! The convolutions' and fc layers' launch parameter structs, mirrors of `cuda/params.cuh` field
//! for field, and how each is filled from its geometry, with the checks that make a launch of it
//! safe; the other ops' mirrors live in their own files (`lrn`, `pool`, ...), the same way.
//! Every mirror has plain 4-byte fields, 8-byte ones first where present.

use super::i32_of;
use crate::ops::{conv::ConvGeom, fc::FcGeom};
use anyhow::{Result, ensure};

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(super) struct ConvParams {
    pub(super) n: i32,
    pub(super) c_in: i32,
    pub(super) h: i32,
    pub(super) w: i32,
    pub(super) c_out: i32,
    pub(super) out_h: i32,
    pub(super) out_w: i32,
    pub(super) k: i32,
    pub(super) stride: i32,
    pub(super) pad: i32,
    pub(super) groups: i32,
    pub(super) cin_g: i32,
    pub(super) cout_g: i32,
    pub(super) k_chunk: i32,
    pub(super) img_chunk: i32,
    pub(super) relu: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(super) struct FcParams {
    pub(super) n: i32,
    pub(super) inputs: i32,
    pub(super) outputs: i32,
    pub(super) k_chunk: i32,
}

pub(super) fn conv_params(g: &ConvGeom) -> Result<ConvParams> {
    ensure!(
        g.groups > 0 && g.c_in % g.groups == 0 && g.c_out % g.groups == 0,
        "{} input and {} output channels do not split into {} groups",
        g.c_in,
        g.c_out,
        g.groups
    );
    ensure!(
        g.stride > 0 && g.k > 0,
        "kernel size and stride must be positive"
    );
    ensure!(
        g.k <= g.h + g.pad + g.pad_end && g.k <= g.w + g.pad + g.pad_end,
        "a {}x{} kernel does not fit the padded {}x{} input",
        g.k,
        g.k,
        g.h,
        g.w
    );
    ensure!(g.n > 0 && g.c_in > 0 && g.c_out > 0, "empty convolution");
    for (what, v) in [("input length", g.x_len()), ("output length", g.y_len())] {
        i32_of(v, what)?;
    }
    i32_of(g.w_len(), "weight length")?;
    Ok(ConvParams {
        n: i32_of(g.n, "n")?,
        c_in: i32_of(g.c_in, "c_in")?,
        h: i32_of(g.h, "h")?,
        w: i32_of(g.w, "w")?,
        c_out: i32_of(g.c_out, "c_out")?,
        out_h: i32_of(g.out_h(), "out_h")?,
        out_w: i32_of(g.out_w(), "out_w")?,
        k: i32_of(g.k, "k")?,
        stride: i32_of(g.stride, "stride")?,
        pad: i32_of(g.pad, "pad")?,
        groups: i32_of(g.groups, "groups")?,
        cin_g: i32_of(g.cin_per_group(), "c_in per group")?,
        cout_g: i32_of(g.cout_per_group(), "c_out per group")?,
        k_chunk: 0,
        img_chunk: 0,
        relu: 0,
    })
}

pub(super) fn fc_params(g: &FcGeom) -> Result<FcParams> {
    ensure!(g.n > 0 && g.inputs > 0 && g.outputs > 0, "empty fc layer");
    i32_of(g.n * g.inputs, "input length")?;
    i32_of(g.n * g.outputs, "output length")?;
    i32_of(g.inputs * g.outputs, "weight length")?;
    Ok(FcParams {
        n: g.n as i32,
        inputs: g.inputs as i32,
        outputs: g.outputs as i32,
        k_chunk: 0,
    })
}

/// The multiplier and shift that divide numerators below 2^31 by `d` (1 <= d < 2^31) as
/// `(umulhi(n, m) + n) >> l` (Granlund & Montgomery 1994; `FastDiv` in `cuda/common.cuh`
/// computes the same on the device).
pub(super) fn fast_div(d: usize) -> (u32, u32) {
    assert!((1..1 << 31).contains(&d), "a divisor in 1..2^31");
    let l = if d > 1 {
        32 - ((d - 1) as u32).leading_zeros()
    } else {
        0
    };
    let m = ((((1u64 << l) - d as u64) << 32) / d as u64 + 1) as u32;
    (m, l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_division_is_exact() {
        for d in [
            1usize,
            2,
            3,
            4,
            5,
            7,
            11,
            13,
            55,
            169,
            3025,
            65535,
            (1 << 31) - 1,
        ] {
            let (m, l) = fast_div(d);
            let div = |n: u32| ((((n as u64 * m as u64) >> 32) + n as u64) >> l) as u32;
            for n in (0..5000u32).chain([(1 << 31) - 1, (1 << 30) + 12345, 999_999_937]) {
                assert_eq!(div(n), n / d as u32, "{n} / {d}");
            }
        }
    }

    #[test]
    fn param_structs_match_the_sizes_params_cuh_asserts() {
        // cuda/params.cuh static_asserts the same sizes on the C side.
        use super::super::{
            dropout::DropoutParams, lrn::LrnParams, pool::PoolParams, reduce::ReduceParams,
            sgd::SgdParams, softmax::SoftmaxParams, softmax::TopKParams,
            spatial_norm::SpatialNormParams,
        };
        use std::mem::{align_of, size_of};
        assert_eq!(size_of::<ConvParams>(), 64);
        assert_eq!(size_of::<FcParams>(), 16);
        assert_eq!(size_of::<ReduceParams>(), 16);
        assert_eq!(size_of::<LrnParams>(), 36);
        assert_eq!(size_of::<SpatialNormParams>(), 32);
        assert_eq!(size_of::<PoolParams>(), 36);
        assert_eq!(
            (size_of::<DropoutParams>(), align_of::<DropoutParams>()),
            (40, 8)
        );
        assert_eq!(size_of::<SoftmaxParams>(), 12);
        assert_eq!(size_of::<TopKParams>(), 12);
        assert_eq!(size_of::<SgdParams>(), 16);
    }
}
