// The implicit-GEMM main loop the three convolution passes share: C[BM x BN] += A[BM x K] ·
// B[K x BN] for one block, with neither operand ever materialised, the products taken in fp32
// SIMT (the exact reference path) or on the tensor cores (TF32 or bf16 operands, fp32 sums).
//
// SIMT: per block of THREADS threads, each owns a TM x 8 register tile (TM = 8, or 6 for 48-row
// tiles). MMA: the same threads as warps, each owning MT x NT products of 16 x 8 (mma.cuh).
// Either way the block walks K in steps of BK = 32 through a STAGES-deep ring of shared-memory
// tiles filled by `cp.async` (async_copy.cuh): while it multiplies tile i, tile i+1 is in
// flight, and the loads cannot be scheduled after the math. Out-of-bounds elements (padding,
// tails) are zero-filled by the copy itself. The stages hold fp32 in both paths; the MMA path
// rounds to TF32 or bf16 as it builds its fragments, so one loader serves all three.
//
// No division in the hot loop: the K index of a convolution is a tuple ((ci, ky, kx) forward,
// (co, jy, jx) per stride phase for the data gradient, (img, oy, ox) for the filter gradient),
// and each tile's 32 tuples are decoded once, one per lane of warp 0, into a small table in
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
#include "mma.cuh"

// How a stage's products are taken: fp32 FFMA on a TM x 8 register tile per thread (the exact
// reference path), or tensor-core MMA per warp with TF32 or bf16 operands and fp32 sums.
enum class Math { Simt, Tf32, Bf16 };

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

template <int BM_, int BN_, int TM_, Math MATH_ = Math::Simt>
struct IgemmTile {
    static constexpr int BM = BM_, BN = BN_, TM = TM_, TN = 8;
    static constexpr Math MATH = MATH_;
    static constexpr bool MMA = MATH != Math::Simt;
    static constexpr int BK = 32, STAGES = 2;
    static constexpr int ROWS = BM / TM, COLS = BN / TN;  // the SIMT thread grid
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
    // Shared-memory layout of a stage. SIMT: K-major rows (element (k, outer) at
    // k·PITCH + outer), padded by 4 floats so rows stay 16-byte aligned for the fragment loads and
    // stores along K land in different banks. MMA: outer-major rows of K (at outer·K_PITCH + k),
    // the layout the fragments read along K, padded so that a warp's fragment loads hit 32
    // different banks: 4 floats for TF32's single loads, 8 for bf16's pairs.
    static constexpr int A_PITCH = BM + 4, B_PITCH = BN + 4;
    static constexpr int K_PITCH = MATH == Math::Bf16 ? BK + 8 : BK + 4;
    static constexpr int A_KSTRIDE = MMA ? 1 : A_PITCH, A_OSTRIDE = MMA ? K_PITCH : 1;
    static constexpr int B_KSTRIDE = MMA ? 1 : B_PITCH, B_OSTRIDE = MMA ? K_PITCH : 1;
    static constexpr int A_FLOATS = MMA ? BM * K_PITCH : BK * A_PITCH;
    static constexpr int B_FLOATS = MMA ? BN * K_PITCH : BK * B_PITCH;
    static constexpr int STAGE_FLOATS = A_FLOATS + B_FLOATS;
    static constexpr int SMEM_BYTES = STAGES * STAGE_FLOATS * 4 + 2 * BK * (int)sizeof(KEntry);
    // MMA: warps over the tile (WARPS_M x WARPS_N), each a WM x WN tile of MT x NT products of
    // 16 x 8, KM of K per product.
    static constexpr int WARPS = THREADS / 32;
    static constexpr int WARPS_M = BM == 48 ? 1 : 2, WARPS_N = WARPS / WARPS_M;
    static constexpr int WM = BM / WARPS_M, WN = BN / WARPS_N;
    static constexpr int MT = WM / 16, NT = WN / 8;
    static constexpr int KM = MATH == Math::Bf16 ? 16 : 8;
    // Accumulators per thread: its register tile, or its fragments of the warp's products.
    static constexpr int ACC = MMA ? MT * NT * 4 : TM * TN;

