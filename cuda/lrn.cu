// Local response normalisation across channels (`src/ops/lrn.rs`), windows clipped to the
// element's channel group.
//
// One thread per pixel column (image, pixel) walks its channels in order, keeping the window's
// values in registers: every input is read once, every window sum is formed once per output from
// registers (in channel order, as the reference sums), and loads and stores are coalesced across
// the threads of a warp (consecutive pixels). Channels outside the group enter the window as
// zeros, which is exactly the clipping (adding +0 changes no sum). Window sizes 3, 5, 7 and 9
// (half 1 to 4) are compiled so; any other size takes the per-element kernels at the end, which
// read each window from L1.
// grid ceil(n·hw / 256), block 256.

#include "common.cuh"
#include "params.cuh"

// s^-β for a scale s = k + α'·Σ x² >= k > 0, as 2^(-β·log2 s).
__device__ __forceinline__ float lrn_pow(const LrnParams& p, float s) {
    return fast_exp2(-p.beta * fast_log2(s));
}

template <int H>
__device__ __forceinline__ float lrn_scale_of(const LrnParams& p, const float (&w)[2 * H + 1]) {
    float sum = 0.0f;
#pragma unroll
    for (int i = 0; i < 2 * H + 1; ++i) sum += w[i] * w[i];
    return p.k + p.alpha * sum;
}

// Element offsets fit 32 bits (the launcher checks lengths), so each access is one multiply-add
// of a base pointer; `col` is the column's offset at channel 0, `hw` the channel stride.
template <int H>
__device__ __forceinline__ void lrn_forward_column(const LrnParams& p, const float* x, float* y,
                                                   int col) {
    for (int g0 = 0; g0 < p.c; g0 += p.group_c) {
        const int end = g0 + p.group_c;
        // w[i] = x at channel c - H + i (zero outside the group), for c = g0.
        float w[2 * H + 1];
#pragma unroll
        for (int i = 0; i < 2 * H + 1; ++i) {
            const int ch = g0 - H + i;
            w[i] = ch >= g0 && ch < end ? x[col + ch * p.hw] : 0.0f;
        }
        int at = col + g0 * p.hw;  // channel c
        const int lead = (H + 1) * p.hw;  // channel c + H + 1 from c
        const auto step = [&](bool next_in) {
            y[at] = w[H] * lrn_pow(p, lrn_scale_of<H>(p, w));
#pragma unroll
            for (int i = 0; i < 2 * H; ++i) w[i] = w[i + 1];
            w[2 * H] = next_in ? x[at + lead] : 0.0f;
            at += p.hw;
        };
        // While the window's next channel is inside the group, with no test; then the last H.
        const int body = max(g0, end - H - 1);
        for (int c = g0; c < body; ++c) step(true);
        for (int c = body; c < end; ++c) step(c + H + 1 < end);
    }
}

// dx[j] = dy[j]·s[j]^-β − 2α'β·x[j]·Σ_{c ∈ W(j)} u[c], u[c] = dy[c]·y[c] / s[c] (windows are
// symmetric within a group, so the c whose window holds j are j's own window). One pass over
// the lead channel c: x[c] enters; s and u of m = c - H are formed; dx of j = c - 2H is done.
template <int H>
__device__ __forceinline__ void lrn_backward_column(const LrnParams& p, const float* x,
                                                    const float* y, const float* dy, float* dx,
                                                    int col) {
    for (int g0 = 0; g0 < p.c; g0 += p.group_c) {
        const int end = g0 + p.group_c;
        float xw[2 * H + 1];  // x at c - 2H .. c
        float uw[2 * H + 1];  // u at c - 3H .. c - H
        float sw[H + 1];      // s at c - 2H .. c - H
#pragma unroll
        for (int i = 0; i < 2 * H + 1; ++i) xw[i] = uw[i] = 0.0f;
#pragma unroll
        for (int i = 0; i < H + 1; ++i) sw[i] = 1.0f;
        int at = col + g0 * p.hw;  // channel c; m and j lie H and 2H channels back
        const int back_m = H * p.hw, back_j = 2 * H * p.hw;
        // One step of the lead channel c; `checked` tests which of c, m and j lie in the group
        // (the first and last 2H steps), the steps between need no test.
        const auto step = [&](int c, bool checked) {
#pragma unroll
            for (int i = 0; i < 2 * H; ++i) xw[i] = xw[i + 1];
            xw[2 * H] = !checked || c < end ? x[at] : 0.0f;
            const int m = c - H, j = c - 2 * H;
#pragma unroll
            for (int i = 0; i < 2 * H; ++i) uw[i] = uw[i + 1];
#pragma unroll
            for (int i = 0; i < H; ++i) sw[i] = sw[i + 1];
            const bool m_in = !checked || (m >= g0 && m < end);
            const float s = lrn_scale_of<H>(p, xw);
            sw[H] = m_in ? s : 1.0f;
            uw[2 * H] = m_in ? dy[at - back_m] * y[at - back_m] * fast_rcp(s) : 0.0f;
            if (!checked || j >= g0) {
                float acc = 0.0f;
#pragma unroll
                for (int i = 0; i < 2 * H + 1; ++i) acc += uw[i];
                dx[at - back_j] =
                    dy[at - back_j] * lrn_pow(p, sw[0]) - p.two_alpha_beta * xw[0] * acc;
            }
            at += p.hw;
        };
        const int body = max(g0 + 2 * H, end);  // c in [g0 + 2H, end): c, m and j all inside
        for (int c = g0; c < g0 + 2 * H; ++c) step(c, true);
        for (int c = g0 + 2 * H; c < end; ++c) step(c, false);
        for (int c = body; c < end + 2 * H; ++c) step(c, true);
    }
}

