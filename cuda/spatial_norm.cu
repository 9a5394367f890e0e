// Same-map ("spatial") response normalisation (`src/ops/spatial_norm.rs`), one thread per
// element. The backward pass needs the scale of every pixel in each window; a first kernel writes
// the scales to a workspace so that each is computed once instead of size² times.
// grid ceil(maps·h·w / 256), block 256.

#include "common.cuh"
#include "params.cuh"

// k + α'·Σ x² over the clipped size x size window centred on (py, px), row-major order.
__device__ __forceinline__ float spatial_scale(const SpatialNormParams& p, const float* map,
                                               int py, int px) {
    const int y0 = max(py - p.half, 0), y1 = min(py + p.half + 1, p.h);
    const int x0 = max(px - p.half, 0), x1 = min(px + p.half + 1, p.w);
    float sum = 0.0f;
    for (int qy = y0; qy < y1; ++qy)
        for (int qx = x0; qx < x1; ++qx) {
            const float v = map[qy * p.w + qx];
            sum += v * v;
        }
    return p.k + p.alpha * sum;
}

extern "C" __global__ void spatial_norm_forward_f32(SpatialNormParams p, const float* x,
                                                    float* y) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const int hw = p.h * p.w;
    if (i >= (long long)p.maps * hw) return;
    const int pix = i % hw;
    const float* map = x + (i - pix);
    y[i] = x[i] * powf(spatial_scale(p, map, pix / p.w, pix % p.w), -p.beta);
}

extern "C" __global__ void spatial_norm_scale_f32(SpatialNormParams p, const float* x,
                                                  float* scale) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const int hw = p.h * p.w;
    if (i >= (long long)p.maps * hw) return;
    const int pix = i % hw;
    scale[i] = spatial_scale(p, x + (i - pix), pix / p.w, pix % p.w);
}

// dx[q] = dy[q]·s[q]^-β − 2α'β·x[q]·Σ_{p: q in W(p)} dy[p]·y[p]/s[p], with s from
// spatial_norm_scale_f32. Windows are symmetric, so the p whose window holds q are q's own.
extern "C" __global__ void spatial_norm_backward_f32(SpatialNormParams p, const float* x,
                                                     const float* y, const float* dy,
                                                     const float* scale, float* dx) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const int hw = p.h * p.w;
    if (i >= (long long)p.maps * hw) return;
    const int pix = i % hw;
    const long long m = i - pix;
    const int qy = pix / p.w, qx = pix % p.w;
    const int y0 = max(qy - p.half, 0), y1 = min(qy + p.half + 1, p.h);
    const int x0 = max(qx - p.half, 0), x1 = min(qx + p.half + 1, p.w);
    float acc = 0.0f;
    for (int py = y0; py < y1; ++py)
        for (int px = x0; px < x1; ++px) {
            const long long ip = m + py * p.w + px;
            acc += dy[ip] * y[ip] / scale[ip];
        }
    dx[i] = dy[i] * powf(scale[i], -p.beta) - p.two_alpha_beta * x[i] * acc;
}
