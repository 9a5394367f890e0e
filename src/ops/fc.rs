//! Fully connected layer: `y = x · wᵀ + b` with `x: [n, inputs]`, `w: [outputs, inputs]`,
//! `b: [outputs]`, `y: [n, outputs]`.

use crate::tensor::Real;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FcGeom {
    pub n: usize,
    pub inputs: usize,
    pub outputs: usize,
}

impl FcGeom {
    fn check(&self, x: usize, w: usize, b: usize, y: usize) {
        assert_eq!(x, self.n * self.inputs, "fc: input length for {self:?}");
        assert_eq!(
            w,
            self.outputs * self.inputs,
            "fc: weight length for {self:?}"
        );
        assert_eq!(b, self.outputs, "fc: bias length for {self:?}");
        assert_eq!(y, self.n * self.outputs, "fc: output length for {self:?}");
    }
}

/// Naive reference forward.
pub fn forward_naive<T: Real>(g: &FcGeom, x: &[T], w: &[T], b: &[T], y: &mut [T]) {
    g.check(x.len(), w.len(), b.len(), y.len());
    for n in 0..g.n {
        for o in 0..g.outputs {
            let mut acc = b[o];
            for i in 0..g.inputs {
                acc = acc + x[n * g.inputs + i] * w[o * g.inputs + i];
            }
            y[n * g.outputs + o] = acc;
        }
    }
}

/// Naive reference: `dx = dy · w`.
pub fn backward_data_naive<T: Real>(g: &FcGeom, dy: &[T], w: &[T], dx: &mut [T]) {
    g.check(dx.len(), w.len(), g.outputs, dy.len());
    for n in 0..g.n {
        for i in 0..g.inputs {
            let mut acc = T::zero();
            for o in 0..g.outputs {
                acc = acc + dy[n * g.outputs + o] * w[o * g.inputs + i];
            }
            dx[n * g.inputs + i] = acc;
        }
    }
}

/// Naive reference: `dw = dyᵀ · x`, `db = Σₙ dy`.
pub fn backward_filter_naive<T: Real>(g: &FcGeom, x: &[T], dy: &[T], dw: &mut [T], db: &mut [T]) {
    g.check(x.len(), dw.len(), db.len(), dy.len());
    for o in 0..g.outputs {
        let mut acc_b = T::zero();
        for n in 0..g.n {
            acc_b = acc_b + dy[n * g.outputs + o];
        }
        db[o] = acc_b;
        for i in 0..g.inputs {
            let mut acc = T::zero();
            for n in 0..g.n {
                acc = acc + dy[n * g.outputs + o] * x[n * g.inputs + i];
            }
            dw[o * g.inputs + i] = acc;
        }
    }
}

// Fast CPU paths (GEMM). Placeholders that defer to the naive loops until written.
pub fn forward(g: &FcGeom, x: &[f32], w: &[f32], b: &[f32], y: &mut [f32]) {
    forward_naive(g, x, w, b, y)
}
pub fn backward_data(g: &FcGeom, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    backward_data_naive(g, dy, w, dx)
}
pub fn backward_filter(g: &FcGeom, x: &[f32], dy: &[f32], dw: &mut [f32], db: &mut [f32]) {
    backward_filter_naive(g, x, dy, dw, db)
}