// ---- any window size: one thread per element, windows read from L1 ---------------------------

// k + α'·Σ_{j in W(c)} x[j]² at pixel `pix` of sample `img`, summed in channel order.
__device__ __forceinline__ float lrn_scale(const LrnParams& p, const float* x, int img, int c,
                                           int pix) {
    const int g0 = c / p.group_c * p.group_c;
    const int lo = max(c - p.half, g0), hi = min(c + p.half + 1, g0 + p.group_c);
    const float* col = x + (long long)img * p.c * p.hw + pix;
    float sum = 0.0f;
    for (int j = lo; j < hi; ++j) {
        const float v = col[(long long)j * p.hw];
        sum += v * v;
    }
    return p.k + p.alpha * sum;
}

__device__ __forceinline__ void lrn_forward_element(const LrnParams& p, const float* x, float* y,
                                                    long long i) {
    const int pix = i % p.hw, c = (i / p.hw) % p.c, img = i / ((long long)p.hw * p.c);
    y[i] = x[i] * lrn_pow(p, lrn_scale(p, x, img, c, pix));
}

__device__ __forceinline__ void lrn_backward_element(const LrnParams& p, const float* x,
                                                     const float* y, const float* dy, float* dx,
                                                     long long i) {
    const int pix = i % p.hw, j = (i / p.hw) % p.c, img = i / ((long long)p.hw * p.c);
    const int g0 = j / p.group_c * p.group_c;
    const int lo = max(j - p.half, g0), hi = min(j + p.half + 1, g0 + p.group_c);
    const long long col = (long long)img * p.c * p.hw + pix;
    float acc = 0.0f;
    for (int c = lo; c < hi; ++c) {
        const long long ic = col + (long long)c * p.hw;
        acc += dy[ic] * y[ic] / lrn_scale(p, x, img, c, pix);
    }
    dx[i] = dy[i] * lrn_pow(p, lrn_scale(p, x, img, j, pix)) - p.two_alpha_beta * x[i] * acc;
}

// ---- the kernels ------------------------------------------------------------------------------

// grid ceil(n·hw / 256) for half 1..4, else ceil(n·c·hw / 256); block 256 (the launcher decides
// by `lrn_by_column`, the same rule).
__device__ __forceinline__ bool lrn_by_column(const LrnParams& p) { return p.half >= 1 && p.half <= 4; }

extern "C" __global__ void lrn_forward_f32(LrnParams p, const float* x, float* y) {
    const long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (!lrn_by_column(p)) {
        if (t < (long long)p.n * p.c * p.hw) lrn_forward_element(p, x, y, t);
        return;
    }
    if (t >= (long long)p.n * p.hw) return;
    const int img = t / p.hw, pix = t - (long long)img * p.hw;
    const int col = img * p.c * p.hw + pix;
    switch (p.half) {
        case 1: lrn_forward_column<1>(p, x, y, col); break;
        case 2: lrn_forward_column<2>(p, x, y, col); break;
        case 3: lrn_forward_column<3>(p, x, y, col); break;
        default: lrn_forward_column<4>(p, x, y, col); break;
    }
}

extern "C" __global__ void lrn_backward_f32(LrnParams p, const float* x, const float* y,
                                            const float* dy, float* dx) {
    const long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (!lrn_by_column(p)) {
        if (t < (long long)p.n * p.c * p.hw) lrn_backward_element(p, x, y, dy, dx, t);
        return;
    }
    if (t >= (long long)p.n * p.hw) return;
    const int img = t / p.hw, pix = t - (long long)img * p.hw;
    const int col = img * p.c * p.hw + pix;
    switch (p.half) {
        case 1: lrn_backward_column<1>(p, x, y, dy, dx, col); break;
        case 2: lrn_backward_column<2>(p, x, y, dy, dx, col); break;
        case 3: lrn_backward_column<3>(p, x, y, dy, dx, col); break;
        default: lrn_backward_column<4>(p, x, y, dy, dx, col); break;
    }
}
