//! Sums of split partial results, with an optional broadcast bias (`cuda/reduce.cu`): the
//! second pass of the convolutions' and fc layers' split reductions.

use super::{KernelDevice, arg, elementwise, i32_of, kernel};
use crate::device::launch::Launcher;
use anyhow::Result;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(super) struct ReduceParams {
    pub(super) len: i32,
    pub(super) splits: i32,
    pub(super) bias_div: i32,
    pub(super) bias_mod: i32,
}

impl<L: Launcher> KernelDevice<L> {
    /// `out = Σ_s parts[s]` (+ bias[(i / bias_div) % bias_mod]) over `len` elements.
    pub(super) fn reduce_splits(
        &self,
        len: usize,
        splits: usize,
        parts: u64,
        bias: u64,
        bias_div: usize,
        bias_mod: usize,
        out: u64,
    ) -> Result<()> {
        let p = ReduceParams {
            len: i32_of(len, "reduction length")?,
            splits: splits as i32,
            bias_div: bias_div as i32,
            bias_mod: bias_mod as i32,
        };
        self.launch(
            kernel("reduce", "reduce_splits_f32"),
            elementwise(len)?,
            &[arg(&p), arg(&parts), arg(&bias), arg(&out)],
        )
    }
}
