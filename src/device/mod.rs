//! The device abstraction the two-tower network is written against. A tower lives on one
//! `Device`; the network code never knows whether that is the CPU reference (`cpu`), the real
//! CUDA kernels run on the CPU by the host executor (`emu`), or a GPU (`cuda`).
//!
//! Every op writes its output buffer whole; buffers hold `f32` in the crate's layout
//! (`crate::tensor`).

pub mod cpu;
pub mod kernels;
pub mod launch;

use crate::ops::precision::Precision;
use crate::ops::{
    conv::ConvGeom, dropout::DropoutGeom, fc::FcGeom, lrn::LrnGeom, pool::PoolGeom, sgd::SgdStep,
    spatial_norm::SpatialNormGeom,
};
use anyhow::Result;

/// A strided block of a buffer: `rows` runs of `width` elements, `pitch` apart, from `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    pub offset: usize,
    pub pitch: usize,
}

/// `copy_2d` between host slices (the CPU device and the host executor): `rows` runs of `width`
/// elements from `from` in `src` to `to` in `dst`; a block that does not fit is an error.
pub fn copy_2d_host(
    src: &[f32],
    from: Block,
    dst: &mut [f32],
    to: Block,
    width: usize,
    rows: usize,
) -> Result<()> {
    check_2d_blocks(src.len(), from, dst.len(), to, width, rows)?;
    if width == 0 {
        return Ok(());
    }
    for r in 0..rows {
        let (s, d) = (from.offset + r * from.pitch, to.offset + r * to.pitch);
        dst[d..d + width].copy_from_slice(&src[s..s + width]);
    }
    Ok(())
}

/// Checks that `rows` runs of `width` elements at `from` fit a source of `src_len` elements and
/// at `to` a destination of `dst_len` (every `copy_2d` implementation calls this first).
pub fn check_2d_blocks(
    src_len: usize,
    from: Block,
    dst_len: usize,
    to: Block,
    width: usize,
    rows: usize,
) -> Result<()> {
    if rows == 0 || width == 0 {
        return Ok(());
    }
    for (what, b, len) in [("source", from, src_len), ("destination", to, dst_len)] {
        let end = (rows - 1)
            .checked_mul(b.pitch)
            .and_then(|x| x.checked_add(b.offset))
            .and_then(|x| x.checked_add(width));
        anyhow::ensure!(
            end.is_some_and(|end| end <= len),
            "copy_2d: {what} block (offset {}, pitch {}, {rows} rows of {width}) exceeds its {len} elements",
            b.offset,
            b.pitch
        );
    }
    Ok(())
}

/// Class labels as a device holds them, for `Device::softmax_xent`: one exact `f32` per label
/// (buffers hold `f32` only), so there must be fewer than 2^24 classes; every label must be one.
pub fn labels_as_floats(labels: &[u32], classes: usize) -> Result<Vec<f32>> {
    anyhow::ensure!(
        classes < 1 << 24,
        "{classes} classes: labels travel as exact floats below 2^24"
    );
    if let Some(&bad) = labels.iter().find(|&&l| l as usize >= classes) {
        anyhow::bail!("label {bad} is out of range for {classes} classes");
    }
    Ok(labels.iter().map(|&l| l as f32).collect())
}

