// ReLU and tanh (`src/ops/activation.rs`). Backward passes take the forward output y.
// grid ceil(n / 256), block 256.

#include "common.cuh"

extern "C" __global__ void relu_forward_f32(int n, const float* x, float* y) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

extern "C" __global__ void relu_backward_f32(int n, const float* y, const float* dy, float* dx) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

extern "C" __global__ void tanh_forward_f32(int n, const float* x, float* y) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = tanhf(x[i]);
}

// dx = dy·(1 - y²)
extern "C" __global__ void tanh_backward_f32(int n, const float* y, const float* dy, float* dx) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) dx[i] = dy[i] * (1.0f - y[i] * y[i]);
}
