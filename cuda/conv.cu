// Convolution as an implicit GEMM (no im2col buffer) on the shared main loop of igemm.cuh, all
// three passes, with groups, stride and asymmetric zero padding. `src/ops/conv.rs` defines the op.
//
// With g the group, cig/cog its input/output channels and kk = k·k:
//   forward          Y[co, (n,oy,ox)]    = Σ_{(ci,ky,kx)}   W[co, (ci,ky,kx)] · X[(ci,ky,kx), (n,oy,ox)] + b
//   data gradient    dX[ci, (n,iy,ix)]   = Σ_{(co,ky,kx)}   W[co, ci, ky, kx] · dY[co, (n, oy, ox)]
//   filter gradient  dW[co, (ci,ky,kx)]  = Σ_{(n,oy,ox)}    dY[co, (n,oy,ox)] · X[(ci,ky,kx), (n,oy,ox)]
//
// The data gradient is split by stride phase: input rows iy ≡ py (mod stride) only receive taps
// ky ≡ (py + pad) (mod stride), so each of the stride² phases is a dense GEMM over its own taps
// (conv1's 11x11/4 reads 9 taps per pixel instead of testing 121). The filter gradient's
// reduction over n·oh·ow is split across blocks (blockIdx.z) into per-split partial sums that
// `reduce_splits_f32` adds in a fixed order: bit-reproducible, no atomics.
//
// Each pass is compiled for three block tiles (rows x columns of its GEMM): 128x128 (256
// threads), 64x128 and 48x128 (128 threads; 48 rows fit the paper's 48 channels per tower of
// conv1 and of conv2's input). Kernels are named `<pass>_f32_<rows>x<cols>`; the launcher
// (`src/device/kernels/conv.rs`) picks one per layer and needs IgemmTile::SMEM_BYTES of dynamic
// shared memory for it.

#include "common.cuh"
#include "igemm.cuh"
#include "params.cuh"

// ---- forward ---------------------------------------------------------------------------------

// A = the group's weights [cog, cig·kk], read along K; B = the implicit im2col matrix
// [cig·kk, n·oh·ow]: column (img, oy, ox), row (ci, ky, kx). MASKED: k <= IGEMM_MASKED_TAPS.
template <bool MASKED_>
struct ConvFwdPass {
    static constexpr bool MASKED = MASKED_;
    static constexpr Load A_LOAD = Load::Contiguous, B_LOAD = Load::TableAcross;
    const float* a;  // this group's weights
    const float* b;  // this group's input channels of image 0
    int b_h, b_w;
    int m0, n0, rows, cols, kdim, hw, c_in_hw, out_w, ohw, stride, pad;
    FastDiv taps, kw;

    __device__ ConvFwdPass(const ConvParams& p, const float* x, const float* w, int g, int m0_,
                           int n0_)
        : a(w + (long long)g * p.cout_g * p.cin_g * p.k * p.k),
          b(x + (long long)g * p.cin_g * p.h * p.w),
          b_h(p.h),
          b_w(p.w),
          m0(m0_),
          n0(n0_),
          rows(p.cout_g),
          cols(p.n * p.out_h * p.out_w),
          kdim(p.cin_g * p.k * p.k),
          hw(p.h * p.w),
          c_in_hw(p.c_in * p.h * p.w),
          out_w(p.out_w),
          ohw(p.out_h * p.out_w),
          stride(p.stride),
          pad(p.pad),
          taps(p.k * p.k),
          kw(p.k) {}

    __device__ KEntry decode(int k) const {
        const int ci = taps.div(k), r = k - ci * taps.d;
        const int ky = kw.div(r), kx = r - ky * kw.d;
        const unsigned b_bytes = 4u * (unsigned)(ci * hw + ky * b_w + kx);
        if (MASKED) return KEntry{b_bytes, (int)tap_bits(ky, kx), 0, 4u * k};
        return KEntry{b_bytes, ky, kx, 4u * k};
    }
    __device__ int a_row(int m) const { return m0 + m < rows ? (m0 + m) * kdim : 0; }
    __device__ BCol b_col(int n) const {
        const int col = n0 + n;
        if (col >= cols) return BCol{0, IGEMM_OUTSIDE, IGEMM_OUTSIDE, 0};
        const int img = col / ohw, pix = col - img * ohw;
        const int oy = pix / out_w, ox = pix - oy * out_w;
        const int iy0 = oy * stride - pad, ix0 = ox * stride - pad;
        const unsigned mask = MASKED ? tap_mask(iy0, ix0, kw.d, kw.d, 1, b_h, b_w) : 0;
        return BCol{img * c_in_hw + iy0 * b_w + ix0, iy0, ix0, mask};
    }
    __device__ bool in(const BCol& c, const int4& e) const {
        if constexpr (MASKED) return tap_in_mask(c, e);
        return tap_in_bounds(c, e, b_h, b_w);
    }
};

