//! Faults planted on purpose: `ALEXNET_PLANTED_FAULT=<name>` removes one ordering or check that
//! the GPU path needs, so that a test can show the check meant to catch its absence (the
//! simulated platform's stream sanitizer) does catch it. Never set in a real run; unset, each
//! point costs one comparison.
//!
//! The faults, and where they are planted:
//! - `exchange-no-wait`: a cross-tower copy on the copy stream does not wait for its source's
//!   writes (`cuda::launcher`, rule 4).
//! - `copy-source-unjoined`: the source's stream never waits for such a copy, so a later write
//!   or free of the source can overtake it (`cuda::launcher`, rule 4).
//! - `upload-rewrite`: `upload_async` rewrites a pinned staging buffer without waiting for its
//!   previous copy (`cuda::launcher`, rule 5).
//! - `upload-free`: a pinned staging buffer is freed without waiting for its copy.
//! - `slot-reuse`: `upload_async` does not wait for its slot's free event.
//! - `peer-kernel`: at an exchange, tower 1's kernel reads tower 0's gathered input instead of
//!   its own (`parallel`): on two GPUs without peer access, a kernel touching a peer's memory.
//! - `nccl-no-wait`: the NCCL stream does not wait for backward before an all-reduce
//!   (`cuda::nccl`).
//! - `nccl-no-abort`: communicators are never aborted (`cuda::nccl`): after a peer dies, the
//!   error path then waits forever for its all-reduce (the simulated platform reports a hang).

use std::sync::OnceLock;

/// Whether fault `name` is planted in this process.
pub fn planted(name: &str) -> bool {
    static FAULT: OnceLock<Option<String>> = OnceLock::new();
    FAULT
        .get_or_init(|| std::env::var("ALEXNET_PLANTED_FAULT").ok())
        .as_deref()
        == Some(name)
}
