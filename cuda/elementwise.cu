// Small elementwise kernels the training step needs. grid ceil(n / 256), block 256.

#include "common.cuh"

extern "C" __global__ void add_assign_f32(int n, float* dst, const float* src) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) dst[i] += src[i];
}

extern "C" __global__ void fill_f32(int n, float value, float* dst) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) dst[i] = value;
}
