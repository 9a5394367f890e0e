// Self-test kernels for the host executor (tests/executor_semantics.rs, scripts/emu-sanitize.sh): each
// exercises one CUDA feature the op kernels rely on, on shapes that are not multiples of the
// block. They compile for the GPU too, like every `.cu`. Some check executor-only behaviour (what
// a read of never-written shared memory gives, deadlock detection); they say so.

#include "common.cuh"
#include "igemm.cuh"

#define SGEMM_TILE 16

// C[m x n] = A[m x k] · B[k x n], row-major. Block (16, 16), grid (ceil(n/16), ceil(m/16)).
// The classic tiled loop with two barriers; the first is TEST_BARRIER, so the `nobarrier` build
// shows what a missing barrier does.
extern "C" __global__ void selftest_sgemm(int m, int n, int k, const float* __restrict__ a,
                                          const float* __restrict__ b, float* __restrict__ c) {
    __shared__ float ta[SGEMM_TILE][SGEMM_TILE];
    __shared__ float tb[SGEMM_TILE][SGEMM_TILE];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int row = blockIdx.y * SGEMM_TILE + ty;
    const int col = blockIdx.x * SGEMM_TILE + tx;
    float acc = 0.0f;
    for (int k0 = 0; k0 < k; k0 += SGEMM_TILE) {
        ta[ty][tx] = (row < m && k0 + tx < k) ? a[row * k + k0 + tx] : 0.0f;
        tb[ty][tx] = (k0 + ty < k && col < n) ? b[(k0 + ty) * n + col] : 0.0f;
        TEST_BARRIER();  // the tiles are complete before anyone reads them
#pragma unroll
        for (int kk = 0; kk < SGEMM_TILE; ++kk) acc += ta[ty][kk] * tb[kk][tx];
        __syncthreads();  // everyone has read the tiles before they are overwritten
    }
    if (row < m && col < n) c[row * n + col] = acc;
}

// C[m x n] = A[m x k] · B[k x n], row-major, on the conv kernels' main loop (igemm.cuh): async
// copies into a ring of stages, a K table decoded one tile ahead, zero-filled tails. One
// 48x128 tile per block (128 threads, IgemmTile<48, 128, 6>::SMEM_BYTES of dynamic shared
// memory), grid (ceil(n/128), ceil(m/48)). The `nobarrier` and `nowait` builds drop its barrier
// and its wait for the copies; the sanitizer lane runs it in thread mode under ThreadSanitizer.
struct SelftestGemmPass {
    static constexpr bool MASKED = true;
    static constexpr Load A_LOAD = Load::Contiguous, B_LOAD = Load::TableAcross;
    const float* a;
    const float* b;
    int m0, n0, m, n, k;
    // K index kk: row kk of B; every tap is inside (bits 0), K past the end is not (the caller).
    __device__ KEntry decode(int kk) const { return KEntry{4u * (unsigned)(kk * n), 0, 0, 0}; }
    // Rows and columns past the matrix read row or column 0 (finite); their results are dropped.
    __device__ int a_row(int r) const { return (m0 + r < m ? m0 + r : 0) * k; }
    __device__ BCol b_col(int c) const {
        return BCol{n0 + c < n ? n0 + c : 0, 0, 0, ~IGEMM_NO_TAP};
    }
    __device__ bool in(const BCol& c, const int4& e) const { return tap_in_mask(c, e); }
};

extern "C" __global__ void __launch_bounds__(128)
    selftest_igemm(int m, int n, int k, const float* __restrict__ a, const float* __restrict__ b,
                   float* __restrict__ c) {
    using T = IgemmTile<48, 128, 6>;
    DYNAMIC_SHARED(float, smem);
    const IgemmSmem<T> sm(smem);
    const int m0 = blockIdx.y * T::BM, n0 = blockIdx.x * T::BN;
    const SelftestGemmPass pass{a, b, m0, n0, m, n, k};
    float acc[T::ACC];
    igemm_mainloop<T>(sm, pass, 0, k, acc);
    for (int e = 0; e < T::ACC; ++e) {
        const int i = m0 + igemm_row<T>(e), j = n0 + igemm_col<T>(e);
        if (i < m && j < n) c[i * n + j] = acc[e];
    }
}