    static_assert(TM == 8 || TM == 6, "a thread's rows are a float4 and a float4 or float2");
    static_assert(BM % TM == 0 && BN % TN == 0 && THREADS % 32 == 0, "whole warps");
    static_assert(BK % A_E == 0 && BK % B_E == 0, "a loading thread takes part of one K run");
    static_assert(A_LOADERS <= THREADS && B_LOADERS <= THREADS, "enough threads to load");
    static_assert(BK <= 32, "warp 0 decodes a tile's K indices, one per lane");
    static_assert(!MMA || (WM % 16 == 0 && WN % 8 == 0 && BK % KM == 0), "whole MMA tiles");
    static_assert(!MMA || ACC == TM * TN, "the MMA tiles keep the SIMT tile's accumulators");
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
    __device__ float* b(int stage) const { return a(stage) + T::A_FLOATS; }
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

// This thread's fixed place in a stage, computed once before the K loop (inside it, the
// compiler re-derives it every tile): SIMT, its row and column in the thread grid (tm, tn);
// MMA, the offsets of its fragment row g in its warp's first row tile (a) and column g in its
// first column tile (b), and t = lane % 4.
struct IgemmThread {
    int a, b, t;
};
template <class T>
__device__ __forceinline__ IgemmThread igemm_thread() {
    if constexpr (T::MMA) {
        const int lane = threadIdx.x % 32, w = threadIdx.x / 32, g = lane >> 2;
        return IgemmThread{((w / T::WARPS_N) * T::WM + g) * T::K_PITCH,
                           ((w % T::WARPS_N) * T::WN + g) * T::K_PITCH, lane & 3};
    } else {
        return IgemmThread{(int)threadIdx.x / T::COLS, (int)threadIdx.x % T::COLS, 0};
    }
}

// One stage's products on the SIMT register tile: acc[r·TN + c] += A[row r][k]·B[k][col c].
template <class T>
__device__ __forceinline__ void igemm_simt_stage(const float* as, const float* bs,
                                                 const IgemmThread& th, float (&acc)[T::ACC]) {
    const int tm = th.a, tn = th.b;
#pragma unroll
    for (int kk = 0; kk < T::BK; ++kk) {
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
            for (int c = 0; c < T::TN; ++c) acc[r * T::TN + c] += a[r] * b[c];
    }
}

// One stage's products on the tensor cores: this warp's MT x NT tiles of 16 x 8, each fed its
// fragments (cuda/mma.cuh) from the outer-major stage, converted to TF32 or bf16 on the way:
// the row tiles' fragments for a K step first, then one column tile's at a time, each used by
// every row tile (fewer live registers). The `skipmma` test build drops one product per step, to
// show that the tests see it.
template <class T>
__device__ __forceinline__ void igemm_mma_stage(const float* as, const float* bs,
                                                const IgemmThread& th, float (&acc)[T::ACC]) {
    constexpr int KP = T::K_PITCH;
    const int t = th.t;
    const float* ar = as + th.a;  // row g of the first row tile
    const float* br = bs + th.b;  // column g of the first column tile
#pragma unroll
    for (int kk = 0; kk < T::BK; kk += T::KM) {
        unsigned a[T::MT][4];
#pragma unroll
        for (int mi = 0; mi < T::MT; ++mi) {
            const float* p = ar + mi * 16 * KP + kk;
            if constexpr (T::MATH == Math::Tf32) {
                a[mi][0] = to_tf32(p[t]);
                a[mi][1] = to_tf32(p[8 * KP + t]);
                a[mi][2] = to_tf32(p[t + 4]);
                a[mi][3] = to_tf32(p[8 * KP + t + 4]);
            } else {
                const float2 v0 = *reinterpret_cast<const float2*>(p + 2 * t);
                const float2 v1 = *reinterpret_cast<const float2*>(p + 8 * KP + 2 * t);
                const float2 v2 = *reinterpret_cast<const float2*>(p + 2 * t + 8);
                const float2 v3 = *reinterpret_cast<const float2*>(p + 8 * KP + 2 * t + 8);
                a[mi][0] = pack_bf16x2(v0.x, v0.y);
                a[mi][1] = pack_bf16x2(v1.x, v1.y);
                a[mi][2] = pack_bf16x2(v2.x, v2.y);
                a[mi][3] = pack_bf16x2(v3.x, v3.y);
            }
        }
#pragma unroll
        for (int nj = 0; nj < T::NT; ++nj) {
            const float* q = br + nj * 8 * KP + kk;
            unsigned b[2];
            if constexpr (T::MATH == Math::Tf32) {
                b[0] = to_tf32(q[t]);
                b[1] = to_tf32(q[t + 4]);
            } else {
                const float2 u0 = *reinterpret_cast<const float2*>(q + 2 * t);
                const float2 u1 = *reinterpret_cast<const float2*>(q + 2 * t + 8);
                b[0] = pack_bf16x2(u0.x, u0.y);
                b[1] = pack_bf16x2(u1.x, u1.y);
            }
#pragma unroll
            for (int mi = 0; mi < T::MT; ++mi) {
#ifdef ALEXNET_TEST_SKIP_ONE_MMA
                if (mi == T::MT - 1 && nj == T::NT - 1) continue;
#endif
                float* c = acc + (mi * T::NT + nj) * 4;
                float d[4] = {c[0], c[1], c[2], c[3]};
                if constexpr (T::MATH == Math::Tf32) {
                    mma_tf32_m16n8k8(d, a[mi], b);
                } else {
                    mma_bf16_m16n8k16(d, a[mi], b);
                }
                c[0] = d[0];
                c[1] = d[1];
                c[2] = d[2];
                c[3] = d[3];
            }
        }
    }
}

// acc = Σ over k in [k_begin, k_end) of A[m, k] · B[k, n] for this thread's register tile.
// Block-uniform arguments; every thread of the block calls it.
template <class T, class Pass>
__device__ __forceinline__ void igemm_mainloop(const IgemmSmem<T>& sm, const Pass& pass,
                                               int k_begin, int k_end, float (&acc)[T::ACC]) {
    constexpr int BK = T::BK, S = T::STAGES;
    const int t = threadIdx.x;
#pragma unroll
    for (int i = 0; i < T::ACC; ++i) acc[i] = 0.0f;
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
    const int a_dst = a_k * T::A_KSTRIDE + a_outer * T::A_OSTRIDE;
    const int b_dst = b_k * T::B_KSTRIDE + b_outer * T::B_OSTRIDE;
    const IgemmThread th = igemm_thread<T>();

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
                cp_async_f32x4<T::A_KSTRIDE>(dst + e * T::A_KSTRIDE, src, in);
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
                cp_async_f32x4<T::B_KSTRIDE>(dst + e * T::B_KSTRIDE, src, in);
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
        if constexpr (T::MMA) {
            igemm_mma_stage<T>(as, bs, th, acc);
        } else {
            igemm_simt_stage<T>(as, bs, th, acc);
        }
    }
    cp_async_wait<0>();  // nothing may still be writing shared memory when the block ends
}

