// Overlapping max pooling (`src/ops/pool.rs`). The gradient of a window goes to its FIRST
// maximum in row-major order. The forward pass records, per output, where in its window that
// maximum was (`argmax`: ky·size + kx, as a float); the backward pass is a gather: each input
// element sums, in (oy, ox) order, the gradients of the windows covering it whose recorded
// maximum it is. No atomics, no second look at the input, and bit-identical to the reference's
// scatter. Both are 2D over a map's rows and columns (no division by the map's sizes) with the
// map in grid z; 3x3 windows (the paper's) are unrolled.
// block (32, 8); grid (ceil(width / 32), ceil(height / 8), min(maps, 65535)).

#include "common.cuh"
#include "params.cuh"

// The first maximum of window (oy, ox) of `map`: its position in the window, and its value.
// Strict >, so ties keep the earlier element, as `ops::pool::argmax_in_window`.
template <int SIZE>
__device__ __forceinline__ int pool_window(const PoolParams& p, const float* map, int oy, int ox,
                                           float& best_v) {
    const int size = SIZE > 0 ? SIZE : p.size;
    const float* origin = map + oy * p.stride * p.w + ox * p.stride;
    int best = 0;
    best_v = origin[0];
#pragma unroll
    for (int ky = 0; ky < size; ++ky)
#pragma unroll
        for (int kx = 0; kx < size; ++kx) {
            const float v = origin[ky * p.w + kx];
            if (v > best_v) {
                best = ky * size + kx;
                best_v = v;
            }
        }
    return best;
}

extern "C" __global__ void max_pool_forward_f32(PoolParams p, const float* x, float* y,
                                                float* argmax) {
    const int ox = blockIdx.x * blockDim.x + threadIdx.x;
    const int oy = blockIdx.y * blockDim.y + threadIdx.y;
    if (ox >= p.out_w || oy >= p.out_h) return;
    const int ohw = p.out_h * p.out_w;
    for (int m = blockIdx.z; m < p.maps; m += gridDim.z) {
        const float* map = x + (long long)m * p.h * p.w;
        float v;
        const int at = p.size == 3 ? pool_window<3>(p, map, oy, ox, v)
                                   : pool_window<0>(p, map, oy, ox, v);
        const long long o = (long long)m * ohw + oy * p.out_w + ox;
        y[o] = v;
        argmax[o] = (float)at;
    }
}

// The gradient reaching input (iy, ix) of one map from the windows oy0..oy1 x ox0..ox1 covering
// it, in (oy, ox) order. SPAN > 0: at most SPAN windows per axis (the paper's 3x3 stride 2: 2),
// unrolled; 0: any.
template <int SPAN>
__device__ __forceinline__ float pool_gather(const PoolParams& p, const float* am, const float* dm,
                                             int iy, int ix, int oy0, int oy1, int ox0, int ox1) {
    float acc = 0.0f;
    const int ny = SPAN > 0 ? SPAN : oy1 - oy0 + 1, nx = SPAN > 0 ? SPAN : ox1 - ox0 + 1;
#pragma unroll
    for (int dy = 0; dy < ny; ++dy)
#pragma unroll
        for (int dx = 0; dx < nx; ++dx) {
            const int oy = oy0 + dy, ox = ox0 + dx;
            if (oy > oy1 || ox > ox1) continue;
            const int o = oy * p.out_w + ox;
            const float here = (float)((iy - oy * p.stride) * p.size + ix - ox * p.stride);
            if (am[o] == here) acc += dm[o];
        }
    return acc;
}

extern "C" __global__ void max_pool_backward_f32(PoolParams p, const float* argmax,
                                                 const float* dy, float* dx) {
    const int ix = blockIdx.x * blockDim.x + threadIdx.x;
    const int iy = blockIdx.y * blockDim.y + threadIdx.y;
    if (ix >= p.w || iy >= p.h) return;
    // Windows oy with oy·stride <= iy < oy·stride + size, likewise ox.
    const FastDiv stride(p.stride, p.stride_m, p.stride_l);
    const int oy0 = iy >= p.size ? stride.div(iy - p.size) + 1 : 0;
    const int oy1 = min(stride.div(iy), p.out_h - 1);
    const int ox0 = ix >= p.size ? stride.div(ix - p.size) + 1 : 0;
    const int ox1 = min(stride.div(ix), p.out_w - 1);
    const int ohw = p.out_h * p.out_w;
    const bool paper = p.size == 3 && p.stride == 2;
    for (int m = blockIdx.z; m < p.maps; m += gridDim.z) {
        const float* am = argmax + (long long)m * ohw;
        const float* dm = dy + (long long)m * ohw;
        dx[(long long)m * p.h * p.w + iy * p.w + ix] =
            paper ? pool_gather<2>(p, am, dm, iy, ix, oy0, oy1, ox0, ox1)
                  : pool_gather<0>(p, am, dm, iy, ix, oy0, oy1, ox0, ox1);
    }
}