// One warp, <<<1, 32>>>: D[16x8] = A[16xK]·B[Kx8] + C through one `mma.sync` (K = 8 for TF32,
// 16 for bf16), row-major fp32 in and out. Each lane gathers its fragment elements and scatters
// its results by the PTX ISA's formulas (mma.cuh's table, sections 9.7.14.5.7 and .8), written
// out here per register and independent of igemm.cuh's loaders; `lanes` records which lane
// held each D element and as which register (lane·4 + register), so the test checks the
// C/D layout element by element, and a wrong A or B mapping gives a wrong product.
extern "C" __global__ void selftest_mma_tf32(const float* __restrict__ a,
                                             const float* __restrict__ b,
                                             const float* __restrict__ c, float* __restrict__ d,
                                             int* __restrict__ lanes) {
    const int lane = threadIdx.x, g = lane >> 2, t = lane & 3;
    const unsigned af[4] = {to_tf32(a[g * 8 + t]), to_tf32(a[(g + 8) * 8 + t]),
                            to_tf32(a[g * 8 + t + 4]), to_tf32(a[(g + 8) * 8 + t + 4])};
    const unsigned bf[2] = {to_tf32(b[t * 8 + g]), to_tf32(b[(t + 4) * 8 + g])};
    const int at[4] = {g * 8 + 2 * t, g * 8 + 2 * t + 1, (g + 8) * 8 + 2 * t, (g + 8) * 8 + 2 * t + 1};
    float acc[4];
    for (int r = 0; r < 4; ++r) acc[r] = c[at[r]];
    mma_tf32_m16n8k8(acc, af, bf);
    for (int r = 0; r < 4; ++r) {
        d[at[r]] = acc[r];
        lanes[at[r]] = lane * 4 + r;
    }
}

extern "C" __global__ void selftest_mma_bf16(const float* __restrict__ a,
                                             const float* __restrict__ b,
                                             const float* __restrict__ c, float* __restrict__ d,
                                             int* __restrict__ lanes) {
    const int lane = threadIdx.x, g = lane >> 2, t = lane & 3;
    const auto A = [&](int row, int k) { return a[row * 16 + k]; };
    const auto B = [&](int k, int col) { return b[k * 8 + col]; };
    const unsigned af[4] = {pack_bf16x2(A(g, 2 * t), A(g, 2 * t + 1)),
                            pack_bf16x2(A(g + 8, 2 * t), A(g + 8, 2 * t + 1)),
                            pack_bf16x2(A(g, 2 * t + 8), A(g, 2 * t + 9)),
                            pack_bf16x2(A(g + 8, 2 * t + 8), A(g + 8, 2 * t + 9))};
    const unsigned bf[2] = {pack_bf16x2(B(2 * t, g), B(2 * t + 1, g)),
                            pack_bf16x2(B(2 * t + 8, g), B(2 * t + 9, g))};
    const int at[4] = {g * 8 + 2 * t, g * 8 + 2 * t + 1, (g + 8) * 8 + 2 * t, (g + 8) * 8 + 2 * t + 1};
    float acc[4];
    for (int r = 0; r < 4; ++r) acc[r] = c[at[r]];
    mma_bf16_m16n8k16(acc, af, bf);
    for (int r = 0; r < 4; ++r) {
        d[at[r]] = acc[r];
        lanes[at[r]] = lane * 4 + r;
    }
}

// The operand conversions: tf32[i] = to_tf32(x[i]) (its bits), bf16[i] = pack_bf16x2(x[i],
// -x[i]) (low half x[i], high half -x[i]). One thread per element.
extern "C" __global__ void selftest_operand_rounding(int n, const float* __restrict__ x,
                                                     unsigned* __restrict__ tf32,
                                                     unsigned* __restrict__ bf16) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    tf32[i] = to_tf32(x[i]);
    bf16[i] = pack_bf16x2(x[i], -x[i]);
}

// The lanes of this thread's warp that exist (the block's last warp may be partial).
__device__ __forceinline__ unsigned warp_lanes() {
    const unsigned threads = blockDim.x * blockDim.y * blockDim.z;
    const unsigned linear = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    const unsigned first = linear / 32 * 32;
    return threads - first >= 32 ? 32 : threads - first;
}

// Sum of `v` over the first `lanes` lanes of the warp, in lane 0.
__device__ __forceinline__ float warp_sum(float v, unsigned lanes) {
    const unsigned mask = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1u;
    const unsigned lane = threadIdx.x % 32;
    for (unsigned off = 16; off > 0; off /= 2) {
        const float other = __shfl_down_sync(mask, v, off);
        if (lane + off < lanes) v += other;
    }
    return v;
}

