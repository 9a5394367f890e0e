// Fully connected layer, the three passes as GEMMs on the main loop of igemm.cuh; transposes are
// strides. x [n, inputs], w [outputs, inputs], y [n, outputs] (`src/ops/fc.rs`).
//
//   forward          C[o, s] = Σ_i w[o, i] · x[s, i]    (+ b[o])   into y[s, o]
//   data gradient    C[i, s] = Σ_o w[o, i] · dy[s, o]             into dx[s, i]
//   filter gradient  C[o, i] = Σ_s dy[s, o] · x[s, i]             into dw[o, i]
//
// Every pass may split its reduction across blockIdx.z: split z writes its partial sums to
// out + z·len (len = the output's length), which `reduce_splits_f32` adds in a fixed order; with
// one split that is the output itself. The forward adds the bias only when `b` is not null (the
// host passes null when splitting and lets the reduction add it). Kernels are named
// `<pass>_f32_<rows>x<cols>` for the tiles of igemm.cuh (IGEMM_TILES); the launcher
// (`src/device/kernels/fc.rs`) picks one.

#include "common.cuh"
#include "igemm.cuh"
#include "params.cuh"

// A[m, k] = a[m·a_sm + k·a_sk], B[k, n] = b[k·b_sk + n·b_sn]. A_LOAD is Contiguous when a_sk is 1
// (the weights along their inputs); otherwise the table holds k's offsets. Every element inside
// the matrices exists; K past the end is the table's "no tap", rows and columns past the end
// read row or column 0 (finite) and their results are dropped.
template <Load A_LOAD_, Load B_LOAD_>
struct FcPass {
    static constexpr bool MASKED = true;
    static constexpr Load A_LOAD = A_LOAD_, B_LOAD = B_LOAD_;
    const float* a;
    const float* b;
    int m0, n0, m_count, n_count, a_sm, a_sk, b_sk, b_sn;

    __device__ KEntry decode(int k) const {
        return KEntry{4u * (unsigned)(k * b_sk), 0, 0, 4u * (unsigned)(k * a_sk)};
    }
    __device__ int a_row(int r) const { return (m0 + r < m_count ? m0 + r : 0) * a_sm; }
    __device__ BCol b_col(int c) const {
        return BCol{(n0 + c < n_count ? n0 + c : 0) * b_sn, 0, 0, ~IGEMM_NO_TAP};
    }
    __device__ bool in(const BCol& c, const int4& e) const { return tap_in_mask(c, e); }
};

struct FcStore {
    float* c;
    const float* bias;  // indexed by m, or null
    int m0, n0, m_count, n_count, s_m, s_n;

    __device__ void store(int m, int n, float v) {
        const int gm = m0 + m, gn = n0 + n;
        if (gm >= m_count || gn >= n_count) return;
        c[(long long)gm * s_m + (long long)gn * s_n] = bias ? v + bias[gm] : v;
    }
};

// C[m, n] = Σ_{k in this split} A[m, k]·B[k, n] into st.c + split·m_count·n_count.
template <class T, Load A_LOAD, Load B_LOAD>
__device__ __forceinline__ void fc_gemm(int m_count, int n_count, int k_count, int k_chunk,
                                        const float* a, int a_sm, int a_sk, const float* b,
                                        int b_sk, int b_sn, FcStore st) {
    DYNAMIC_SHARED(float, smem);
    const IgemmSmem<T> sm(smem);
    const int m0 = blockIdx.y * T::BM, n0 = blockIdx.x * T::BN;
    const int k_begin = blockIdx.z * k_chunk;
    const int k_end = min(k_count, k_begin + k_chunk);
    const FcPass<A_LOAD, B_LOAD> pass{a, b, m0, n0, m_count, n_count, a_sm, a_sk, b_sk, b_sn};
    float acc[T::ACC];
    igemm_mainloop<T>(sm, pass, k_begin, k_end, acc);
    st.m0 = m0;
    st.n0 = n0;
    st.c += (long long)blockIdx.z * m_count * n_count;
    igemm_store<T>(st, acc);
}

// At least two blocks of 256 threads (four of 128) per SM, at every precision: at most 128
// registers a thread (none of them spills there).
#define FC_BOUNDS(BM, BN, TM, MATH) \
    __launch_bounds__(IgemmTile<BM, BN, TM>::THREADS, 512 / IgemmTile<BM, BN, TM>::THREADS)

// grids (ceil(columns / BN), ceil(rows / BM), splits): forward rows = outputs, columns = n;
// data gradient rows = inputs, columns = n; filter gradient rows = outputs, columns = inputs.
// At each precision: f32 (SIMT FFMA), tf32 and bf16 (tensor cores).
#define FC_KERNELS(BM, BN, TM, MATH, PREC)                                                       \
    extern "C" __global__ void FC_BOUNDS(BM, BN, TM, MATH) fc_forward_##PREC##_##BM##x##BN(          \
        FcParams p, const float* x, const float* w, const float* b, float* y) {                  \
        fc_gemm<IgemmTile<BM, BN, TM, MATH>, Load::Contiguous, Load::TableAlongK>(               \
            p.outputs, p.n, p.inputs, p.k_chunk, w, p.inputs, 1, x, 1, p.inputs,                 \
            FcStore{y, b, 0, 0, p.outputs, p.n, 1, p.outputs});                                  \
    }                                                                                            \
    extern "C" __global__ void FC_BOUNDS(BM, BN, TM, MATH) fc_backward_data_##PREC##_##BM##x##BN(    \
        FcParams p, const float* dy, const float* w, float* dx) {                                \
        fc_gemm<IgemmTile<BM, BN, TM, MATH>, Load::TableAcross, Load::TableAlongK>(              \
            p.inputs, p.n, p.outputs, p.k_chunk, w, 1, p.inputs, dy, 1, p.outputs,               \
            FcStore{dx, nullptr, 0, 0, p.inputs, p.n, 1, p.inputs});                             \
    }                                                                                            \
    extern "C" __global__ void FC_BOUNDS(BM, BN, TM, MATH) fc_backward_filter_##PREC##_##BM##x##BN(  \
        FcParams p, const float* x, const float* dy, float* dw) {                                \
        fc_gemm<IgemmTile<BM, BN, TM, MATH>, Load::TableAcross, Load::TableAcross>(              \
            p.outputs, p.inputs, p.n, p.k_chunk, dy, 1, p.outputs, x, p.inputs, 1,               \
            FcStore{dw, nullptr, 0, 0, p.outputs, p.inputs, p.inputs, 1});                       \
    }
#define FC_PRECISIONS(BM, BN, TM)                 \
    FC_KERNELS(BM, BN, TM, Math::Simt, f32)      \
    FC_KERNELS(BM, BN, TM, Math::Tf32, tf32)     \
    FC_KERNELS(BM, BN, TM, Math::Bf16, bf16)
IGEMM_TILES(FC_PRECISIONS)
#undef FC_PRECISIONS
#undef FC_KERNELS

// db[o] = Σ_s dy[s, o], s ascending. grid ceil(outputs / 256), block 256.
extern "C" __global__ void fc_backward_bias_f32(FcParams p, const float* dy, float* db) {
    const int o = blockIdx.x * blockDim.x + threadIdx.x;
    if (o >= p.outputs) return;
    float acc = 0.0f;
    for (int s = 0; s < p.n; ++s) acc += dy[(long long)s * p.outputs + o];
    db[o] = acc;
}
