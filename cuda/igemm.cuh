// The implicit-GEMM main loop the three convolution passes share: C[BM x BN] += A[BM x K] ·
// B[K x BN] for one block, in fp32 SIMT, with neither operand ever materialised.
//
// Per block of THREADS threads, each owns a TM x 8 register tile (TM = 8, or 6 for 48-row tiles)
// and walks K in steps of BK = 16 through a STAGES-deep ring of shared-memory tiles filled by
// `cp.async` (async_copy.cuh): while it multiplies tile i, tiles i+1 and i+2 are in flight, and
// the loads cannot be scheduled after the math. Out-of-bounds elements (padding, tails) are
// zero-filled by the copy itself.
//
// No division in the hot loop: the K index of a convolution is a tuple ((ci, ky, kx) forward,
// (co, jy, jx) per stride phase for the data gradient, (img, oy, ox) for the filter gradient),
// and each tile's 16 tuples are decoded once, one per lane of warp 0, into a small table in
// shared memory (`KEntry`: the offsets into A and B and the tap's y/x shift), one tile ahead of
// its use. Every thread then forms its addresses by adding table entries to per-thread bases
// computed once, and tests a tap against the image bounds with two unsigned compares.
//
// A *pass* (conv.cu) supplies, duck-typed:
//   static constexpr Load A_LOAD, B_LOAD   how each operand is fetched (see `Load`)
//   KEntry decode(int k) const             the table entry of GEMM index k (0 <= k < k_end)
//   int a_row(int m) const                 A: offset of block-local row m's origin (clamped)
//   BCol b_col(int n) const                B: block-local column n's origin and tap origin
//   bool in(BCol, int4 entry) const        whether B's element at (entry's k, column) exists
//   const float* a, * b                    the operands
// Table offsets are in bytes and never negative (a pass shifts its column origins so), so an
// address is a 64-bit base plus a zero-extended 32-bit offset: two integer adds.

#pragma once
#include "async_copy.cuh"
#include "common.cuh"

// One GEMM K index, decoded: A's and B's byte offsets, and what B's bounds check needs: the
// tap's shift (y, x), or its bit in a column's mask (y; see `tap_bits`).
struct __align__(16) KEntry {
    unsigned b;
    int y, x;
    unsigned a;
};

// A table entry's fields for B as one shared load (x: b, y: y, z: x; a masked check reads only
// the first two, a 64-bit load), or its A offset. The lanes of a warp read the same entries
// (or a few), a broadcast.
__device__ __forceinline__ int4 load_entry(const KEntry* e) {
    return *reinterpret_cast<const int4*>(e);
}
__device__ __forceinline__ int4 load_entry_by(const KEntry* e) {
    const int2 v = *reinterpret_cast<const int2*>(e);
    return make_int4(v.x, v.y, 0, 0);
}

// A tap shift no tap origin can bring into bounds: the element is zero-filled.
#define IGEMM_OUTSIDE (-(1 << 30))

// B's per-column state: the column's offset in b (floats) and where its taps start, or (masked
// passes) which taps fall inside the image.
struct BCol {
    int off, y0, x0;
    unsigned mask;
};

// Masked bounds checks, for kernels of at most 15x15 taps: a tap (ty, tx) is the bits
// 1 << (16 + ty) | 1 << tx; a column's mask has the bits of its rows and columns of taps that lie
// inside the image; the element exists iff every bit of the tap is in the mask: one LOP3. A K
// index past the end is bit 31, which no mask has.
#define IGEMM_MASKED_TAPS 15
__device__ __forceinline__ unsigned tap_bits(int ty, int tx) {
    return (1u << (16 + ty)) | (1u << tx);
}
#define IGEMM_NO_TAP (1u << 31)
// The mask of a column whose taps ty in [0, ky) sit at rows y0 + ty, tx in [0, kx) at x0 + tx
// (with `sign` -1 when the taps count backwards, as the data gradient's do), of an h x w image.
__device__ __forceinline__ unsigned tap_mask(int y0, int x0, int ky, int kx, int sign, int h,
                                             int w) {
    unsigned m = 0;
    for (int t = 0; t < ky; ++t) m |= (unsigned)((unsigned)(y0 + sign * t) < (unsigned)h) << (16 + t);
    for (int t = 0; t < kx; ++t) m |= (unsigned)((unsigned)(x0 + sign * t) < (unsigned)w) << t;
    return m;
}

