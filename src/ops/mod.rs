//! One module per op. Each holds the op's geometry, its naive reference (nested loops, written
//! to be obviously right, generic over `f32`/`f64` so gradients can be checked in `f64`) and its
//! fast CPU path, side by side. The CUDA kernel of the same op lives in `cuda/<op>.cu` and is
//! launched from `crate::device::kernels`.
//!
//! Conventions: every op writes (never accumulates into) its outputs; backward passes take what
//! the forward pass produced rather than caching hidden state, so the GPU kernels can do the same.

pub mod activation;
pub mod conv;
pub mod conv_direct;
pub mod conv_filter;
pub mod conv_geom;
pub mod conv_strided;
pub mod dropout;
pub mod fc;
mod fc_stream;
pub mod lrn;
pub mod philox;
pub mod pool;
pub mod precision;
pub mod sgd;
pub mod simd;
pub mod softmax;
pub mod spatial_norm;
