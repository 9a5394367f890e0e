// Local response normalisation across channels (`src/ops/lrn.rs`): one thread per element,
// windows clipped to the element's channel group. The window sums are recomputed rather than
// stored: at most `size` terms each, read from L1.
// grid ceil(n·c·hw / 256), block 256.

#include "common.cuh"
#include "params.cuh"

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

extern "C" __global__ void lrn_forward_f32(LrnParams p, const float* x, float* y) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)p.n * p.c * p.hw) return;
    const int pix = i % p.hw, c = (i / p.hw) % p.c, img = i / ((long long)p.hw * p.c);
    y[i] = x[i] * powf(lrn_scale(p, x, img, c, pix), -p.beta);
}

// dx[j] = dy[j]·s[j]^-β − 2α'β·x[j]·Σ_{c: j in W(c)} dy[c]·y[c]/s[c]. Windows are symmetric
// within a group, so the c whose window holds j are j's own window.
extern "C" __global__ void lrn_backward_f32(LrnParams p, const float* x, const float* y,
                                            const float* dy, float* dx) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)p.n * p.c * p.hw) return;
    const int pix = i % p.hw, j = (i / p.hw) % p.c, img = i / ((long long)p.hw * p.c);
    const int g0 = j / p.group_c * p.group_c;
    const int lo = max(j - p.half, g0), hi = min(j + p.half + 1, g0 + p.group_c);
    const long long col = (long long)img * p.c * p.hw + pix;
    float acc = 0.0f;
    for (int c = lo; c < hi; ++c) {
        const long long ic = col + (long long)c * p.hw;
        acc += dy[ic] * y[ic] / lrn_scale(p, x, img, c, pix);
    }
    dx[i] = dy[i] * powf(lrn_scale(p, x, img, j, pix), -p.beta) - p.two_alpha_beta * x[i] * acc;
}
