// libcublas.so.13 of the simulated platform: the GEMMs the engine calls (cublasSgemm_v2 and
// cublasGemmEx with fp32 matrices), queued on the stream set on the handle, in its order, with
// the operands rounded as the tensor cores take them at the math mode or compute type asked
// for (TF32: round to nearest, ties away from zero; bf16: to nearest even; as the engine's CPU
// reference rounds them) and fp32 sums. A handle holds a device workspace, counted against the
// device's memory, which each GEMM writes: two streams sharing a handle without ordering race
// on it, as they do on hardware. cublasDestroy waits for the device, as cuBLAS documents.

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "sim_api.h"

#define API extern "C" __attribute__((visibility("default")))

struct cublasContext {
    int device = -1;
    CUstream stream = nullptr;
    int math = CUBLAS_DEFAULT_MATH;
    uint64_t workspace = 0;
};

namespace {

constexpr uint64_t kWorkspace = 4u << 20;

enum class Rounding { None, Tf32, Bf16 };

float round_operand(float v, Rounding r) {
    if (r == Rounding::None || !std::isfinite(v)) return v;
    uint32_t b;
    std::memcpy(&b, &v, 4);
    if (r == Rounding::Tf32) {
        b = (b + 0x1000u) & ~0x1fffu;  // cvt.rna.tf32.f32
    } else {
        b = (b + 0x7fffu + ((b >> 16) & 1u)) & 0xffff0000u;  // to nearest even
    }
    std::memcpy(&v, &b, 4);
    return v;
}

struct Gemm {
    bool ta, tb;
    int m, n, k;
    float alpha, beta;
    const float *a, *b;
    float* c;
    int lda, ldb, ldc;
    Rounding rounding;
};

void run_gemm(void* user) {
    const Gemm& g = *static_cast<Gemm*>(user);
    if (!alexnet_sim_compute()) return;
    // op(A) as m rows of k, op(B) as n rows of k, rounded: contiguous inner products.
    std::vector<float> a((size_t)g.m * g.k), b((size_t)g.n * g.k);
    for (int i = 0; i < g.m; ++i)
        for (int l = 0; l < g.k; ++l)
            a[(size_t)i * g.k + l] = round_operand(g.ta ? g.a[l + (size_t)i * g.lda] : g.a[i + (size_t)l * g.lda], g.rounding);
    for (int j = 0; j < g.n; ++j)
        for (int l = 0; l < g.k; ++l)
            b[(size_t)j * g.k + l] = round_operand(g.tb ? g.b[j + (size_t)l * g.ldb] : g.b[l + (size_t)j * g.ldb], g.rounding);
    for (int j = 0; j < g.n; ++j) {
        for (int i = 0; i < g.m; ++i) {
            const float* x = &a[(size_t)i * g.k];
            const float* y = &b[(size_t)j * g.k];
            float sum = 0;
            for (int l = 0; l < g.k; ++l) sum = std::fma(x[l], y[l], sum);
            float& out = g.c[i + (size_t)j * g.ldc];
            // beta == 0: C is not read (it may hold NaNs), as BLAS defines it.
            out = g.beta == 0 ? g.alpha * sum : g.alpha * sum + g.beta * out;
        }
    }
}

void drop_gemm(void* user) { delete static_cast<Gemm*>(user); }

cublasStatus_t queue_gemm(cublasHandle_t h, const Gemm& g, const char* call) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (g.m < 0 || g.n < 0 || g.k < 0) return CUBLAS_STATUS_INVALID_VALUE;
    const int rows_a = g.ta ? g.k : g.m, rows_b = g.tb ? g.n : g.k;
    if (g.lda < std::max(1, rows_a) || g.ldb < std::max(1, rows_b) || g.ldc < std::max(1, g.m))
        return CUBLAS_STATUS_INVALID_VALUE;
    if (g.m == 0 || g.n == 0) return CUBLAS_STATUS_SUCCESS;
    const int cols_a = g.ta ? g.m : g.k, cols_b = g.tb ? g.k : g.n;
    auto extent = [](int rows, int cols, int ld) { return 4ull * ((uint64_t)ld * (cols - 1) + rows); };
    std::vector<sim_access> acc;
    if (g.k > 0) {
        acc.push_back(sim_access{(uint64_t)g.a, extent(rows_a, cols_a, g.lda), 0});
        acc.push_back(sim_access{(uint64_t)g.b, extent(rows_b, cols_b, g.ldb), 0});
    }
    if (g.beta != 0) acc.push_back(sim_access{(uint64_t)g.c, extent(g.m, g.n, g.ldc), 0});
    acc.push_back(sim_access{(uint64_t)g.c, extent(g.m, g.n, g.ldc), 1});
    acc.push_back(sim_access{h->workspace, kWorkspace, 1});
    const std::string what = std::string(call) + " (m " + std::to_string(g.m) + ", n " + std::to_string(g.n) +
                             ", k " + std::to_string(g.k) + (g.rounding == Rounding::Tf32   ? ", TF32"
                                                             : g.rounding == Rounding::Bf16 ? ", bf16"
                                                                                            : "") +
                             ")";
    sim_op_desc d{};
    d.what = what.c_str();
    d.accesses = acc.data();
    d.n_accesses = (int)acc.size();
    d.run = run_gemm;
    d.drop = drop_gemm;
    d.user = new Gemm(g);
    if (alexnet_sim_stream_device(h->stream) != h->device) {
        delete static_cast<Gemm*>(d.user);
        alexnet_sim_note("cuBLAS: the handle's stream is not a stream of the current context on the handle's device");
        return CUBLAS_STATUS_EXECUTION_FAILED;
    }
    if (alexnet_sim_enqueue(h->stream, &d) != CUDA_SUCCESS) {
        // Not queued: enqueue did not take the user data.
        delete static_cast<Gemm*>(d.user);
        return CUBLAS_STATUS_EXECUTION_FAILED;
    }
    return CUBLAS_STATUS_SUCCESS;
}

}  // namespace