// sums[blockIdx.x] = the block's share of x (grid-stride) summed by warp shuffles, then the
// warps' partial sums through shared memory and a second shuffle reduction in warp 0.
// One-dimensional blocks of any size up to 1024.
extern "C" __global__ void selftest_block_sum(int n, const float* __restrict__ x,
                                              float* __restrict__ sums) {
    __shared__ float partial[32];
    const unsigned t = threadIdx.x;
    float v = 0.0f;
    for (int i = blockIdx.x * blockDim.x + t; i < n; i += gridDim.x * blockDim.x) v += x[i];
    v = warp_sum(v, warp_lanes());
    if (t % 32 == 0) partial[t / 32] = v;
    __syncthreads();
    const unsigned warps = (blockDim.x + 31) / 32;
    if (t < 32) {
        float p = t < warps ? partial[t] : 0.0f;
        p = warp_sum(p, warp_lanes());
        if (t == 0) sums[blockIdx.x] = p;
    }
}

// Histogram of `keys` (in [0, bins)) with integer and float atomics: counts[key] += 1,
// totals[key] += vals[i], *max_key = max key seen, *cas_count = n through an atomicCAS loop.
extern "C" __global__ void selftest_atomics(int n, const int* __restrict__ keys,
                                            const float* __restrict__ vals, int* counts,
                                            float* totals, int* max_key, unsigned* cas_count) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const int key = keys[i];
    atomicAdd(&counts[key], 1);
    atomicAdd(&totals[key], vals[i]);
    atomicMax(max_key, key);
    // Increment by compare-and-swap, starting from a guess of 0 (a plain read of *cas_count
    // would race with the other threads' swaps).
    unsigned seen = 0, old;
    while ((old = atomicCAS(cas_count, seen, seen + 1u)) != seen) seen = old;
}

// y = x with every block's segment of blockDim.x elements reversed, through dynamic shared
// memory (shared_bytes = blockDim.x * 4). Threads past the end of x return before the barrier:
// the last block's barrier counts only the threads that remain.
extern "C" __global__ void selftest_dynamic_reverse(int n, const float* __restrict__ x,
                                                    float* __restrict__ y) {
    DYNAMIC_SHARED(float, buf);
    const int base = blockIdx.x * blockDim.x;
    const int t = threadIdx.x;
    if (base + t >= n) return;
    const int count = n - base < (int)blockDim.x ? n - base : (int)blockDim.x;
    buf[t] = x[base + t];
    __syncthreads();
#ifdef ALEXNET_SELFTEST_OVERRUN
    // For scripts/emu-sanitize.sh: reads one element past the buffer, which AddressSanitizer
    // must report.
    y[base + t] = buf[count - t];
#else
    y[base + t] = buf[count - 1 - t];
#endif
}

// Executor-only: what a block reads from shared memory it never wrote. Block b, thread t writes
// slot t of a static and of a dynamic shared array (shared_bytes = blockDim.x * 4) only when
// b == 0 or t < written, then reads slot t back into y_static / y_dynamic. With poisoning, the
// unwritten slots of later blocks read NaN; without it, block 0's values (stale).
extern "C" __global__ void selftest_stale_shared(int written, const float* __restrict__ x,
                                                 float* __restrict__ y_static,
                                                 float* __restrict__ y_dynamic) {
    __shared__ float tile[256];
    DYNAMIC_SHARED(float, dyn);
    const int t = threadIdx.x;
    const int i = blockIdx.x * blockDim.x + t;
    if (blockIdx.x == 0 || t < written) {
        tile[t] = x[i];
        dyn[t] = x[i];
    }
    __syncthreads();
    y_static[i] = tile[t];
    y_dynamic[i] = dyn[t];
}

// Warp shuffles and votes with sub-warp `width`, one-dimensional blocks (the last warp may be
// partial). out is [4][blockDim.x]: shfl from lane (7*lane + 3) of the segment, up by 3, down by
// 5, xor 9; votes is [2][blockDim.x]: the ballot of (t % 3 == 0) and __syncthreads_count of it.
// A source lane past the end of a partial warp is undefined on the GPU; the executor returns
// the caller's own value (the test expects that).
extern "C" __global__ void selftest_shuffles(int width, float* __restrict__ out,
                                             unsigned* __restrict__ votes) {
    const unsigned t = threadIdx.x;
    const unsigned lanes = warp_lanes();
    const unsigned mask = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1u;
    const float v = (float)t + 0.5f;
    const int n = blockDim.x;
    out[0 * n + t] = __shfl_sync(mask, v, (7 * (t % 32) + 3) % 32, width);
    out[1 * n + t] = __shfl_up_sync(mask, v, 3, width);
    out[2 * n + t] = __shfl_down_sync(mask, v, 5, width);
    out[3 * n + t] = __shfl_xor_sync(mask, v, 9, width);
    votes[0 * n + t] = __ballot_sync(mask, t % 3 == 0);
    votes[1 * n + t] = __syncthreads_count(t % 3 == 0);
}

