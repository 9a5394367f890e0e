// Convolution as an implicit GEMM (no im2col buffer) on the shared tile loop of gemm.cuh, all
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

#include "common.cuh"
#include "gemm.cuh"
#include "params.cuh"

// ---- forward ---------------------------------------------------------------------------------

// A = the group's weights, [cog, cig·kk], contiguous along K.
struct ConvFwdA {
    const ConvParams& p;
    const float* w;
    int m0, g, k_end;
    bool ok = false;
    int base = 0;

    __device__ bool k_fastest() const { return true; }
    __device__ void init(int outer) {
        const int co = m0 + outer;
        const int kdim = p.cin_g * p.k * p.k;
        ok = co < p.cout_g;
        base = (g * p.cout_g + co) * kdim;
    }
    __device__ void fetch(int k, float (&r)[GEMM_A_E]) {
#pragma unroll
        for (int e = 0; e < GEMM_A_E; ++e) r[e] = (ok && k + e < k_end) ? w[base + k + e] : 0.0f;
    }
};

// B = the implicit im2col matrix, [cig·kk, n·oh·ow]: column (img, oy, ox), row (ci, ky, kx).
struct ConvFwdB {
    const ConvParams& p;
    const float* x;
    int n0, g, k_end;
    bool ok = false;
    int base = 0, iy0 = 0, ix0 = 0;

    __device__ bool k_fastest() const { return false; }
    __device__ void init(int outer) {
        const int col = n0 + outer;
        const int ohw = p.out_h * p.out_w;
        ok = col < p.n * ohw;
        const int img = col / ohw, pix = col - img * ohw;
        const int oy = pix / p.out_w, ox = pix - oy * p.out_w;
        base = (img * p.c_in + g * p.cin_g) * p.h * p.w;
        iy0 = oy * p.stride - p.pad;
        ix0 = ox * p.stride - p.pad;
    }
    __device__ void fetch(int k, float (&r)[GEMM_B_E]) {
        const int kk = p.k * p.k;
        int ci = k / kk;
        int ky = (k - ci * kk) / p.k;
        int kx = k - ci * kk - ky * p.k;
#pragma unroll
        for (int e = 0; e < GEMM_B_E; ++e) {
            const int iy = iy0 + ky, ix = ix0 + kx;
            const bool in = ok && k + e < k_end && (unsigned)iy < (unsigned)p.h &&
                            (unsigned)ix < (unsigned)p.w;
            r[e] = in ? x[base + (ci * p.h + iy) * p.w + ix] : 0.0f;
            if (++kx == p.k) {
                kx = 0;
                if (++ky == p.k) {
                    ky = 0;
                    ++ci;
                }
            }
        }
    }
};

struct ConvFwdStore {
    const ConvParams& p;
    const float* b;
    float* y;
    int m0, n0, g;

    __device__ void store(int m, int n, float v) {
        const int co = m0 + m, col = n0 + n;
        const int ohw = p.out_h * p.out_w;
        if (co >= p.cout_g || col >= p.n * ohw) return;
        const int img = col / ohw, pix = col - img * ohw;
        const int c = g * p.cout_g + co;
        y[(img * p.c_out + c) * ohw + pix] = v + b[c];
    }
};