struct ConvFwdStore {
    const ConvParams& p;
    const float* bias;
    float* y;
    int m0, n0, g;

    __device__ void store(int m, int n, float v) {
        const int co = m0 + m, col = n0 + n;
        const int ohw = p.out_h * p.out_w;
        if (co >= p.cout_g || col >= p.n * ohw) return;
        const int img = col / ohw, pix = col - img * ohw;
        const int c = g * p.cout_g + co;
        v += bias[c];
        if (p.relu) v = v > 0.0f ? v : 0.0f;  // as relu_forward_f32
        y[((long long)img * p.c_out + c) * ohw + pix] = v;
    }
};

// grid (ceil(n·oh·ow / BN), ceil(cout_g / BM), groups), block THREADS, SMEM_BYTES dynamic.
template <class T, bool MASKED>
__device__ __forceinline__ void conv_forward(const ConvParams& p, const float* x, const float* w,
                                             const float* bias, float* y) {
    DYNAMIC_SHARED(float, smem);
    const IgemmSmem<T> sm(smem);
    const int m0 = blockIdx.y * T::BM, n0 = blockIdx.x * T::BN, g = blockIdx.z;
    const ConvFwdPass<MASKED> pass(p, x, w, g, m0, n0);
    float acc[T::ACC];
    igemm_mainloop<T>(sm, pass, 0, pass.kdim, acc);
    ConvFwdStore st{p, bias, y, m0, n0, g};
    igemm_store<T>(st, acc);
}

// ---- data gradient ---------------------------------------------------------------------------

// One stride phase (py, px) of one group: input pixels (py + s·qy, px + s·qx) and the taps
// (ry + s·jy, rx + s·jx) that reach them, from output pixel (qy + oyb - jy, qx + oxb - jx).
struct ConvPhase {
    int g, py, px;
    int hq, wq;    // input rows/columns of the phase
    int ry, rx;    // first tap of the phase
    int kjy, kjx;  // taps of the phase along each axis
    int oyb, oxb;

    __device__ ConvPhase(const ConvParams& p, int z) {
        const int s = p.stride;
        g = z / (s * s);
        const int ph = z - g * s * s;
        py = ph / s;
        px = ph - py * s;
        hq = py < p.h ? (p.h - py + s - 1) / s : 0;
        wq = px < p.w ? (p.w - px + s - 1) / s : 0;
        ry = (py + p.pad) % s;
        rx = (px + p.pad) % s;
        kjy = ry < p.k ? (p.k - ry + s - 1) / s : 0;
        kjx = rx < p.k ? (p.k - rx + s - 1) / s : 0;
        oyb = (py + p.pad - ry) / s;
        oxb = (px + p.pad - rx) / s;
    }
    __device__ int gemm_k(const ConvParams& p) const { return p.cout_g * kjy * kjx; }
    __device__ int gemm_n(const ConvParams& p) const { return p.n * hq * wq; }
};

// A[ci, (co, jy, jx)] = W[g·cog + co, ci, ry + s·jy, rx + s·jx];
// B[(co, jy, jx), (img, qy, qx)] = dY[img, g·cog + co, qy + oyb - jy, qx + oxb - jx] or 0.
// B's table offsets are shifted by the phase's last tap (`back`) to stay non-negative.
// MASKED: the phase's taps per axis are at most IGEMM_MASKED_TAPS.
template <bool MASKED_>
struct ConvDataPass {
    static constexpr bool MASKED = MASKED_;
    static constexpr Load A_LOAD = Load::TableAcross, B_LOAD = Load::TableAcross;
    const float* a;  // W at this group's (co 0, ci 0) and the phase's first tap
    const float* b;  // dY at this group's channel 0 of image 0
    int b_h, b_w;
    int m0, n0, rows, cols, kk, k, stride, w_co, oh_ow, c_out_ohw, wq, q;
    int oyb, oxb, back;
    FastDiv taps, kjx;