// B's element exists: the masked check, and the general one against an h x w image.
__device__ __forceinline__ bool tap_in_mask(const BCol& c, const int4& e) {
    return (~c.mask & (unsigned)e.y) == 0;
}
__device__ __forceinline__ bool tap_in_bounds(const BCol& c, const int4& e, int h, int w) {
    return (unsigned)(c.y0 + e.y) < (unsigned)h && (unsigned)(c.x0 + e.z) < (unsigned)w;
}

// p + a byte offset.
__device__ __forceinline__ const float* at_bytes(const float* p, unsigned bytes) {
    return reinterpret_cast<const float*>(reinterpret_cast<const char*>(p) + bytes);
}

// How an operand's tile is fetched.
//   Contiguous   A only: row r, index k at a[a_row(r) + k] (weights along their K); each loading
//                thread takes E consecutive k of one row, rows interleaved so that a warp reads
//                whole runs along K.
//   TableAlongK  offsets from the table, a warp reading runs along K (operands contiguous in K).
//   TableAcross  offsets from the table, a warp reading 32 consecutive rows/columns at one k
//                (operands contiguous across, like the im2col matrix's output pixels).
enum class Load { Contiguous, TableAlongK, TableAcross };

template <int BM_, int BN_, int TM_>
struct IgemmTile {
    static constexpr int BM = BM_, BN = BN_, TM = TM_, TN = 8;
    static constexpr int BK = 32, STAGES = 2;
    static constexpr int ROWS = BM / TM, COLS = BN / TN;  // the thread grid
    static constexpr int THREADS = ROWS * COLS;
    // Elements per loading thread (a power of two, at least 8, so that a thread's K run divides
    // BK), and how many threads load each operand (the rest skip it).
    static constexpr int run(int per_thread) {
        int e = 8;
        while (e < per_thread) e *= 2;
        return e;
    }
    static constexpr int A_E = run(BM * BK / THREADS), B_E = run(BN * BK / THREADS);
    static constexpr int A_LOADERS = BM * BK / A_E, B_LOADERS = BN * BK / B_E;
    // Rows padded by 4 floats: 16-byte aligned for the fragment loads, and stores along K land
    // in different banks.
    static constexpr int A_PITCH = BM + 4, B_PITCH = BN + 4;
    static constexpr int STAGE_FLOATS = BK * (A_PITCH + B_PITCH);
    static constexpr int SMEM_BYTES = STAGES * STAGE_FLOATS * 4 + 2 * BK * (int)sizeof(KEntry);

    static_assert(TM == 8 || TM == 6, "a thread's rows are a float4 and a float4 or float2");
    static_assert(BM % TM == 0 && BN % TN == 0 && THREADS % 32 == 0, "whole warps");
    static_assert(BK % A_E == 0 && BK % B_E == 0, "a loading thread takes part of one K run");
    static_assert(A_LOADERS <= THREADS && B_LOADERS <= THREADS, "enough threads to load");
    static_assert(BK <= 32, "warp 0 decodes a tile's K indices, one per lane");
};

// The tiles the kernels are built for, as (rows, columns, thread rows per register tile): 256
// threads over 128x128, 128 threads over 64x128 and 48x128 (48 rows fit the paper's 48 channels
// per tower of conv1 and of conv2's input).
#define IGEMM_TILES(X) X(128, 128, 8) X(64, 128, 8) X(48, 128, 6)

// The block's shared memory, carved from its dynamic shared bytes.
template <class T>
struct IgemmSmem {
    float* base;
    KEntry* table;  // [2][BK]
    __device__ explicit IgemmSmem(float* dynamic) : base(dynamic) {
        table = reinterpret_cast<KEntry*>(dynamic + T::STAGES * T::STAGE_FLOATS);
    }
    __device__ float* a(int stage) const { return base + stage * T::STAGE_FLOATS; }
    __device__ float* b(int stage) const { return a(stage) + T::BK * T::A_PITCH; }
};