/// The inverse of `labels_as_floats`, checking that each value is a class.
pub fn labels_from_floats(labels: &[f32], classes: usize) -> Result<Vec<u32>> {
    labels
        .iter()
        .map(|&l| {
            anyhow::ensure!(
                l >= 0.0 && l.fract() == 0.0 && (l as usize) < classes,
                "label {l} is not one of {classes} classes"
            );
            Ok(l as u32)
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
pub trait Device {
    type Buf;

    /// A one-line description for logs (`cpu`, `emu`, `cuda:0 NVIDIA H200`, ...).
    fn describe(&self) -> String;

    /// A zero-filled buffer of `len` elements.
    fn alloc(&self, len: usize) -> Result<Self::Buf>;
    fn upload(&self, data: &[f32]) -> Result<Self::Buf>;
    fn download(&self, buf: &Self::Buf) -> Result<Vec<f32>>;
    fn len(&self, buf: &Self::Buf) -> usize;

    /// Copies `rows` runs of `width` elements from `src` to `dst` (this device's buffer). `src`
    /// may live on another device of the same kind: this is the towers' exchange.
    fn copy_2d(
        &self,
        src: &Self::Buf,
        from: Block,
        dst: &mut Self::Buf,
        to: Block,
        width: usize,
        rows: usize,
    ) -> Result<()>;

    /// `copy_2d` that may run beside this device's later work (on a GPU, on a copy stream, so a
    /// tower's exchange overlaps its compute): `dst` holds the copy, and `src` may be written
    /// again, only after `join_copies` on both devices.
    fn copy_2d_async(
        &self,
        src: &Self::Buf,
        from: Block,
        dst: &mut Self::Buf,
        to: Block,
        width: usize,
        rows: usize,
    ) -> Result<()> {
        self.copy_2d(src, from, dst, to, width, rows)
    }

    /// Orders this device's later work after every `copy_2d_async` into or out of its buffers,
    /// and every `upload_async` into them.
    fn join_copies(&self) -> Result<()> {
        Ok(())
    }

    /// Says that the work queued so far is the last to use input slot `slot` (0 or 1): a later
    /// `upload_async` into that slot waits for that work, and for nothing queued after it.
    fn input_slot_free(&self, slot: usize) -> Result<()> {
        let _ = slot;
        Ok(())
    }

    /// Puts `data` into `dst`, the buffer of input slot `slot`, beside this device's queued work
    /// (on a GPU: staged in pinned host memory and copied on the copy stream, after the work that
    /// `input_slot_free(slot)` marked): `dst` holds it once `join_copies` has ordered later work
    /// after it; `data` may be reused as soon as this returns. Elsewhere it is a plain upload.
    fn upload_async(&self, data: &[f32], dst: &mut Self::Buf, slot: usize) -> Result<()> {
        let _ = slot;
        *dst = self.upload(data)?;
        Ok(())
    }

    /// `dst += src`, elementwise over whole buffers of equal length.
    fn add_assign(&self, dst: &mut Self::Buf, src: &Self::Buf) -> Result<()>;

    /// Waits for everything queued on this device.
    fn synchronize(&self) -> Result<()>;

    /// Bytes held at the peak on the memory this device draws from, where that is counted (a
    /// GPU, shared by the towers placed on it).
    fn memory_peak(&self) -> Option<usize> {
        None
    }

    fn conv_forward(
        &self,
        g: &ConvGeom,
        prec: Precision,
        x: &Self::Buf,
        w: &Self::Buf,
        b: &Self::Buf,
        y: &mut Self::Buf,
    ) -> Result<()>;
    /// `conv_forward` followed by a ReLU of its output, in one pass over it (the plan fuses a
    /// convolution and the ReLU after it).
    fn conv_forward_relu(
        &self,
        g: &ConvGeom,
        prec: Precision,
        x: &Self::Buf,
        w: &Self::Buf,
        b: &Self::Buf,
        y: &mut Self::Buf,
    ) -> Result<()>;
    fn conv_backward_data(
        &self,
        g: &ConvGeom,
        prec: Precision,
        dy: &Self::Buf,
        w: &Self::Buf,
        dx: &mut Self::Buf,
    ) -> Result<()>;
    fn conv_backward_filter(
        &self,
        g: &ConvGeom,
        prec: Precision,
        x: &Self::Buf,
        dy: &Self::Buf,
        dw: &mut Self::Buf,
        db: &mut Self::Buf,
    ) -> Result<()>;

    fn fc_forward(
        &self,
        g: &FcGeom,
        prec: Precision,
        x: &Self::Buf,
        w: &Self::Buf,
        b: &Self::Buf,
        y: &mut Self::Buf,
    ) -> Result<()>;
    fn fc_backward_data(
        &self,
        g: &FcGeom,
        prec: Precision,
        dy: &Self::Buf,
        w: &Self::Buf,
        dx: &mut Self::Buf,
    ) -> Result<()>;
    fn fc_backward_filter(
        &self,
        g: &FcGeom,
        prec: Precision,
        x: &Self::Buf,
        dy: &Self::Buf,
        dw: &mut Self::Buf,
        db: &mut Self::Buf,
    ) -> Result<()>;

    fn relu_forward(&self, x: &Self::Buf, y: &mut Self::Buf) -> Result<()>;
    fn relu_backward(&self, y: &Self::Buf, dy: &Self::Buf, dx: &mut Self::Buf) -> Result<()>;
    fn tanh_forward(&self, x: &Self::Buf, y: &mut Self::Buf) -> Result<()>;
    fn tanh_backward(&self, y: &Self::Buf, dy: &Self::Buf, dx: &mut Self::Buf) -> Result<()>;

    fn lrn_forward(&self, g: &LrnGeom, x: &Self::Buf, y: &mut Self::Buf) -> Result<()>;
    fn lrn_backward(
        &self,
        g: &LrnGeom,
        x: &Self::Buf,
        y: &Self::Buf,
        dy: &Self::Buf,
        dx: &mut Self::Buf,
    ) -> Result<()>;
    fn spatial_norm_forward(
        &self,
        g: &SpatialNormGeom,
        x: &Self::Buf,
        y: &mut Self::Buf,
    ) -> Result<()>;
    fn spatial_norm_backward(
        &self,
        g: &SpatialNormGeom,
        x: &Self::Buf,
        y: &Self::Buf,
        dy: &Self::Buf,
        dx: &mut Self::Buf,
    ) -> Result<()>;

    /// `y` and, for [`Device::max_pool_backward`], each output's window position of its first
    /// maximum in `argmax` (`ky·size + kx`, as f32; `y`'s length).
    fn max_pool_forward(
        &self,
        g: &PoolGeom,
        x: &Self::Buf,
        y: &mut Self::Buf,
        argmax: &mut Self::Buf,
    ) -> Result<()>;
    /// Routes each window's gradient to the maximum the forward pass recorded in `argmax`.
    fn max_pool_backward(
        &self,
        g: &PoolGeom,
        argmax: &Self::Buf,
        dy: &Self::Buf,
        dx: &mut Self::Buf,
    ) -> Result<()>;

    fn dropout_forward_train(
        &self,
        g: &DropoutGeom,
        x: &Self::Buf,
        y: &mut Self::Buf,
    ) -> Result<()>;
    fn dropout_backward(&self, g: &DropoutGeom, dy: &Self::Buf, dx: &mut Self::Buf) -> Result<()>;
    fn dropout_forward_test(&self, p: f32, x: &Self::Buf, y: &mut Self::Buf) -> Result<()>;

    /// Softmax of `logits` (`[n, classes]`) into `probs`, the gradient of the mean cross-entropy
    /// into `dlogits`, and each row's loss into `losses` (`[n]`). `labels` (`[n]`, see
    /// `labels_as_floats`) stays on the device, and nothing comes back to the host, so a training
    /// step waits for its device only once, at its end. A label outside the classes gives an
    /// error or, where it is only seen on the device, a NaN loss for its row.
    fn softmax_xent(
        &self,
        n: usize,
        classes: usize,
        logits: &Self::Buf,
        labels: &Self::Buf,
        probs: &mut Self::Buf,
        dlogits: &mut Self::Buf,
        losses: &mut Self::Buf,
    ) -> Result<()>;

    fn sgd_update(
        &self,
        step: &SgdStep,
        w: &mut Self::Buf,
        v: &mut Self::Buf,
        grad: &Self::Buf,
    ) -> Result<()>;

    /// Whether this device has `fc_backward_filter_sgd` for `g` and `prec` (decided once per
    /// batch size, when the network allocates its buffers).
    fn fuses_fc_sgd(&self, _g: &FcGeom, _prec: Precision) -> bool {
        false
    }

    /// `fc_backward_filter` and then `sgd_update` of the weights with that gradient, in one
    /// pass, and with them `fc_backward_data` (from the weights before their step) where `dx`
    /// is given: `w`, `v`, `db` and `dx` end as those calls leave them, and the weights'
    /// gradient is not kept. Only where `fuses_fc_sgd` says so.
    #[allow(clippy::too_many_arguments)]
    fn fc_backward_filter_sgd(
        &self,
        g: &FcGeom,
        prec: Precision,
        _x: &Self::Buf,
        _dy: &Self::Buf,
        _step: &SgdStep,
        _w: &mut Self::Buf,
        _v: &mut Self::Buf,
        _db: &mut Self::Buf,
        _dx: Option<&mut Self::Buf>,
    ) -> Result<()> {
        anyhow::bail!(
            "this device does not fuse the fc filter gradient and update ({g:?}, {prec:?})"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_travel_as_exact_floats_and_bad_ones_are_errors() {
        let floats = labels_as_floats(&[0, 9, 3], 10).unwrap();
        assert_eq!(floats, [0.0, 9.0, 3.0]);
        assert_eq!(labels_from_floats(&floats, 10).unwrap(), [0, 9, 3]);
        let e = labels_as_floats(&[0, 10], 10).unwrap_err();
        assert!(format!("{e}").contains("label 10 is out of range for 10 classes"));
        assert!(labels_as_floats(&[0], 1 << 24).is_err());
        for bad in [10.0, -1.0, 2.5, f32::NAN] {
            let e = labels_from_floats(&[bad], 10).unwrap_err();
            assert!(
                format!("{e}").contains("is not one of 10 classes"),
                "{bad}: {e}"
            );
        }
    }
}