// Block-local row and column of accumulator i: SIMT, register-tile row i / TN and column i % TN;
// MMA, element i % 4 of product (mi, nj) = (i / 4 / NT, i / 4 % NT) of this warp (the C
// fragment's rows g, g+8 and columns 2t, 2t+1).
template <class T>
__device__ __forceinline__ int igemm_row(int i) {
    if constexpr (T::MMA) {
        const int w = threadIdx.x / 32, g = (threadIdx.x % 32) >> 2;
        return (w / T::WARPS_N) * T::WM + (i / 4 / T::NT) * 16 + g + 8 * ((i % 4) >> 1);
    } else {
        const int tm = threadIdx.x / T::COLS, r = i / T::TN;
        return r < 4 ? tm * 4 + r : T::ROWS * 4 + tm * (T::TM - 4) + (r - 4);
    }
}
template <class T>
__device__ __forceinline__ int igemm_col(int i) {
    if constexpr (T::MMA) {
        const int w = threadIdx.x / 32, t = threadIdx.x % 4;
        return (w % T::WARPS_N) * T::WN + (i / 4 % T::NT) * 8 + 2 * t + (i & 1);
    } else {
        const int tn = threadIdx.x % T::COLS, c = i % T::TN;
        return (c < 4 ? 0 : T::BN / 2) + tn * 4 + (c & 3);
    }
}

// Hands this thread's accumulators to `st.store(m, n, v)` with block-local indices.
template <class T, class Store>
__device__ __forceinline__ void igemm_store(Store& st, const float (&acc)[T::ACC]) {
#pragma unroll
    for (int i = 0; i < T::ACC; ++i) st.store(igemm_row<T>(i), igemm_col<T>(i), acc[i]);
}
