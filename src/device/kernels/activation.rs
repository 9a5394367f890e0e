//! Rectified-linear and tanh units (`cuda/activation.cu`), elementwise.

use super::{KernelDevice, check_len};
use crate::device::Device;
use crate::device::launch::Launcher;
use anyhow::{Context, Result};

impl<L: Launcher> KernelDevice<L> {
    pub(super) fn launch_relu_forward(&self, x: &L::Buf, y: &mut L::Buf) -> Result<()> {
        let n = self.len(x);
        check_len("relu_forward y", self.len(y), n)?;
        self.elementwise_op(
            "activation",
            "relu_forward_f32",
            &[self.ptr(x), self.ptr(y)],
            n,
        )
        .with_context(|| format!("relu_forward over {n} elements"))
    }

    pub(super) fn launch_relu_backward(
        &self,
        y: &L::Buf,
        dy: &L::Buf,
        dx: &mut L::Buf,
    ) -> Result<()> {
        let n = self.len(y);
        check_len("relu_backward dy", self.len(dy), n)?;
        check_len("relu_backward dx", self.len(dx), n)?;
        self.elementwise_op(
            "activation",
            "relu_backward_f32",
            &[self.ptr(y), self.ptr(dy), self.ptr(dx)],
            n,
        )
        .with_context(|| format!("relu_backward over {n} elements"))
    }

    pub(super) fn launch_tanh_forward(&self, x: &L::Buf, y: &mut L::Buf) -> Result<()> {
        let n = self.len(x);
        check_len("tanh_forward y", self.len(y), n)?;
        self.elementwise_op(
            "activation",
            "tanh_forward_f32",
            &[self.ptr(x), self.ptr(y)],
            n,
        )
        .with_context(|| format!("tanh_forward over {n} elements"))
    }

    pub(super) fn launch_tanh_backward(
        &self,
        y: &L::Buf,
        dy: &L::Buf,
        dx: &mut L::Buf,
    ) -> Result<()> {
        let n = self.len(y);
        check_len("tanh_backward dy", self.len(dy), n)?;
        check_len("tanh_backward dx", self.len(dx), n)?;
        self.elementwise_op(
            "activation",
            "tanh_backward_f32",
            &[self.ptr(y), self.ptr(dy), self.ptr(dx)],
            n,
        )
        .with_context(|| format!("tanh_backward over {n} elements"))
    }
}
