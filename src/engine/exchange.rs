//! Moving activations and their gradients between towers at an exchange (a layer that reads
//! every tower's previous output): forward, each tower gathers the others' outputs beside its
//! own; backward, each owner takes its block of every tower's gathered gradient home and adds
//! them up.

use super::LayerState;
use crate::device::{Block, Device};
use crate::model::LayerPlan;
use anyhow::Result;

/// Every tower's previous output (`prev_out`, `prev_len` floats per sample each), side by side,
/// into each active tower's `gathered` input. The copies between towers go on copy streams, as
/// backward's do; every tower joins them before the layer computes, since its input needs them
/// all. (So forward gains no overlap here: that would take splitting the layer's sum into own
/// and other halves.)
pub(super) fn gather<D: Device>(
    devices: &[D],
    prev_out: &[D::Buf],
    gathered: &mut [D::Buf],
    prev_len: usize,
    lp: &LayerPlan,
    n: usize,
) -> Result<()> {
    for (t, into) in gathered.iter_mut().enumerate() {
        for (s, src) in prev_out.iter().enumerate() {
            let from = Block {
                offset: 0,
                pitch: prev_len,
            };
            let to = Block {
                offset: s * prev_len,
                pitch: lp.input.len(),
            };
            devices[t].copy_2d_async(src, from, into, to, prev_len, n)?;
        }
    }
    for dev in devices {
        dev.join_copies()?;
    }
    Ok(())
}

/// Backward at an exchange: every tower's gradient of its gathered input holds a block for each
/// owner of the previous layer (block `s` for tower `s`'s output), which goes home and is added
/// there: the owner's own block first, then the others' in tower order.
pub(super) struct Homing {
    /// Floats per sample of one tower's previous output, and of the gathered input.
    pub(super) prev_len: usize,
    pub(super) input_len: usize,
    pub(super) towers: usize,
    pub(super) n: usize,
}

impl Homing {
    /// Owner `s`'s block of a gathered gradient.
    fn from(&self, s: usize) -> Block {
        Block {
            offset: s * self.prev_len,
            pitch: self.input_len,
        }
    }

    fn whole(&self) -> Block {
        Block {
            offset: 0,
            pitch: self.prev_len,
        }
    }

    /// The towers whose blocks owner `s` adds up, in order: its own first.
    fn sources(&self, s: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.towers).collect();
        if let Some(own) = order.iter().position(|&t| t == s) {
            order.remove(own);
            order.insert(0, s);
        }
        order
    }

    /// Starts the first two copies to each owner, asynchronously (the exchange), so they run
    /// beside the filter gradients queued next.
    pub(super) fn send<D: Device>(
        &self,
        devices: &[D],
        st: &mut LayerState<D::Buf>,
        prev_grad: &mut [D::Buf],
    ) -> Result<()> {
        let (n, len) = (self.n, self.prev_len);
        for (s, owner_grad) in prev_grad.iter_mut().enumerate() {
            let dev = &devices[s];
            let order = self.sources(s);
            let own = &st.grad_gathered[order[0]];
            dev.copy_2d_async(own, self.from(s), owner_grad, self.whole(), len, n)?;
            if let Some(&t) = order.get(1) {
                let other = &st.grad_gathered[t];
                let landing = &mut st.returned[s];
                dev.copy_2d_async(other, self.from(s), landing, self.whole(), len, n)?;
            }
        }
        Ok(())
    }

    /// Waits for `send`'s copies and adds the blocks up on each owner.
    pub(super) fn sum<D: Device>(
        &self,
        devices: &[D],
        st: &mut LayerState<D::Buf>,
        prev_grad: &mut [D::Buf],
    ) -> Result<()> {
        let (n, len) = (self.n, self.prev_len);
        for dev in devices {
            dev.join_copies()?;
        }
        for (s, owner_grad) in prev_grad.iter_mut().enumerate() {
            let dev = &devices[s];
            for (i, &t) in self.sources(s).iter().enumerate().skip(1) {
                if i > 1 {
                    // Past two towers, the rest one by one through the same landing buffer.
                    let other = &st.grad_gathered[t];
                    dev.copy_2d(
                        other,
                        self.from(s),
                        &mut st.returned[s],
                        self.whole(),
                        len,
                        n,
                    )?;
                }
                dev.add_assign(owner_grad, &st.returned[s])?;
            }
        }
        Ok(())
    }
}
