// Fully connected layer, the three passes as GEMMs on the tile loop of gemm.cuh; transposes are
// strides. x [n, inputs], w [outputs, inputs], y [n, outputs] (`src/ops/fc.rs`).
//
//   forward          C[o, s] = Σ_i w[o, i] · x[s, i]    (+ b[o])   into y[s, o]
//   data gradient    C[i, s] = Σ_o w[o, i] · dy[s, o]             into dx[s, i]
//   filter gradient  C[o, i] = Σ_s dy[s, o] · x[s, i]             into dw[o, i]
//
// Every pass may split its reduction across blockIdx.z: split z writes its partial sums to
// out + z·len (len = the output's length), which `reduce_splits_f32` adds in a fixed order; with
// one split that is the output itself. The forward adds the bias only when `b` is not null (the
// host passes null when splitting and lets the reduction add it).

#include "common.cuh"
#include "gemm.cuh"
#include "params.cuh"

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

// C[m, n] = Σ_{k in this split} A[m, k]·B[k, n], A and B given by strides (see StridedLoader).
__device__ __forceinline__ void fc_gemm(GemmSmem& sm, int m_count, int n_count, int k_count, int k_chunk,
                                        const float* a, int a_sm, int a_sk, const float* b,
                                        int b_sk, int b_sn, FcStore st) {
    const int m0 = blockIdx.y * GEMM_BM, n0 = blockIdx.x * GEMM_BN;
    const int k_begin = blockIdx.z * k_chunk;
    const int k_end = min(k_count, k_begin + k_chunk);
    StridedLoader<GEMM_A_E> la{a, m0, m_count, a_sm, a_sk, k_end, a_sk == 1};
    StridedLoader<GEMM_B_E> lb{b, n0, n_count, b_sn, b_sk, k_end, b_sk == 1};
    float acc[GEMM_TM][GEMM_TN];
    gemm_mainloop(sm, la, lb, k_begin, k_end, acc);
    st.m0 = m0;
    st.n0 = n0;
    st.c += (long long)blockIdx.z * m_count * n_count;
    gemm_store(st, acc);
}

// grid (ceil(n / BN), ceil(outputs / BM), splits), block GEMM_THREADS.
extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
    fc_forward_f32(FcParams p, const float* x, const float* w, const float* b, float* y) {
    __shared__ GemmSmem sm;
    fc_gemm(sm, p.outputs, p.n, p.inputs, p.k_chunk, w, p.inputs, 1, x, 1, p.inputs,
            FcStore{y, b, 0, 0, p.outputs, p.n, 1, p.outputs});
}

// grid (ceil(n / BN), ceil(inputs / BM), splits), block GEMM_THREADS.
extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
    fc_backward_data_f32(FcParams p, const float* dy, const float* w, float* dx) {
    __shared__ GemmSmem sm;
    fc_gemm(sm, p.inputs, p.n, p.outputs, p.k_chunk, w, 1, p.inputs, dy, 1, p.outputs,
            FcStore{dx, nullptr, 0, 0, p.inputs, p.n, 1, p.inputs});
}

// grid (ceil(inputs / BN), ceil(outputs / BM), splits), block GEMM_THREADS.
extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
    fc_backward_filter_f32(FcParams p, const float* x, const float* dy, float* dw) {
    __shared__ GemmSmem sm;
    fc_gemm(sm, p.outputs, p.inputs, p.n, p.k_chunk, dy, 1, p.outputs, x, p.inputs, 1,
            FcStore{dw, nullptr, 0, 0, p.outputs, p.inputs, p.inputs, 1});
}

// db[o] = Σ_s dy[s, o], s ascending. grid ceil(outputs / 256), block 256.
extern "C" __global__ void fc_backward_bias_f32(FcParams p, const float* dy, float* db) {
    const int o = blockIdx.x * blockDim.x + threadIdx.x;
    if (o >= p.outputs) return;
    float acc = 0.0f;
    for (int s = 0; s < p.n; ++s) acc += dy[(long long)s * p.outputs + o];
    db[o] = acc;
}