// grid (ceil(n·oh·ow / BN), ceil(cout_g / BM), groups), block GEMM_THREADS.
extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
    conv_forward_f32(ConvParams p, const float* x, const float* w, const float* b, float* y) {
    __shared__ GemmSmem sm;
    const int m0 = blockIdx.y * GEMM_BM, n0 = blockIdx.x * GEMM_BN, g = blockIdx.z;
    const int kdim = p.cin_g * p.k * p.k;
    ConvFwdA la{p, w, m0, g, kdim};
    ConvFwdB lb{p, x, n0, g, kdim};
    float acc[GEMM_TM][GEMM_TN];
    gemm_mainloop(sm, la, lb, 0, kdim, acc);
    ConvFwdStore st{p, b, y, m0, n0, g};
    gemm_store(st, acc);
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

// A[ci, (co, jy, jx)] = W[g·cog + co, ci, ry + s·jy, rx + s·jx].
struct ConvDataA {
    const ConvParams& p;
    const ConvPhase& ph;
    const float* w;
    int m0, k_end;
    bool ok = false;
    int base = 0;

    __device__ bool k_fastest() const { return true; }
    __device__ void init(int outer) {
        const int ci = m0 + outer;
        ok = ci < p.cin_g;
        base = ((ph.g * p.cout_g) * p.cin_g + ci) * p.k * p.k + ph.ry * p.k + ph.rx;
    }
    __device__ void fetch(int k, float (&r)[GEMM_A_E]) {
        const int taps = ph.kjy * ph.kjx;
        int co = k / taps;
        int jy = (k - co * taps) / ph.kjx;
        int jx = k - co * taps - jy * ph.kjx;
        const int s = p.stride;
#pragma unroll
        for (int e = 0; e < GEMM_A_E; ++e) {
            r[e] = (ok && k + e < k_end)
                       ? w[base + co * p.cin_g * p.k * p.k + s * (jy * p.k + jx)]
                       : 0.0f;
            if (++jx == ph.kjx) {
                jx = 0;
                if (++jy == ph.kjy) {
                    jy = 0;
                    ++co;
                }
            }
        }
    }
};

// B[(co, jy, jx), (img, qy, qx)] = dY[img, g·cog + co, qy + oyb - jy, qx + oxb - jx] or 0.
struct ConvDataB {
    const ConvParams& p;
    const ConvPhase& ph;
    const float* dy;
    int n0, k_end;
    bool ok = false;
    int base = 0, oy0 = 0, ox0 = 0;

    __device__ bool k_fastest() const { return false; }
    __device__ void init(int outer) {
        const int col = n0 + outer;
        const int q = ph.hq * ph.wq;
        ok = col < p.n * q;
        const int img = ok ? col / q : 0, rem = col - img * q;
        const int qy = ok ? rem / ph.wq : 0, qx = rem - qy * ph.wq;
        base = (img * p.c_out + ph.g * p.cout_g) * p.out_h * p.out_w;
        oy0 = qy + ph.oyb;
        ox0 = qx + ph.oxb;
    }
    __device__ void fetch(int k, float (&r)[GEMM_B_E]) {
        const int taps = ph.kjy * ph.kjx;
        int co = k / taps;
        int jy = (k - co * taps) / ph.kjx;
        int jx = k - co * taps - jy * ph.kjx;
#pragma unroll
        for (int e = 0; e < GEMM_B_E; ++e) {
            const int oy = oy0 - jy, ox = ox0 - jx;
            const bool in = ok && k + e < k_end && (unsigned)oy < (unsigned)p.out_h &&
                            (unsigned)ox < (unsigned)p.out_w;
            r[e] = in ? dy[base + (co * p.out_h + oy) * p.out_w + ox] : 0.0f;
            if (++jx == ph.kjx) {
                jx = 0;
                if (++jy == ph.kjy) {
                    jy = 0;
                    ++co;
                }
            }
        }
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
        dx[((img * p.c_in + ph.g * p.cin_g + ci) * p.h + iy) * p.w + ix] = v;
    }
};

// grid (ceil(n·ceil(h/s)·ceil(w/s) / BN), ceil(cin_g / BM), groups·s²), block GEMM_THREADS.
// Writes every element of dx (phases without taps write zeros).
extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
    conv_backward_data_f32(ConvParams p, const float* dy, const float* w, float* dx) {
    __shared__ GemmSmem sm;
    const ConvPhase ph(p, blockIdx.z);
    const int m0 = blockIdx.y * GEMM_BM, n0 = blockIdx.x * GEMM_BN;
    if (n0 >= ph.gemm_n(p)) return;  // this phase has fewer pixels than the largest: whole block
    const int kdim = ph.gemm_k(p);
    ConvDataA la{p, ph, w, m0, kdim};
    ConvDataB lb{p, ph, dy, n0, kdim};
    float acc[GEMM_TM][GEMM_TN];
    gemm_mainloop(sm, la, lb, 0, kdim, acc);
    ConvDataStore st{p, ph, dx, m0, n0};
    gemm_store(st, acc);
}

// ---- filter gradient -------------------------------------------------------------------------

// A[co, (img, pix)] = dY[img, g·cog + co, pix], contiguous along K within an image.
struct ConvFilterA {
    const ConvParams& p;
    const float* dy;
    int m0, g, k_end;
    bool ok = false;
    int chan = 0;

    __device__ bool k_fastest() const { return true; }
    __device__ void init(int outer) {
        const int co = m0 + outer;
        ok = co < p.cout_g;
        chan = g * p.cout_g + co;
    }
    __device__ void fetch(int k, float (&r)[GEMM_A_E]) {
        const int ohw = p.out_h * p.out_w;
        int img = k / ohw;
        int pix = k - img * ohw;
#pragma unroll
        for (int e = 0; e < GEMM_A_E; ++e) {
            r[e] = (ok && k + e < k_end) ? dy[(img * p.c_out + chan) * ohw + pix] : 0.0f;
            if (++pix == ohw) {
                pix = 0;
                ++img;
            }
        }
    }
};

// B[(img, oy, ox), (ci, ky, kx)] = X[img, g·cig + ci, oy·s - pad + ky, ox·s - pad + kx] or 0.
struct ConvFilterB {
    const ConvParams& p;
    const float* x;
    int n0, g, k_end;
    bool ok = false;
    int chan_off = 0, dy0 = 0, dx0 = 0;

    __device__ bool k_fastest() const { return false; }
    __device__ void init(int outer) {
        const int col = n0 + outer;
        const int kk = p.k * p.k;
        ok = col < p.cin_g * kk;
        const int ci = col / kk, ky = (col - ci * kk) / p.k, kx = col - ci * kk - ky * p.k;
        chan_off = (g * p.cin_g + ci) * p.h * p.w;
        dy0 = ky - p.pad;
        dx0 = kx - p.pad;
    }
    __device__ void fetch(int k, float (&r)[GEMM_B_E]) {
        const int ohw = p.out_h * p.out_w;
        int img = k / ohw;
        int oy = (k - img * ohw) / p.out_w;
        int ox = k - img * ohw - oy * p.out_w;
#pragma unroll
        for (int e = 0; e < GEMM_B_E; ++e) {
            const int iy = oy * p.stride + dy0, ix = ox * p.stride + dx0;
            const bool in = ok && k + e < k_end && (unsigned)iy < (unsigned)p.h &&
                            (unsigned)ix < (unsigned)p.w;
            r[e] = in ? x[img * p.c_in * p.h * p.w + chan_off + iy * p.w + ix] : 0.0f;
            if (++ox == p.out_w) {
                ox = 0;
                if (++oy == p.out_h) {
                    oy = 0;
                    ++img;
                }
            }
        }
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
        dw[(g * p.cout_g + co) * kdim + col] = v;
    }
};

// grid (ceil(cin_g·k² / BN), ceil(cout_g / BM), groups·splits), block GEMM_THREADS. Split s sums
// GEMM-K terms [s·k_chunk, (s+1)·k_chunk) into dw + s·w_len; with one split that is dw itself.
extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
    conv_backward_filter_f32(ConvParams p, const float* x, const float* dy, float* dw) {
    __shared__ GemmSmem sm;
    const int g = blockIdx.z % p.groups, split = blockIdx.z / p.groups;
    const int m0 = blockIdx.y * GEMM_BM, n0 = blockIdx.x * GEMM_BN;
    const int kdim = p.n * p.out_h * p.out_w;
    const int k_begin = split * p.k_chunk;
    const int k_end = min(kdim, k_begin + p.k_chunk);
    ConvFilterA la{p, dy, m0, g, k_end};
    ConvFilterB lb{p, x, n0, g, k_end};
    float acc[GEMM_TM][GEMM_TN];
    gemm_mainloop(sm, la, lb, k_begin, k_end, acc);
    const int w_len = p.c_out * p.cin_g * p.k * p.k;
    ConvFilterStore st{p, dw + (long long)split * w_len, m0, n0, g};
    gemm_store(st, acc);
}

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