    __device__ ConvDataPass(const ConvParams& p, const ConvPhase& ph, const float* dy,
                            const float* w, int m0_, int n0_)
        : a(w + (long long)ph.g * p.cout_g * p.cin_g * p.k * p.k + ph.ry * p.k + ph.rx),
          b(dy + (long long)ph.g * p.cout_g * p.out_h * p.out_w),
          b_h(p.out_h),
          b_w(p.out_w),
          m0(m0_),
          n0(n0_),
          rows(p.cin_g),
          cols(ph.gemm_n(p)),
          kk(p.k * p.k),
          k(p.k),
          stride(p.stride),
          w_co(p.cin_g * p.k * p.k),
          oh_ow(p.out_h * p.out_w),
          c_out_ohw(p.c_out * p.out_h * p.out_w),
          wq(ph.wq),
          q(ph.hq * ph.wq),
          oyb(ph.oyb),
          oxb(ph.oxb),
          back(ph.kjy > 0 && ph.kjx > 0 ? (ph.kjy - 1) * p.out_w + ph.kjx - 1 : 0),
          taps(ph.kjy * ph.kjx > 0 ? ph.kjy * ph.kjx : 1),
          kjx(ph.kjx > 0 ? ph.kjx : 1) {}

    __device__ KEntry decode(int kidx) const {
        const int co = taps.div(kidx), r = kidx - co * taps.d;
        const int jy = kjx.div(r), jx = r - jy * kjx.d;
        const unsigned a_bytes = 4u * (unsigned)(co * w_co + stride * (jy * k + jx));
        const unsigned b_bytes = 4u * (unsigned)(co * oh_ow - jy * b_w - jx + back);
        if (MASKED) return KEntry{b_bytes, (int)tap_bits(jy, jx), 0, a_bytes};
        return KEntry{b_bytes, -jy, -jx, a_bytes};
    }
    __device__ int a_row(int m) const { return m0 + m < rows ? (m0 + m) * kk : 0; }
    __device__ BCol b_col(int n) const {
        const int col = n0 + n;
        if (col >= cols) return BCol{0, IGEMM_OUTSIDE, IGEMM_OUTSIDE, 0};
        const int img = col / q, rem = col - img * q;
        const int qy = rem / wq, qx = rem - qy * wq;
        const int oy0 = qy + oyb, ox0 = qx + oxb;
        const unsigned mask =
            MASKED ? tap_mask(oy0, ox0, taps.d / kjx.d, kjx.d, -1, b_h, b_w) : 0;
        return BCol{img * c_out_ohw + oy0 * b_w + ox0 - back, oy0, ox0, mask};
    }
    __device__ bool in(const BCol& c, const int4& e) const {
        if constexpr (MASKED) return tap_in_mask(c, e);
        return tap_in_bounds(c, e, b_h, b_w);
    }
};

struct ConvDataStore {
    const ConvParams& p;
    const ConvPhase& ph;
    float* dx;
    int m0, n0;

    __device__ void store(int m, int n, float v) {
        const int ci = m0 + m, col = n0 + n;
        const int q = ph.hq * ph.wq;
        if (ci >= p.cin_g || col >= p.n * q) return;
        const int img = col / q, rem = col - img * q;
        const int qy = rem / ph.wq, qx = rem - qy * ph.wq;
        const int iy = ph.py + p.stride * qy, ix = ph.px + p.stride * qx;
        dx[(((long long)img * p.c_in + ph.g * p.cin_g + ci) * p.h + iy) * p.w + ix] = v;
    }
};

// grid (ceil(n·ceil(h/s)·ceil(w/s) / BN), ceil(cin_g / BM), groups·s²), block THREADS.
// Writes every element of dx (phases without taps write zeros).
template <class T, bool MASKED>
__device__ __forceinline__ void conv_backward_data(const ConvParams& p, const float* dy,
                                                   const float* w, float* dx) {
    DYNAMIC_SHARED(float, smem);
    const IgemmSmem<T> sm(smem);
    const ConvPhase ph(p, blockIdx.z);
    const int m0 = blockIdx.y * T::BM, n0 = blockIdx.x * T::BN;
    if (n0 >= ph.gemm_n(p)) return;  // this phase has fewer pixels than the largest: whole block
    const ConvDataPass<MASKED> pass(p, ph, dy, w, m0, n0);
    float acc[T::ACC];
    igemm_mainloop<T>(sm, pass, 0, ph.gemm_k(p), acc);
    ConvDataStore st{p, ph, dx, m0, n0};
    igemm_store<T>(st, acc);
}

