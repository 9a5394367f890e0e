//! Elementwise kernels over buffers of equal length (`cuda/elementwise.cu`): fill, add.

use super::{KernelDevice, arg, check_len, elementwise, i32_of, kernel};
use crate::device::Device;
use crate::device::launch::Launcher;
use anyhow::{Context, Result};

impl<L: Launcher> KernelDevice<L> {
    /// An elementwise kernel `name(n, a, b, ..)` over buffers of equal length.
    pub(super) fn elementwise_op(
        &self,
        module: &'static str,
        name: &'static str,
        bufs: &[u64],
        n: usize,
    ) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let n32 = i32_of(n, "length")?;
        let mut args = vec![arg(&n32)];
        args.extend(bufs.iter().map(arg));
        self.launch(kernel(module, name), elementwise(n)?, &args)
    }

    /// Fills `buf` with `value`.
    pub fn fill(&self, buf: &mut L::Buf, value: f32) -> Result<()> {
        let n = self.launcher.len(buf);
        if n == 0 {
            return Ok(());
        }
        let (n32, dst) = (i32_of(n, "length")?, self.ptr(buf));
        self.launch(
            kernel("elementwise", "fill_f32"),
            elementwise(n)?,
            &[arg(&n32), arg(&value), arg(&dst)],
        )
        .context("fill")
    }

    pub(super) fn launch_add_assign(&self, dst: &mut L::Buf, src: &L::Buf) -> Result<()> {
        let n = self.len(dst);
        check_len("add_assign source", self.len(src), n)?;
        self.elementwise_op(
            "elementwise",
            "add_assign_f32",
            &[self.ptr(dst), self.ptr(src)],
            n,
        )
        .with_context(|| format!("add_assign over {n} elements"))
    }
}