API cublasStatus_t cublasCreate_v2(cublasHandle_t* handle) {
    if (!handle) return CUBLAS_STATUS_INVALID_VALUE;
    const int device = alexnet_sim_current_device();
    if (device < 0) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (alexnet_sim_fault_cublas_create()) {
        alexnet_sim_note("fault injected: cublasCreate fails with CUBLAS_STATUS_NOT_INITIALIZED");
        return CUBLAS_STATUS_NOT_INITIALIZED;
    }
    auto* h = new cublasContext;
    h->device = device;
    if (alexnet_sim_alloc(kWorkspace, "cuBLAS workspace (cublasCreate)", &h->workspace) != CUDA_SUCCESS) {
        delete h;
        return CUBLAS_STATUS_ALLOC_FAILED;
    }
    *handle = h;
    return CUBLAS_STATUS_SUCCESS;
}

API cublasStatus_t cublasDestroy_v2(cublasHandle_t h) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    // "cublasDestroy() will implicitly call cudaDeviceSynchronize()".
    alexnet_sim_synchronize_device(h->device, "cublasDestroy");
    alexnet_sim_free(h->workspace);
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}

API cublasStatus_t cublasSetStream_v2(cublasHandle_t h, CUstream stream) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    h->stream = stream;
    return CUBLAS_STATUS_SUCCESS;
}

API cublasStatus_t cublasGetStream_v2(cublasHandle_t h, CUstream* stream) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!stream) return CUBLAS_STATUS_INVALID_VALUE;
    *stream = h->stream;
    return CUBLAS_STATUS_SUCCESS;
}

API cublasStatus_t cublasSetMathMode(cublasHandle_t h, int mode) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    const int base = mode & ~CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION;
    if (base != CUBLAS_DEFAULT_MATH && base != CUBLAS_TENSOR_OP_MATH && base != CUBLAS_PEDANTIC_MATH &&
        base != CUBLAS_TF32_TENSOR_OP_MATH)
        return CUBLAS_STATUS_INVALID_VALUE;
    h->math = mode;
    return CUBLAS_STATUS_SUCCESS;
}

API cublasStatus_t cublasGetMathMode(cublasHandle_t h, int* mode) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!mode) return CUBLAS_STATUS_INVALID_VALUE;
    *mode = h->math;
    return CUBLAS_STATUS_SUCCESS;
}

API cublasStatus_t cublasSgemm_v2(cublasHandle_t h, int ta, int tb, int m, int n, int k, const float* alpha,
                                  const float* a, int lda, const float* b, int ldb, const float* beta, float* c,
                                  int ldc) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!alpha || !beta || ta < 0 || ta > 2 || tb < 0 || tb > 2) return CUBLAS_STATUS_INVALID_VALUE;
    // Only the TF32 math mode lets cuBLAS take an SGEMM's products in reduced precision.
    const Rounding r = (h->math & ~CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION) == CUBLAS_TF32_TENSOR_OP_MATH
                           ? Rounding::Tf32
                           : Rounding::None;
    return queue_gemm(h, Gemm{ta != CUBLAS_OP_N, tb != CUBLAS_OP_N, m, n, k, *alpha, *beta, a, b, c, lda, ldb, ldc, r},
                      "cublasSgemm");
}

API cublasStatus_t cublasGemmEx(cublasHandle_t h, int ta, int tb, int m, int n, int k, const void* alpha,
                                const void* a, int atype, int lda, const void* b, int btype, int ldb,
                                const void* beta, void* c, int ctype, int ldc, int compute, int algo) {
    (void)algo;
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!alpha || !beta || ta < 0 || ta > 2 || tb < 0 || tb > 2) return CUBLAS_STATUS_INVALID_VALUE;
    if (atype != CUDA_R_32F || btype != CUDA_R_32F || ctype != CUDA_R_32F) {
        alexnet_sim_note("cublasGemmEx: only fp32 matrices (CUDA_R_32F) are simulated");
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    Rounding r;
    switch (compute) {
        case CUBLAS_COMPUTE_32F:
        case CUBLAS_COMPUTE_32F_PEDANTIC: r = Rounding::None; break;
        case CUBLAS_COMPUTE_32F_FAST_TF32: r = Rounding::Tf32; break;
        case CUBLAS_COMPUTE_32F_FAST_16BF: r = Rounding::Bf16; break;
        default:
            alexnet_sim_note("cublasGemmEx: that compute type is not simulated (32F, 32F_FAST_TF32 and 32F_FAST_16BF are)");
            return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    float al, be;
    std::memcpy(&al, alpha, 4);
    std::memcpy(&be, beta, 4);
    return queue_gemm(h,
                      Gemm{ta != CUBLAS_OP_N, tb != CUBLAS_OP_N, m, n, k, al, be, static_cast<const float*>(a),
                           static_cast<const float*>(b), static_cast<float*>(c), lda, ldb, ldc, r},
                      "cublasGemmEx");
}
