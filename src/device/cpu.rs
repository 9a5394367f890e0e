//! The CPU device: the ops' fast CPU paths on host vectors. Also the fallback for small runs.

use super::{Block, Device};
use crate::ops::precision::Precision;
use crate::ops::{
    self, conv::ConvGeom, dropout::DropoutGeom, fc::FcGeom, lrn::LrnGeom, pool::PoolGeom,
    sgd::SgdStep, spatial_norm::SpatialNormGeom,
};
use anyhow::{Result, ensure};

#[derive(Clone, Copy, Debug, Default)]
pub struct CpuDevice;

impl Device for CpuDevice {
    type Buf = Vec<f32>;

    fn describe(&self) -> String {
        format!(
            "cpu ({} threads, {})",
            rayon::current_num_threads(),
            crate::ops::simd::Isa::active()
        )
    }
    fn alloc(&self, len: usize) -> Result<Vec<f32>> {
        Ok(vec![0.0; len])
    }
    fn upload(&self, data: &[f32]) -> Result<Vec<f32>> {
        Ok(data.to_vec())
    }
    /// Into `dst`'s own memory: no allocation (nor its page faults) per upload.
    fn upload_async(&self, data: &[f32], dst: &mut Vec<f32>, _slot: usize) -> Result<()> {
        dst.clear();
        dst.extend_from_slice(data);
        Ok(())
    }
    fn download(&self, buf: &Vec<f32>) -> Result<Vec<f32>> {
        Ok(buf.clone())
    }
    fn len(&self, buf: &Vec<f32>) -> usize {
        buf.len()
    }
    fn copy_2d(
        &self,
        src: &Vec<f32>,
        from: Block,
        dst: &mut Vec<f32>,
        to: Block,
        width: usize,
        rows: usize,
    ) -> Result<()> {
        super::copy_2d_host(src, from, dst, to, width, rows)
    }
    fn add_assign(&self, dst: &mut Vec<f32>, src: &Vec<f32>) -> Result<()> {
        assert_eq!(dst.len(), src.len(), "add_assign: lengths differ");
        dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
        Ok(())
    }
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    fn conv_forward(
        &self,
        g: &ConvGeom,
        prec: Precision,
        x: &Vec<f32>,
        w: &Vec<f32>,
        b: &Vec<f32>,
        y: &mut Vec<f32>,
    ) -> Result<()> {
        ops::conv::forward(g, &prec.round_all(x), &prec.round_all(w), b, y);
        Ok(())
    }
    fn conv_forward_relu(
        &self,
        g: &ConvGeom,
        prec: Precision,
        x: &Vec<f32>,
        w: &Vec<f32>,
        b: &Vec<f32>,
        y: &mut Vec<f32>,
    ) -> Result<()> {
        ops::conv::forward_relu(g, &prec.round_all(x), &prec.round_all(w), b, y);
        Ok(())
    }
    fn conv_backward_data(
        &self,
        g: &ConvGeom,
        prec: Precision,
        dy: &Vec<f32>,
        w: &Vec<f32>,
        dx: &mut Vec<f32>,
    ) -> Result<()> {
        ops::conv::backward_data(g, &prec.round_all(dy), &prec.round_all(w), dx);
        Ok(())
    }
    fn conv_backward_filter(
        &self,
        g: &ConvGeom,
        prec: Precision,
        x: &Vec<f32>,
        dy: &Vec<f32>,
        dw: &mut Vec<f32>,
        db: &mut Vec<f32>,
    ) -> Result<()> {
        ops::conv::backward_filter(g, &prec.round_all(x), &prec.round_all(dy), dw, db);
        if prec != Precision::Fp32 {
            // The bias gradient is a sum, not a product: of the unrounded gradient.
            let ohw = g.out_h() * g.out_w();
            db.fill(0.0);
            for (i, map) in dy.chunks(ohw).enumerate() {
                db[i % g.c_out] += map.iter().sum::<f32>();
            }
        }
        Ok(())
    }
    fn fc_forward(
        &self,
        g: &FcGeom,
        prec: Precision,
        x: &Vec<f32>,
        w: &Vec<f32>,
        b: &Vec<f32>,
        y: &mut Vec<f32>,
    ) -> Result<()> {
        ops::fc::forward(g, &prec.round_all(x), &prec.round_all(w), b, y);
        Ok(())
    }
    fn fc_backward_data(
        &self,
        g: &FcGeom,
        prec: Precision,
        dy: &Vec<f32>,
        w: &Vec<f32>,
        dx: &mut Vec<f32>,
    ) -> Result<()> {
        ops::fc::backward_data(g, &prec.round_all(dy), &prec.round_all(w), dx);
        Ok(())
    }
    fn fc_backward_filter(
        &self,
        g: &FcGeom,
        prec: Precision,
        x: &Vec<f32>,
        dy: &Vec<f32>,
        dw: &mut Vec<f32>,
        db: &mut Vec<f32>,
    ) -> Result<()> {
        ops::fc::backward_filter(g, &prec.round_all(x), &prec.round_all(dy), dw, db);
        if prec != Precision::Fp32 {
            // The bias gradient is a sum, not a product: of the unrounded gradient.
            db.fill(0.0);
            for row in dy.chunks(g.outputs.max(1)) {
                db.iter_mut().zip(row).for_each(|(b, &d)| *b += d);
            }
        }
        Ok(())
    }
    fn relu_forward(&self, x: &Vec<f32>, y: &mut Vec<f32>) -> Result<()> {
        ops::activation::relu_forward(x, y);
        Ok(())
    }
    fn relu_backward(&self, y: &Vec<f32>, dy: &Vec<f32>, dx: &mut Vec<f32>) -> Result<()> {
        ops::activation::relu_backward(y, dy, dx);
        Ok(())
    }
    fn tanh_forward(&self, x: &Vec<f32>, y: &mut Vec<f32>) -> Result<()> {
        ops::activation::tanh_forward(x, y);
        Ok(())
    }
    fn tanh_backward(&self, y: &Vec<f32>, dy: &Vec<f32>, dx: &mut Vec<f32>) -> Result<()> {
        ops::activation::tanh_backward(y, dy, dx);
        Ok(())
    }
    fn lrn_forward(&self, g: &LrnGeom, x: &Vec<f32>, y: &mut Vec<f32>) -> Result<()> {
        ops::lrn::forward(g, x, y);
        Ok(())
    }
    fn lrn_backward(
        &self,
        g: &LrnGeom,
        x: &Vec<f32>,
        y: &Vec<f32>,
        dy: &Vec<f32>,
        dx: &mut Vec<f32>,
    ) -> Result<()> {
        ops::lrn::backward(g, x, y, dy, dx);
        Ok(())
    }
    fn spatial_norm_forward(
        &self,
        g: &SpatialNormGeom,
        x: &Vec<f32>,
        y: &mut Vec<f32>,
    ) -> Result<()> {
        ops::spatial_norm::forward(g, x, y);
        Ok(())
    }
    fn spatial_norm_backward(
        &self,
        g: &SpatialNormGeom,
        x: &Vec<f32>,
        y: &Vec<f32>,
        dy: &Vec<f32>,
        dx: &mut Vec<f32>,
    ) -> Result<()> {
        ops::spatial_norm::backward(g, x, y, dy, dx);
        Ok(())
    }
    fn max_pool_forward(
        &self,
        g: &PoolGeom,
        x: &Vec<f32>,
        y: &mut Vec<f32>,
        argmax: &mut Vec<f32>,
    ) -> Result<()> {
        ops::pool::forward(g, x, y, argmax);
        Ok(())
    }
    fn max_pool_backward(
        &self,
        g: &PoolGeom,
        argmax: &Vec<f32>,
        dy: &Vec<f32>,
        dx: &mut Vec<f32>,
    ) -> Result<()> {
        ops::pool::backward(g, argmax, dy, dx);
        Ok(())
    }
    fn dropout_forward_train(&self, g: &DropoutGeom, x: &Vec<f32>, y: &mut Vec<f32>) -> Result<()> {
        ops::dropout::forward_train(g, x, y);
        Ok(())
    }
    fn dropout_backward(&self, g: &DropoutGeom, dy: &Vec<f32>, dx: &mut Vec<f32>) -> Result<()> {
        ops::dropout::backward(g, dy, dx);
        Ok(())
    }
    fn dropout_forward_test(&self, p: f32, x: &Vec<f32>, y: &mut Vec<f32>) -> Result<()> {
        ops::dropout::forward_test(p, x, y);
        Ok(())
    }
    fn softmax_xent(
        &self,
        n: usize,
        classes: usize,
        logits: &Vec<f32>,
        labels: &Vec<f32>,
        probs: &mut Vec<f32>,
        dlogits: &mut Vec<f32>,
        losses: &mut Vec<f32>,
    ) -> Result<()> {
        anyhow::ensure!(
            logits.len() == n * classes && probs.len() == n * classes,
            "softmax_xent: logits and probs must hold {n}x{classes} values"
        );
        anyhow::ensure!(
            dlogits.len() == n * classes && labels.len() == n && losses.len() == n,
            "softmax_xent: dlogits must hold {n}x{classes} values, labels and losses {n}"
        );
        let labels = super::labels_from_floats(labels, classes)?;
        ops::softmax::xent_rows_naive(n, classes, logits, &labels, probs, dlogits, losses);
        Ok(())
    }
    fn sgd_update(
        &self,
        step: &SgdStep,
        w: &mut Vec<f32>,
        v: &mut Vec<f32>,
        grad: &Vec<f32>,
    ) -> Result<()> {
        ops::sgd::update(step, w, v, grad);
        Ok(())
    }
    fn fuses_fc_sgd(&self, g: &FcGeom, prec: Precision) -> bool {
        // In fp32 only: the other precisions round x and dy first, and take the bias gradient
        // from the unrounded dy (see `fc_backward_filter`).
        prec == Precision::Fp32 && ops::fc::sgd_fuses::<f32>(g)
    }
    fn fc_backward_filter_sgd(
        &self,
        g: &FcGeom,
        prec: Precision,
        x: &Vec<f32>,
        dy: &Vec<f32>,
        step: &SgdStep,
        w: &mut Vec<f32>,
        v: &mut Vec<f32>,
        db: &mut Vec<f32>,
        dx: Option<&mut Vec<f32>>,
    ) -> Result<()> {
        ensure!(
            self.fuses_fc_sgd(g, prec),
            "fc_backward_filter_sgd at {g:?}, {prec:?}"
        );
        ops::fc::backward_filter_sgd(g, x, dy, step, w, v, db, dx.map(|d| &mut d[..]));
        Ok(())
    }
}