// One thread evaluates intrinsics whose CUDA semantics are easy to get wrong (rounding,
// saturation, NaN handling, fused multiply-add, bit tricks, atomics' return values); the test
// compares with the values CUDA documents. ints is [27], floats is [18]. Launch <<<1, 1>>>.
extern "C" __global__ void selftest_intrinsics(int* ints, float* floats) {
    __shared__ int s[3];
    __shared__ unsigned u[2];
    __shared__ float sf;
    const float nan = __int_as_float(0x7fc00000);
    ints[0] = __float2int_rn(2.5f);  // ties to even
    ints[1] = __float2int_rn(3.5f);
    ints[2] = __float2int_rn(-2.5f);
    ints[3] = __float2int_rz(-2.7f);
    ints[4] = __float2int_rd(-2.2f);
    ints[5] = __float2int_ru(2.2f);
    ints[6] = __float2int_rn(3e9f);  // saturates
    ints[7] = __float2int_rn(nan);   // 0
    ints[8] = (int)__umulhi(0xD2511F53u, 0xCD9E8D57u);
    ints[9] = (int)__brev(1u);
    ints[10] = __clz(0);
    ints[11] = __clz(1);
    ints[12] = __ffs(0);
    ints[13] = __ffs(8);
    ints[14] = __popc(0xF0F0u);
    ints[15] = min(-3, 2);
    ints[16] = (int)max(2u, 3u);
    ints[17] = (int)__float2uint_rn(-1.0f);  // saturates at 0
    ints[18] = __mul24(-3, 5);
    ints[19] = (int)__funnelshift_l(0x80000000u, 1u, 1);
    ints[20] = (int)__funnelshift_r(0x80000000u, 1u, 1);
    s[0] = 10;
    ints[21] = atomicSub(&s[0], 3);
    ints[22] = s[0];
    s[1] = 5;
    atomicMin(&s[1], 2);
    ints[23] = s[1];
    u[0] = 3;
    atomicInc(&u[0], 3u);  // old >= limit: wraps to 0
    ints[24] = (int)u[0];
    u[1] = 0;
    atomicDec(&u[1], 5u);  // old == 0: becomes the limit
    ints[25] = (int)u[1];
    s[2] = 12;
    atomicAnd(&s[2], 10);
    atomicOr(&s[2], 1);
    atomicXor(&s[2], 15);
    ints[26] = s[2];

    floats[0] = __saturatef(1.5f);
    floats[1] = __saturatef(-0.5f);
    floats[2] = __saturatef(nan);
    floats[3] = __fdividef(1.0f, 4.0f);
    floats[4] = rsqrtf(4.0f);
    floats[5] = __expf(1.0f);
    floats[6] = __logf(2.0f);
    floats[7] = __powf(2.0f, 10.0f);
    // (1 + 2^-12)^2 - (1 + 2^-11) is 2^-24 fused; unfused the product rounds and gives 0.
    const float a = 1.0f + 1.0f / 4096.0f;
    floats[8] = __fmaf_rn(a, a, -(1.0f + 1.0f / 2048.0f));
    floats[9] = fmaxf(nan, 1.0f);
    floats[10] = min(2.5f, -1.0f);
    floats[11] = max(nan, 3.0f);
    floats[12] = __int2float_rn(16777217);  // ties to even
    floats[13] = __uint_as_float(0x3f800000u);
    floats[14] = __fmul_rn(3.0f, 4.0f);
    floats[15] = __fsub_rn(1.0f, 0.25f);
    sf = 1.5f;
    floats[16] = atomicExch(&sf, 2.5f);
    floats[17] = sf;
}

// Executor-only: half of a warp waits at __syncwarp for the other half, which waits at
// __syncthreads for the first: undefined on the GPU, a deadlock the executor must report.
extern "C" __global__ void selftest_divergent_barrier(float* out) {
    if (threadIdx.x < 16)
        __syncwarp();
    else
        __syncthreads();
    out[threadIdx.x] = 1.0f;
}

// `iters` block barriers in a row: the fiber switch benchmark (benches/emu_fiber_switch.rs).
extern "C" __global__ void selftest_barrier_loop(int iters, float* out) {
    float v = 0.0f;
    for (int i = 0; i < iters; ++i) {
        v += 1.0f;
        __syncthreads();
    }
    out[blockIdx.x * blockDim.x + threadIdx.x] = v;
}
