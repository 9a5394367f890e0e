//! cuBLAS for the fully connected layers: they are plain GEMMs (fc6 alone is 4096 x 9216 per
//! image), where the vendor's SGEMM is the stronger kernel. One handle per launcher, bound to the
//! launcher's stream, so its work is ordered with the tower's kernels like any launch, and each
//! stream having its own handle (and workspace) keeps results bit-reproducible run to run.
//!
//! cuBLAS is loaded at run time like the driver. Where it is missing, or where
//! `ALEXNET_FC_GEMM=kernels` asks for it, the fc layers run on the engine's own GEMM kernels
//! (`cuda/fc.cu`), as they do on the host executor.

use super::gpu::Gpu;
use crate::device::launch::Sgemm;
use crate::ops::precision::Precision;
use anyhow::{Result, anyhow, ensure};
use cudarc::cublas::{result, sys};
use cudarc::driver::CudaStream;
use std::sync::Arc;

/// Why the fc layers of a launcher run on our kernels instead of cuBLAS, or `None` to use it.
pub fn why_not_cublas() -> Option<&'static str> {
    if std::env::var("ALEXNET_FC_GEMM").is_ok_and(|v| v == "kernels") {
        return Some("ALEXNET_FC_GEMM=kernels");
    }
    // SAFETY: only tries to open the library.
    if !unsafe { sys::is_culib_present() } {
        return Some("libcublas not found; put its folder on LD_LIBRARY_PATH");
    }
    None
}

/// A cuBLAS handle on one stream.
pub struct Blas {
    handle: sys::cublasHandle_t,
    gpu: Arc<Gpu>,
}

// SAFETY: a handle may be used from any thread with its context current, which every call here
// makes sure of; calls on one launcher are not concurrent (`KernelDevice` is used by one thread).
unsafe impl Send for Blas {}
unsafe impl Sync for Blas {}

impl Blas {
    /// A handle whose work goes to `stream` (on `gpu`), computing in plain fp32 (no TF32).
    pub fn new(gpu: &Arc<Gpu>, stream: &CudaStream) -> Result<Blas> {
        gpu.bind()?;
        let what = |e: result::CublasError| anyhow!("cuda:{}: cuBLAS: {e}", gpu.ordinal());
        let handle = result::create_handle().map_err(what)?;
        let blas = Blas {
            handle,
            gpu: gpu.clone(),
        };
        // SAFETY: a live handle and stream of the current context.
        unsafe {
            result::set_stream(handle, stream.cu_stream() as _).map_err(what)?;
            sys::cublasSetMathMode(handle, sys::cublasMath_t::CUBLAS_DEFAULT_MATH)
                .result()
                .map_err(what)?;
        }
        Ok(blas)
    }

    /// `C = op(A)·op(B)`, column-major as BLAS defines it, on the handle's stream.
    pub fn sgemm(&self, g: &Sgemm) -> Result<()> {
        let int = |v: usize, what: &str| -> Result<i32> {
            i32::try_from(v).map_err(|_| anyhow!("cuBLAS sgemm: {what} = {v} exceeds i32"))
        };
        let (m, n, k) = (int(g.m, "m")?, int(g.n, "n")?, int(g.k, "k")?);
        let (lda, ldb, ldc) = (int(g.lda, "lda")?, int(g.ldb, "ldb")?, int(g.ldc, "ldc")?);
        ensure!(
            g.ldc >= g.m.max(1),
            "cuBLAS sgemm: ldc {} below m {}",
            g.ldc,
            g.m
        );
        let op = |t: bool| {
            if t {
                sys::cublasOperation_t::CUBLAS_OP_T
            } else {
                sys::cublasOperation_t::CUBLAS_OP_N
            }
        };
        let (alpha, beta) = (1.0f32, 0.0f32);
        self.gpu.bind()?;
        if g.precision != Precision::Fp32 {
            // fp32 matrices, products on the tensor cores: cuBLAS converts the operands to TF32
            // or bf16 itself and sums in fp32.
            let compute = match g.precision {
                Precision::Tf32 => sys::cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32,
                _ => sys::cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_16BF,
            };
            let f32t = sys::cudaDataType_t::CUDA_R_32F;
            // SAFETY: as for sgemm below; alpha and beta are f32 as the compute type requires.
            return unsafe {
                result::gemm_ex(
                    self.handle,
                    op(g.trans_a),
                    op(g.trans_b),
                    m,
                    n,
                    k,
                    &alpha as *const f32 as *const _,
                    g.a as *const _,
                    f32t,
                    lda,
                    g.b as *const _,
                    f32t,
                    ldb,
                    &beta as *const f32 as *const _,
                    g.c as *mut _,
                    f32t,
                    ldc,
                    compute,
                    sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                )
            }
            .map_err(|e| anyhow!("cuda:{}: cuBLAS gemm_ex {g:?}: {e}", self.gpu.ordinal()));
        }
        // SAFETY: by the `Launcher::vendor_sgemm` contract the addresses lie in live buffers of
        // this launcher holding the matrices the sizes and leading dimensions describe; alpha
        // and beta are read during the call (host pointer mode, cuBLAS's default).
        unsafe {
            result::sgemm(
                self.handle,
                op(g.trans_a),
                op(g.trans_b),
                m,
                n,
                k,
                &alpha,
                g.a as *const f32,
                lda,
                g.b as *const f32,
                ldb,
                &beta,
                g.c as *mut f32,
                ldc,
            )
        }
        .map_err(|e| anyhow!("cuda:{}: cuBLAS sgemm {g:?}: {e}", self.gpu.ordinal()))
    }
}

impl Drop for Blas {
    fn drop(&mut self) {
        // Nothing can report an error from here (see `gpu::Module`'s drop).
        let _ = self.gpu.context().check_err();
        if self.gpu.bind().is_ok() {
            // SAFETY: created in `new`, destroyed only here.
            let _ = unsafe { result::destroy_handle(self.handle) };
        }
    }
}
