//! The launch parameter structs, mirrors of `cuda/params.cuh` field for field (plain 4-byte
//! fields, 8-byte ones first where present), and how each is filled from an op's geometry, with
//! the checks that make a launch of it safe.

use super::i32_of;
use crate::ops::{
    conv::ConvGeom, dropout::DropoutGeom, fc::FcGeom, lrn::LrnGeom, pool::PoolGeom,
    spatial_norm::SpatialNormGeom,
};
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

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(super) struct ReduceParams {
    pub(super) len: i32,
    pub(super) splits: i32,
    pub(super) bias_div: i32,
    pub(super) bias_mod: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(super) struct LrnParams {
    pub(super) n: i32,
    pub(super) c: i32,
    pub(super) hw: i32,
    pub(super) group_c: i32,
    pub(super) half: i32,
    pub(super) k: f32,
    pub(super) alpha: f32,
    pub(super) beta: f32,
    pub(super) two_alpha_beta: f32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(super) struct SpatialNormParams {
    pub(super) maps: i32,
    pub(super) h: i32,
    pub(super) w: i32,
    pub(super) half: i32,
    pub(super) k: f32,
    pub(super) alpha: f32,
    pub(super) beta: f32,
    pub(super) two_alpha_beta: f32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(super) struct PoolParams {
    pub(super) maps: i32,
    pub(super) h: i32,
    pub(super) w: i32,
    pub(super) out_h: i32,
    pub(super) out_w: i32,
    pub(super) size: i32,
    pub(super) stride: i32,
    pub(super) stride_m: u32,
    pub(super) stride_l: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(super) struct DropoutParams {
    pub(super) seed: u64,
    pub(super) stream: u64,
    pub(super) n: i32,
    pub(super) units: i32,
    pub(super) units_total: i32,
    pub(super) unit_offset: i32,
    pub(super) p: f32,
    pub(super) first_sample: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(super) struct SoftmaxParams {
    pub(super) n: i32,
    pub(super) classes: i32,
    pub(super) inv_n: f32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(super) struct TopKParams {
    pub(super) n: i32,
    pub(super) classes: i32,
    pub(super) k: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(super) struct SgdParams {
    pub(super) n: i32,
    pub(super) momentum: f32,
    pub(super) lr: f32,
    pub(super) decay: f32,
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

pub(super) fn pool_params(g: &PoolGeom) -> Result<PoolParams> {
    ensure!(
        g.size > 0 && g.stride > 0 && g.size <= g.h && g.size <= g.w,
        "a {}x{} window does not fit the {}x{} input (stride {})",
        g.size,
        g.size,
        g.h,
        g.w,
        g.stride
    );
    i32_of(g.x_len(), "input length")?;
    Ok(PoolParams {
        maps: (g.n * g.c) as i32,
        h: g.h as i32,
        w: g.w as i32,
        out_h: g.out_h() as i32,
        out_w: g.out_w() as i32,
        size: g.size as i32,
        stride: g.stride as i32,
        stride_m: fast_div(g.stride).0,
        stride_l: fast_div(g.stride).1,
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

pub(super) fn lrn_params(g: &LrnGeom) -> Result<LrnParams> {
    ensure!(
        g.groups > 0 && g.c % g.groups == 0,
        "{} channels do not split into {} groups",
        g.c,
        g.groups
    );
    ensure!(g.size % 2 == 1, "window size {} is not odd", g.size);
    i32_of(g.len(), "length")?;
    Ok(LrnParams {
        n: g.n as i32,
        c: g.c as i32,
        hw: (g.h * g.w) as i32,
        group_c: (g.c / g.groups) as i32,
        half: (g.size / 2) as i32,
        k: g.k,
        alpha: g.effective_alpha() as f32,
        beta: g.beta,
        two_alpha_beta: (2.0 * g.effective_alpha() * g.beta as f64) as f32,
    })
}

pub(super) fn spatial_norm_params(g: &SpatialNormGeom) -> Result<SpatialNormParams> {
    ensure!(g.size % 2 == 1, "window size {} is not odd", g.size);
    i32_of(g.len(), "length")?;
    Ok(SpatialNormParams {
        maps: (g.n * g.c) as i32,
        h: g.h as i32,
        w: g.w as i32,
        half: (g.size / 2) as i32,
        k: g.k,
        alpha: g.effective_alpha() as f32,
        beta: g.beta,
        two_alpha_beta: (2.0 * g.effective_alpha() * g.beta as f64) as f32,
    })
}

pub(super) fn dropout_params(g: &DropoutGeom) -> Result<DropoutParams> {
    ensure!(
        g.unit_offset + g.units <= g.units_total,
        "units {}..{} lie outside the layer's {}",
        g.unit_offset,
        g.unit_offset + g.units,
        g.units_total
    );
    ensure!(
        (0.0..1.0).contains(&g.p),
        "drop probability {} is not in [0, 1)",
        g.p
    );
    i32_of(g.len(), "length")?;
    // The kernel adds the two in an int.
    i32_of(g.first_sample + g.n, "first_sample + n")?;
    Ok(DropoutParams {
        seed: g.seed,
        stream: g.stream,
        n: g.n as i32,
        units: g.units as i32,
        units_total: i32_of(g.units_total, "units_total")?,
        unit_offset: g.unit_offset as i32,
        p: g.p,
        first_sample: i32_of(g.first_sample, "first_sample")?,
    })
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