// Where a loading thread's E elements of an OUTER x BK tile lie: one row/column (`outer`), and
// its E consecutive k from `k`. Along K: a warp covers BK/E k-runs of consecutive rows; across:
// 32 consecutive rows/columns at one k run.
template <int OUTER, int E, int BK>
__device__ __forceinline__ void igemm_slot(bool along_k, int t, int& outer, int& k) {
    if (along_k) {
        outer = t / (BK / E);
        k = (t % (BK / E)) * E;
    } else {
        outer = t % OUTER;
        k = (t / OUTER) * E;
    }
}

// acc = Σ over k in [k_begin, k_end) of A[m, k] · B[k, n] for this thread's register tile.
// Block-uniform arguments; every thread of the block calls it.
template <class T, class Pass>
__device__ __forceinline__ void igemm_mainloop(const IgemmSmem<T>& sm, const Pass& pass,
                                               int k_begin, int k_end,
                                               float (&acc)[T::TM][T::TN]) {
    constexpr int BK = T::BK, S = T::STAGES;
    const int t = threadIdx.x;
    const int tm = t / T::COLS, tn = t % T::COLS;
#pragma unroll
    for (int i = 0; i < T::TM; ++i)
#pragma unroll
        for (int j = 0; j < T::TN; ++j) acc[i][j] = 0.0f;
    const int tiles = k_end > k_begin ? (k_end - k_begin + BK - 1) / BK : 0;
    if (tiles == 0) return;

    // This thread's share of each operand's tiles, fixed for the whole loop.
    constexpr bool A_ALONG = Pass::A_LOAD != Load::TableAcross;
    constexpr bool B_ALONG = Pass::B_LOAD != Load::TableAcross;
    int a_outer, a_k, b_outer, b_k;
    igemm_slot<T::BM, T::A_E, BK>(A_ALONG, t, a_outer, a_k);
    igemm_slot<T::BN, T::B_E, BK>(B_ALONG, t, b_outer, b_k);
    const bool loads_a = t < T::A_LOADERS, loads_b = t < T::B_LOADERS;
    const int a_off = pass.a_row(loads_a ? a_outer : 0);
    const BCol col = pass.b_col(loads_b ? b_outer : 0);
    const int a_dst = a_k * T::A_PITCH + a_outer, b_dst = b_k * T::B_PITCH + b_outer;

    // Warp 0's lanes decode tile `tile`'s K indices into table slot tile % 2.
    const auto decode = [&](int tile) {
        if (t < BK) {
            const int k = k_begin + tile * BK + t;
            KEntry e{0, Pass::MASKED ? (int)IGEMM_NO_TAP : IGEMM_OUTSIDE, IGEMM_OUTSIDE, 0};
            if (k < k_end) e = pass.decode(k);
            sm.table[(tile & 1) * BK + t] = e;
        }
    };
    // Copies tile `tile` into stage `stage`. Needs its table entries visible (a barrier after
    // its decode). Elements outside the operand are zero-filled without being read, so their
    // addresses need no clamping.
    const float* a_src = pass.a + a_off;
    const float* b_src = pass.b + col.off;
    const auto issue = [&](int tile, int stage) {
        const KEntry* tab = sm.table + (tile & 1) * BK;
        if (loads_a) {
            float* dst = sm.a(stage) + a_dst;
            const int k0 = k_begin + tile * BK + a_k;
            const int left = k_end - k0;
#pragma unroll
            for (int e = 0; e < T::A_E; e += 4) {
                const float* src[4];
                bool in[4];
#pragma unroll
                for (int i = 0; i < 4; ++i) {
                    if constexpr (Pass::A_LOAD == Load::Contiguous) {
                        src[i] = a_src + k0 + e + i;
                        in[i] = e + i < left;
                    } else {
                        src[i] = at_bytes(a_src, tab[a_k + e + i].a);
                        in[i] = true;  // rows and K past the end read a finite in-bounds value
                    }
                }
                cp_async_f32x4<T::A_PITCH>(dst + e * T::A_PITCH, src, in);
            }
        }
        if (loads_b) {
            float* dst = sm.b(stage) + b_dst;
#pragma unroll
            for (int e = 0; e < T::B_E; e += 4) {
                const float* src[4];
                bool in[4];
#pragma unroll
                for (int i = 0; i < 4; ++i) {
                    const int4 k = Pass::MASKED ? load_entry_by(tab + b_k + e + i)
                                                : load_entry(tab + b_k + e + i);
                    src[i] = at_bytes(b_src, (unsigned)k.x);
                    in[i] = pass.in(col, k);
                }
                cp_async_f32x4<T::B_PITCH>(dst + e * T::B_PITCH, src, in);
            }
        }
    };

    // Prologue: tiles 0 .. S-2 in flight, the table of tile S-1 decoded.
    decode(0);
    __syncthreads();
#pragma unroll
    for (int s = 0; s < S - 1; ++s) {
        if (s < tiles) issue(s, s);
        cp_async_commit();
        decode(s + 1);
        __syncthreads();
    }

    // The stage computed now and the one refilled now (the one computed in the last step).
    int stage = 0, refill = S - 1;
    for (int i = 0; i < tiles; ++i) {
        // Tile i has landed (at most S-2 newer groups are pending); after the barrier every
        // thread's part of it is visible, everyone has finished tile i-1 (whose stage the issue
        // below refills) and the issue of tile i+S-2 (whose table slot the decode refills).
        TEST_ASYNC_WAIT<S - 2>();
        TEST_BARRIER();
        if (i + S - 1 < tiles) issue(i + S - 1, refill);
        cp_async_commit();
        decode(i + S);
        const float* as = sm.a(stage);
        const float* bs = sm.b(stage);
        refill = stage;
        stage = stage + 1 == S ? 0 : stage + 1;
#pragma unroll
        for (int kk = 0; kk < BK; ++kk) {
            const float* ar = as + kk * T::A_PITCH;
            const float* br = bs + kk * T::B_PITCH;
            float a[T::TM], b[T::TN];
            const float4 a4 = *reinterpret_cast<const float4*>(ar + tm * 4);
            a[0] = a4.x;
            a[1] = a4.y;
            a[2] = a4.z;
            a[3] = a4.w;
            if constexpr (T::TM == 8) {
                const float4 a5 = *reinterpret_cast<const float4*>(ar + T::ROWS * 4 + tm * 4);
                a[4] = a5.x;
                a[5] = a5.y;
                a[6] = a5.z;
                a[7] = a5.w;
            } else {
                const float2 a5 = *reinterpret_cast<const float2*>(ar + T::ROWS * 4 + tm * 2);
                a[4] = a5.x;
                a[5] = a5.y;
            }
            const float4 b4 = *reinterpret_cast<const float4*>(br + tn * 4);
            const float4 b5 = *reinterpret_cast<const float4*>(br + T::BN / 2 + tn * 4);
            b[0] = b4.x;
            b[1] = b4.y;
            b[2] = b4.z;
            b[3] = b4.w;
            b[4] = b5.x;
            b[5] = b5.y;
            b[6] = b5.z;
            b[7] = b5.w;
#pragma unroll
            for (int r = 0; r < T::TM; ++r)
#pragma unroll
                for (int c = 0; c < T::TN; ++c) acc[r][c] += a[r] * b[c];
        }
    }
    cp_async_wait<0>();  // nothing may still be writing shared memory when the block ends
}

// Block-local row of register-tile row r, and column of register-tile column c.
template <class T>
__device__ __forceinline__ int igemm_row(int r) {
    const int tm = threadIdx.x / T::COLS;
    return r < 4 ? tm * 4 + r : T::ROWS * 4 + tm * (T::TM - 4) + (r - 4);
}
template <class T>
__device__ __forceinline__ int igemm_col(int c) {
    const int tn = threadIdx.x % T::COLS;
    return (c < 4 ? 0 : T::BN / 2) + tn * 4 + (c & 3);
}

// Hands this thread's register tile to `st.store(m, n, v)` with block-local indices.
template <class T, class Store>
__device__ __forceinline__ void igemm_store(Store& st, const float (&acc)[T::TM][T::TN]) {
#pragma unroll
    for (int c = 0; c < T::TN; ++c)
#pragma unroll
        for (int r = 0; r < T::TM; ++r) st.store(igemm_row<T>(r), igemm_col<T>(c), acc[r][c]);
}
