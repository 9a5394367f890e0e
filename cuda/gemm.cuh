// The tiled fp32 SIMT GEMM main loop that convolution and the fully connected layer share.
//
// One block of GEMM_THREADS threads computes a GEMM_BM x GEMM_BN tile of C = A·B, walking the
// reduction dimension in steps of GEMM_BK. Each thread owns a GEMM_TM x GEMM_TN register tile.
// A and B are never materialised: a *loader* object produces the elements of each operand (an
// implicit im2col gather for convolution, a strided matrix for fc), so one main loop serves every
// pass. The tiles are double buffered in shared memory with the next tile prefetched into
// registers while the current one is multiplied, which needs exactly one barrier per step.
//
// Loader interface (duck-typed, resolved at compile time):
//   bool k_fastest() const   how this thread's share of a tile is laid out: true when the
//                            operand is contiguous along K (a thread takes E consecutive K of one
//                            row/column), false when contiguous along M/N (a warp takes 32
//                            consecutive rows/columns at the same K).
//   void init(int outer)     this thread's row of A (a block-local M index) or column of B.
//   void fetch(int k, float (&r)[E])  r[e] = element (outer, k + e), or 0 outside the operand.
//
// Store interface: void store(int m, int n, float v) for block-local m, n; it checks bounds.

#pragma once
#include "common.cuh"

#define GEMM_BM 64
#define GEMM_BN 128
#define GEMM_BK 8
#define GEMM_THREADS 256
#define GEMM_TM 4
#define GEMM_TN 8
// Elements each thread moves per tile, per operand.
#define GEMM_A_E (GEMM_BM * GEMM_BK / GEMM_THREADS)
#define GEMM_B_E (GEMM_BN * GEMM_BK / GEMM_THREADS)
// Shared rows padded by 4 floats: stores of a K-fastest thread layout hit distinct banks, and
// rows stay 16-byte aligned for the float4 reads of the inner loop.
#define GEMM_A_PITCH (GEMM_BM + 4)
#define GEMM_B_PITCH (GEMM_BN + 4)

static_assert(GEMM_BM / GEMM_TM * (GEMM_BN / GEMM_TN) == GEMM_THREADS, "thread grid");
static_assert(GEMM_TM == 4 && GEMM_TN == 8, "the inner loop reads one float4 of A, two of B");
static_assert(GEMM_BN == 2 * (GEMM_BN / GEMM_TN) * 4, "B columns come as two float4 halves");

// The shared memory of one block: two buffers per operand, stored K-major.
struct __align__(16) GemmSmem {
    float a[2][GEMM_BK][GEMM_A_PITCH];
    float b[2][GEMM_BK][GEMM_B_PITCH];
};

// Where this thread's share of an OUTER x GEMM_BK tile lies: `outer` (row of A / column of B)
// and the first of its E consecutive K offsets.
template <int OUTER, int E>
__device__ __forceinline__ void gemm_slot(bool k_fastest, int t, int& outer, int& k) {
    const int per_outer = GEMM_BK / E;  // threads sharing one row when K-fastest
    if (k_fastest) {
        outer = t / per_outer;
        k = (t % per_outer) * E;
    } else {
        outer = t % OUTER;
        k = (t / OUTER) * E;
    }
}