// ---- filter gradient -------------------------------------------------------------------------

// A[co, (img, oy, ox)] = dY[img, g·cog + co, oy, ox], read along K;
// B[(img, oy, ox), (ci, ky, kx)] = X[img, g·cig + ci, oy·s - pad + ky, ox·s - pad + kx] or 0.
//
// MASKED: a pixel's border position is its bits (`border_bits`) and a column's mask has those of
// the border pixels its tap reads inside the image; needs every pixel whose tap can fall outside
// to lie within FILTER_BORDER rows or columns of the edge (`filter_border_fits` on the host).
#define FILTER_BORDER 7
__device__ __forceinline__ unsigned border_bits(int oy, int ox, int oh, int ow) {
    unsigned bits = 0;
    if (oy < FILTER_BORDER) bits |= 1u << oy;
    if (oh - 1 - oy < FILTER_BORDER) bits |= 1u << (FILTER_BORDER + oh - 1 - oy);
    if (ox < FILTER_BORDER) bits |= 1u << (2 * FILTER_BORDER + ox);
    if (ow - 1 - ox < FILTER_BORDER) bits |= 1u << (3 * FILTER_BORDER + ow - 1 - ox);
    return bits;
}
template <bool MASKED_>
struct ConvFilterPass {
    static constexpr bool MASKED = MASKED_;
    static constexpr Load A_LOAD = Load::TableAlongK, B_LOAD = Load::TableAlongK;
    const float* a;  // dY at this group's channel 0 of image 0
    const float* b;  // X at this group's channel 0 of image 0
    int b_h, b_w;
    int m0, n0, rows, cols, ohw, c_out_ohw, c_in_hw, hw, stride, pad, k, out_h;
    FastDiv pixels, out_w, taps, kw;

    __device__ ConvFilterPass(const ConvParams& p, const float* x, const float* dy, int g,
                              int m0_, int n0_)
        : a(dy + (long long)g * p.cout_g * p.out_h * p.out_w),
          b(x + (long long)g * p.cin_g * p.h * p.w),
          b_h(p.h),
          b_w(p.w),
          m0(m0_),
          n0(n0_),
          rows(p.cout_g),
          cols(p.cin_g * p.k * p.k),
          ohw(p.out_h * p.out_w),
          c_out_ohw(p.c_out * p.out_h * p.out_w),
          c_in_hw(p.c_in * p.h * p.w),
          hw(p.h * p.w),
          stride(p.stride),
          pad(p.pad),
          k(p.k),
          out_h(p.out_h),
          pixels(p.out_h * p.out_w),
          out_w(p.out_w),
          taps(p.k * p.k),
          kw(p.k) {}

    __device__ KEntry decode(int kidx) const {
        const int img = pixels.div(kidx), pix = kidx - img * pixels.d;
        const int oy = out_w.div(pix), ox = pix - oy * out_w.d;
        const int iy = oy * stride, ix = ox * stride;
        const unsigned b_bytes = 4u * (unsigned)(img * c_in_hw + iy * b_w + ix);
        const unsigned a_bytes = 4u * (unsigned)(img * c_out_ohw + pix);
        if (MASKED) return KEntry{b_bytes, (int)border_bits(oy, ox, out_h, out_w.d), 0, a_bytes};
        return KEntry{b_bytes, iy, ix, a_bytes};
    }
    __device__ int a_row(int m) const { return m0 + m < rows ? (m0 + m) * ohw : 0; }
    __device__ BCol b_col(int n) const {
        const int col = n0 + n;
        if (col >= cols) return BCol{0, IGEMM_OUTSIDE, IGEMM_OUTSIDE, 0};
        const int ci = taps.div(col), r = col - ci * taps.d;
        const int ky = kw.div(r), kx = r - ky * kw.d;
        const int dy0 = ky - pad, dx0 = kx - pad;
        unsigned mask = 0;
        if (MASKED) {
            // The border pixels whose tap is inside the image (bits of rows or columns the
            // image does not have stay set: no pixel carries them).
            const int oh = out_h, ow = out_w.d;
            for (int r = 0; r < FILTER_BORDER; ++r) {
                const int top = r, bottom = oh - 1 - r, left = r, right = ow - 1 - r;
                mask |= (unsigned)(top >= oh || (unsigned)(top * stride + dy0) < (unsigned)b_h) << r;
                mask |= (unsigned)(bottom < 0 || (unsigned)(bottom * stride + dy0) < (unsigned)b_h)
                        << (FILTER_BORDER + r);
                mask |= (unsigned)(left >= ow || (unsigned)(left * stride + dx0) < (unsigned)b_w)
                        << (2 * FILTER_BORDER + r);
                mask |= (unsigned)(right < 0 || (unsigned)(right * stride + dx0) < (unsigned)b_w)
                        << (3 * FILTER_BORDER + r);
            }
        }
        return BCol{ci * hw + dy0 * b_w + dx0, dy0, dx0, mask};
    }
    __device__ bool in(const BCol& c, const int4& e) const {
        if constexpr (MASKED) return tap_in_mask(c, e);
        return tap_in_bounds(c, e, b_h, b_w);
    }
};

