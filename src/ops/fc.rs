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

// Fast CPU paths: one GEMM per pass (matrixmultiply threads it; it splits the output, never the
// summed dimension, so results do not depend on the thread count).

/// Fast forward: `y = b` broadcast, then `y += x · wᵀ`.
pub fn forward<T: Real>(g: &FcGeom, x: &[T], w: &[T], b: &[T], y: &mut [T]) {
    g.check(x.len(), w.len(), b.len(), y.len());
    if g.outputs == 0 {
        return;
    }
    for row in y.chunks_mut(g.outputs) {
        row.copy_from_slice(b);
    }
    let (i, o) = (g.inputs as isize, g.outputs as isize);
    // wᵀ (inputs x outputs) is w read with swapped strides.
    T::gemm(
        g.n,
        g.inputs,
        g.outputs,
        T::one(),
        x,
        (i, 1),
        w,
        (1, i),
        T::one(),
        y,
        (o, 1),
    );
}

/// Fast data gradient: `dx = dy · w`.
pub fn backward_data<T: Real>(g: &FcGeom, dy: &[T], w: &[T], dx: &mut [T]) {
    g.check(dx.len(), w.len(), g.outputs, dy.len());
    let (i, o) = (g.inputs as isize, g.outputs as isize);
    T::gemm(
        g.n,
        g.outputs,
        g.inputs,
        T::one(),
        dy,
        (o, 1),
        w,
        (i, 1),
        T::zero(),
        dx,
        (i, 1),
    );
}

/// Fast filter gradient: `dw = dyᵀ · x`, `db = Σₙ dy` (summed over samples in order).
pub fn backward_filter<T: Real>(g: &FcGeom, x: &[T], dy: &[T], dw: &mut [T], db: &mut [T]) {
    g.check(x.len(), dw.len(), db.len(), dy.len());
    let (i, o) = (g.inputs as isize, g.outputs as isize);
    T::gemm(
        g.outputs,
        g.n,
        g.inputs,
        T::one(),
        dy,
        (1, o),
        x,
        (i, 1),
        T::zero(),
        dw,
        (i, 1),
    );
    db.fill(T::zero());
    if g.outputs == 0 {
        return;
    }
    for row in dy.chunks(g.outputs) {
        db.iter_mut().zip(row).for_each(|(b, &d)| *b = *b + d);
    }
}
