//! Rectified-linear and tanh units (`cuda/activation.cu`), elementwise.

use super::{KernelDevice, check_len};
use crate::device::Device;
use crate::device::launch::Launcher;
use anyhow::{Context, Result};

impl<L: Launcher> KernelDevice<L> {
    pub(super) fn launch_relu_forward(&self, x: &L::Buf, y: &mut L::Buf) -> Result<()> {
        self.activation_forward("relu_forward_f32", x, y)
    }

    pub(super) fn launch_relu_backward(
        &self,
        y: &L::Buf,
        dy: &L::Buf,
        dx: &mut L::Buf,
    ) -> Result<()> {
        self.activation_backward("relu_backward_f32", y, dy, dx)
    }

    pub(super) fn launch_tanh_forward(&self, x: &L::Buf, y: &mut L::Buf) -> Result<()> {
        self.activation_forward("tanh_forward_f32", x, y)
    }

    pub(super) fn launch_tanh_backward(
        &self,
        y: &L::Buf,
        dy: &L::Buf,
        dx: &mut L::Buf,
    ) -> Result<()> {
        self.activation_backward("tanh_backward_f32", y, dy, dx)
    }

    /// `kernel` (`<unit>_forward_f32`): `y = unit(x)`, elementwise.
    fn activation_forward(&self, kernel: &'static str, x: &L::Buf, y: &mut L::Buf) -> Result<()> {
        let (op, n) = (kernel.trim_end_matches("_f32"), self.len(x));
        check_len(format_args!("{op} y"), self.len(y), n)?;
        self.elementwise_op("activation", kernel, &[self.ptr(x), self.ptr(y)], n)
            .with_context(|| format!("{op} over {n} elements"))
    }

    /// `kernel` (`<unit>_backward_f32`): `dx` from the unit's output `y` and its gradient `dy`.
    fn activation_backward(
        &self,
        kernel: &'static str,
        y: &L::Buf,
        dy: &L::Buf,
        dx: &mut L::Buf,
    ) -> Result<()> {
        let (op, n) = (kernel.trim_end_matches("_f32"), self.len(y));
        check_len(format_args!("{op} dy"), self.len(dy), n)?;
        check_len(format_args!("{op} dx"), self.len(dx), n)?;
        let args = [self.ptr(y), self.ptr(dy), self.ptr(dx)];
        self.elementwise_op("activation", kernel, &args, n)
            .with_context(|| format!("{op} over {n} elements"))
    }
}