struct ConvFilterStore {
    const ConvParams& p;
    float* dw;  // this split's slice: [c_out, cig·kk]
    int m0, n0, g;

    __device__ void store(int m, int n, float v) {
        const int co = m0 + m, col = n0 + n;
        const int kdim = p.cin_g * p.k * p.k;
        if (co >= p.cout_g || col >= kdim) return;
        dw[(long long)(g * p.cout_g + co) * kdim + col] = v;
    }
};

// grid (ceil(cin_g·k² / BN), ceil(cout_g / BM), groups·splits), block THREADS. Split s sums
// GEMM-K terms [s·k_chunk, (s+1)·k_chunk) into dw + s·w_len; with one split that is dw itself.
template <class T, bool MASKED>
__device__ __forceinline__ void conv_backward_filter(const ConvParams& p, const float* x,
                                                     const float* dy, float* dw) {
    DYNAMIC_SHARED(float, smem);
    const IgemmSmem<T> sm(smem);
    const int g = blockIdx.z % p.groups, split = blockIdx.z / p.groups;
    const int m0 = blockIdx.y * T::BM, n0 = blockIdx.x * T::BN;
    const int kdim = p.n * p.out_h * p.out_w;
    const int k_begin = split * p.k_chunk;
    const int k_end = min(kdim, k_begin + p.k_chunk);
    const ConvFilterPass<MASKED> pass(p, x, dy, g, m0, n0);
    float acc[T::ACC];
    igemm_mainloop<T>(sm, pass, k_begin, k_end, acc);
    const int w_len = p.c_out * p.cin_g * p.k * p.k;
    ConvFilterStore st{p, dw + (long long)split * w_len, m0, n0, g};
    igemm_store<T>(st, acc);
}

// ---- the kernels, one per pass and tile ------------------------------------------------------

// At least two blocks of 256 threads (four of 128) per SM, so at most 128 registers a thread:
// every kernel fits without spilling but the tensor-core data gradient, whose pass state and
// fragments need more; it is held to three blocks of 128 threads (one of 256), up to 168.
#define CONV_BOUNDS(BM, BN, TM, BLOCK_THREADS_PER_SM) \
    __launch_bounds__(IgemmTile<BM, BN, TM>::THREADS, \
                      (BLOCK_THREADS_PER_SM) / IgemmTile<BM, BN, TM>::THREADS)

