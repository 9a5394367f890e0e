//! The op geometry of each layer of a plan for a batch of `n`: what the network, the benchmarks
//! and the tests hand to the ops.

use super::plan::LayerPlan;
use super::spec::Layer;
use crate::ops::{
    conv::ConvGeom, fc::FcGeom, lrn::LrnGeom, pool::PoolGeom, spatial_norm::SpatialNormGeom,
};

impl LayerPlan {
    pub fn conv_geom(&self, n: usize) -> ConvGeom {
        let Layer::Conv(c) = &self.layer else {
            unreachable!(
                "geometry of a {} layer asked as another kind",
                self.layer.kind()
            )
        };
        ConvGeom {
            n,
            c_in: self.input.c,
            h: self.input.h,
            w: self.input.w,
            c_out: self.output.c,
            k: c.kernel,
            stride: c.stride,
            pad: c.pad,
            pad_end: c.pad_end.unwrap_or(c.pad),
            groups: c.groups,
        }
    }

    pub fn fc_geom(&self, n: usize) -> FcGeom {
        FcGeom {
            n,
            inputs: self.input.len(),
            outputs: self.output.c,
        }
    }

    pub fn lrn_geom(&self, n: usize) -> LrnGeom {
        let Layer::Lrn(l) = &self.layer else {
            unreachable!(
                "geometry of a {} layer asked as another kind",
                self.layer.kind()
            )
        };
        let s = self.output;
        LrnGeom {
            n,
            c: s.c,
            h: s.h,
            w: s.w,
            groups: l.groups,
            size: l.size,
            k: l.k,
            alpha: l.alpha,
            beta: l.beta,
            alpha_over_n: l.alpha_over_n,
        }
    }

    pub fn spatial_norm_geom(&self, n: usize) -> SpatialNormGeom {
        let Layer::SpatialNorm(l) = &self.layer else {
            unreachable!(
                "geometry of a {} layer asked as another kind",
                self.layer.kind()
            )
        };
        let s = self.output;
        SpatialNormGeom {
            n,
            c: s.c,
            h: s.h,
            w: s.w,
            size: l.size,
            k: l.k,
            alpha: l.alpha,
            beta: l.beta,
            alpha_over_area: l.alpha_over_area,
        }
    }

    pub fn pool_geom(&self, n: usize) -> PoolGeom {
        let Layer::MaxPool(p) = &self.layer else {
            unreachable!(
                "geometry of a {} layer asked as another kind",
                self.layer.kind()
            )
        };
        PoolGeom {
            n,
            c: self.input.c,
            h: self.input.h,
            w: self.input.w,
            size: p.size,
            stride: p.stride,
        }
    }
}