// acc = A[m0.., k_begin..k_end) · B[k_begin..k_end), n0..) for this thread's register tile.
// Block-uniform arguments only: every thread of the block must call it.
template <class LoadA, class LoadB>
__device__ __forceinline__ void gemm_mainloop(GemmSmem& sm, LoadA& la, LoadB& lb, int k_begin,
                                              int k_end, float (&acc)[GEMM_TM][GEMM_TN]) {
    const int t = threadIdx.x;
    const int tm = t / (GEMM_BN / GEMM_TN);
    const int tn = t % (GEMM_BN / GEMM_TN);

#pragma unroll
    for (int i = 0; i < GEMM_TM; ++i)
#pragma unroll
        for (int j = 0; j < GEMM_TN; ++j) acc[i][j] = 0.0f;
    if (k_begin >= k_end) return;

    int a_outer, a_k, b_outer, b_k;
    gemm_slot<GEMM_BM, GEMM_A_E>(la.k_fastest(), t, a_outer, a_k);
    gemm_slot<GEMM_BN, GEMM_B_E>(lb.k_fastest(), t, b_outer, b_k);
    la.init(a_outer);
    lb.init(b_outer);

    float ra[GEMM_A_E], rb[GEMM_B_E];
    la.fetch(k_begin + a_k, ra);
    lb.fetch(k_begin + b_k, rb);
#pragma unroll
    for (int e = 0; e < GEMM_A_E; ++e) sm.a[0][a_k + e][a_outer] = ra[e];
#pragma unroll
    for (int e = 0; e < GEMM_B_E; ++e) sm.b[0][b_k + e][b_outer] = rb[e];
    __syncthreads();

    int buf = 0;
    for (int k0 = k_begin; k0 < k_end; k0 += GEMM_BK) {
        const bool more = k0 + GEMM_BK < k_end;
        if (more) {
            la.fetch(k0 + GEMM_BK + a_k, ra);
            lb.fetch(k0 + GEMM_BK + b_k, rb);
        }
#pragma unroll
        for (int kk = 0; kk < GEMM_BK; ++kk) {
            const float4 a4 = *reinterpret_cast<const float4*>(&sm.a[buf][kk][tm * 4]);
            const float4 b4 = *reinterpret_cast<const float4*>(&sm.b[buf][kk][tn * 4]);
            const float4 c4 =
                *reinterpret_cast<const float4*>(&sm.b[buf][kk][GEMM_BN / 2 + tn * 4]);
            const float a[GEMM_TM] = {a4.x, a4.y, a4.z, a4.w};
            const float b[GEMM_TN] = {b4.x, b4.y, b4.z, b4.w, c4.x, c4.y, c4.z, c4.w};
#pragma unroll
            for (int i = 0; i < GEMM_TM; ++i)
#pragma unroll
                for (int j = 0; j < GEMM_TN; ++j) acc[i][j] += a[i] * b[j];
        }
        if (more) {
#pragma unroll
            for (int e = 0; e < GEMM_A_E; ++e) sm.a[buf ^ 1][a_k + e][a_outer] = ra[e];
#pragma unroll
            for (int e = 0; e < GEMM_B_E; ++e) sm.b[buf ^ 1][b_k + e][b_outer] = rb[e];
        }
        // The one barrier of the loop: it orders this step's stores into buf^1 before the next
        // step's reads of it, and this step's reads of buf before the next step's stores into
        // it. Without it the result is wrong (the `nobarrier` test build drops it to prove it).
        TEST_BARRIER();
        buf ^= 1;
    }
}

// Hands this thread's register tile to `st`, one element at a time, with block-local indices.
template <class Store>
__device__ __forceinline__ void gemm_store(Store& st, const float (&acc)[GEMM_TM][GEMM_TN]) {
    const int t = threadIdx.x;
    const int tm = t / (GEMM_BN / GEMM_TN);
    const int tn = t % (GEMM_BN / GEMM_TN);
#pragma unroll
    for (int j = 0; j < GEMM_TN; ++j) {
        const int n = (j < 4 ? 0 : GEMM_BN / 2) + tn * 4 + (j & 3);
#pragma unroll
        for (int i = 0; i < GEMM_TM; ++i) st.store(tm * 4 + i, n, acc[i][j]);
    }
}

// A matrix given by strides: element (outer, k) at p[outer * s_outer + k * s_k], with `outer`
// below `outer_count` (block-relative origin `outer0`) and `k` below `k_end`. Takes float4
// loads when the thread's E = 4 elements are contiguous and 16-byte aligned.
template <int E>
struct StridedLoader {
    const float* p;
    int outer0, outer_count, s_outer, s_k, k_end;
    bool contiguous_k;  // s_k == 1: lay threads out K-fastest
    bool ok = false;
    long long base = 0;

    __device__ bool k_fastest() const { return contiguous_k; }
    __device__ void init(int outer) {
        const int o = outer0 + outer;
        ok = o < outer_count;
        base = (long long)o * s_outer;
    }
    __device__ void fetch(int k, float (&r)[E]) {
        if constexpr (E == 4) {
            if (ok && s_k == 1 && k + 3 < k_end &&
                ((unsigned long long)(p + base + k) & 15) == 0) {
                const float4 v = *reinterpret_cast<const float4*>(p + base + k);
                r[0] = v.x;
                r[1] = v.y;
                r[2] = v.z;
                r[3] = v.w;
                return;
            }
        }
#pragma unroll
        for (int e = 0; e < E; ++e)
            r[e] = (ok && k + e < k_end) ? p[base + (long long)(k + e) * s_k] : 0.0f;
    }
};