// Each pass at each precision (f32: SIMT FFMA; tf32, bf16: tensor cores) and tile, with masked
// bounds checks (taps up to IGEMM_MASKED_TAPS per axis, filter-gradient borders up to
// FILTER_BORDER), suffix ""; with general checks, suffix "_wide" (built for one tile only: no
// preset needs it).
#define CONV_KERNELS(BM, BN, TM, MATH, PREC, MASKED, SUFFIX)                                     \
    extern "C" __global__ void CONV_BOUNDS(BM, BN, TM, 512)                                     \
        conv_forward_##PREC##_##BM##x##BN##SUFFIX(ConvParams p, const float* x, const float* w, \
                                                   const float* b, float* y) {                   \
        conv_forward<IgemmTile<BM, BN, TM, MATH>, MASKED>(p, x, w, b, y);                        \
    }                                                                                            \
    extern "C" __global__ void CONV_BOUNDS(BM, BN, TM, MATH == Math::Simt ? 512 : 384)          \
        conv_backward_data_##PREC##_##BM##x##BN##SUFFIX(ConvParams p, const float* dy,          \
                                                         const float* w, float* dx) {            \
        conv_backward_data<IgemmTile<BM, BN, TM, MATH>, MASKED>(p, dy, w, dx);                   \
    }                                                                                            \
    extern "C" __global__ void CONV_BOUNDS(BM, BN, TM, 512)                                     \
        conv_backward_filter_##PREC##_##BM##x##BN##SUFFIX(ConvParams p, const float* x,         \
                                                           const float* dy, float* dw) {         \
        conv_backward_filter<IgemmTile<BM, BN, TM, MATH>, MASKED>(p, x, dy, dw);                 \
    }
#define CONV_PRECISIONS(BM, BN, TM)                     \
    CONV_KERNELS(BM, BN, TM, Math::Simt, f32, true, )  \
    CONV_KERNELS(BM, BN, TM, Math::Tf32, tf32, true, ) \
    CONV_KERNELS(BM, BN, TM, Math::Bf16, bf16, true, )
IGEMM_TILES(CONV_PRECISIONS)
CONV_KERNELS(64, 128, 8, Math::Simt, f32, false, _wide)
CONV_KERNELS(64, 128, 8, Math::Tf32, tf32, false, _wide)
CONV_KERNELS(64, 128, 8, Math::Bf16, bf16, false, _wide)
#undef CONV_PRECISIONS
#undef CONV_KERNELS

// The dynamic shared memory each tile needs; src/device/kernels/igemm.rs has the same numbers.
static_assert(IgemmTile<128, 128, 8>::SMEM_BYTES == 68608, "128x128 shared bytes");
static_assert(IgemmTile<64, 128, 8>::SMEM_BYTES == 52224, "64x128 shared bytes");
static_assert(IgemmTile<48, 128, 6>::SMEM_BYTES == 48128, "48x128 shared bytes");
static_assert(IgemmTile<128, 128, 8, Math::Tf32>::SMEM_BYTES == 74752, "128x128 tf32 shared bytes");
static_assert(IgemmTile<64, 128, 8, Math::Tf32>::SMEM_BYTES == 56320, "64x128 tf32 shared bytes");
static_assert(IgemmTile<48, 128, 6, Math::Tf32>::SMEM_BYTES == 51712, "48x128 tf32 shared bytes");
static_assert(IgemmTile<128, 128, 8, Math::Bf16>::SMEM_BYTES == 82944, "128x128 bf16 shared bytes");
static_assert(IgemmTile<64, 128, 8, Math::Bf16>::SMEM_BYTES == 62464, "64x128 bf16 shared bytes");
static_assert(IgemmTile<48, 128, 6, Math::Bf16>::SMEM_BYTES == 57344, "48x128 bf16 shared bytes");

// ---- bias gradient ---------------------------------------------------------------------------

#define BIAS_THREADS 256

// grid (c_out, splits), block BIAS_THREADS. Block (c, s) sums dY over channel c of images
// [s·img_chunk, (s+1)·img_chunk) into db[s·c_out + c]: per-thread strided sums in a fixed order,
// then a fixed shared-memory tree.
extern "C" __global__ void __launch_bounds__(BIAS_THREADS)
    conv_backward_bias_f32(ConvParams p, const float* dy, float* db) {
    __shared__ float red[BIAS_THREADS];
    const int c = blockIdx.x, split = blockIdx.y, t = threadIdx.x;
    const int ohw = p.out_h * p.out_w;
    const int img_end = min(p.n, (split + 1) * p.img_chunk);
    float acc = 0.0f;
    for (int img = split * p.img_chunk; img < img_end; ++img) {
        const float* map = dy + (long long)(img * p.c_out + c) * ohw;
        for (int i = t; i < ohw; i += BIAS_THREADS) acc += map[i];
    }
    red[t] = acc;
    __syncthreads();
    for (int s = BIAS_THREADS / 2; s > 0; s >>= 1) {
        if (t < s) red[t] += red[t + s];
        __syncthreads();
    }
    if (t == 0) db[split * p.c_out + c] = red[0];
}
