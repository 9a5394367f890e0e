// Overlapping max pooling (`src/ops/pool.rs`). The gradient of a window goes to its FIRST
// maximum in row-major order. The backward pass is a gather: each input element recomputes the
// argmax of every window covering it and sums the gradients of those that chose it, in (oy, ox)
// order — no atomics, and bit-identical to the reference's scatter.
// grid ceil(elements / 256), block 256.

#include "common.cuh"
#include "params.cuh"

// Index within the map of the first maximum of window (oy, ox), exactly as
// `ops::pool::argmax_in_window`: strict >, so ties keep the earlier element.
__device__ __forceinline__ int pool_argmax(const PoolParams& p, const float* map, int oy, int ox) {
    int best = oy * p.stride * p.w + ox * p.stride;
    float best_v = map[best];
    for (int ky = 0; ky < p.size; ++ky)
        for (int kx = 0; kx < p.size; ++kx) {
            const int i = (oy * p.stride + ky) * p.w + ox * p.stride + kx;
            const float v = map[i];
            if (v > best_v) {
                best = i;
                best_v = v;
            }
        }
    return best;
}

extern "C" __global__ void max_pool_forward_f32(PoolParams p, const float* x, float* y) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const int ohw = p.out_h * p.out_w;
    if (i >= (long long)p.maps * ohw) return;
    const long long m = i / ohw;
    const int o = i - m * ohw;
    const float* map = x + m * p.h * p.w;
    y[i] = map[pool_argmax(p, map, o / p.out_w, o % p.out_w)];
}

extern "C" __global__ void max_pool_backward_f32(PoolParams p, const float* x, const float* dy,
                                                 float* dx) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const int hw = p.h * p.w;
    if (i >= (long long)p.maps * hw) return;
    const long long m = i / hw;
    const int q = i - m * hw;
    const int iy = q / p.w, ix = q % p.w;
    const float* map = x + m * hw;
    const float* dmap = dy + m * p.out_h * p.out_w;
    // Windows oy with oy·stride <= iy < oy·stride + size.
    const int oy0 = iy >= p.size ? (iy - p.size) / p.stride + 1 : 0;
    const int oy1 = min(iy / p.stride, p.out_h - 1);
    const int ox0 = ix >= p.size ? (ix - p.size) / p.stride + 1 : 0;
    const int ox1 = min(ix / p.stride, p.out_w - 1);
    float acc = 0.0f;
    for (int oy = oy0; oy <= oy1; ++oy)
        for (int ox = ox0; ox <= ox1; ++ox)
            if (pool_argmax(p, map, oy, ox) == q) acc += dmap[oy * p.out_w + ox];
    dx[i] = acc;
}
