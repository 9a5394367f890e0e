// Dropout as the paper writes it (`src/ops/dropout.rs`): in training y = x where kept, else 0,
// no rescaling; at test y = (1 - p)·x. Unit (s, u) is kept iff
// uniform(word(seed, stream, s·units_total + unit_offset + u)) >= p: the mask is regenerated,
// never stored, and matches the CPU's bit for bit.
// grid ceil(n·units / 256), block 256.

#include "common.cuh"
#include "params.cuh"
#include "philox.cuh"

__device__ __forceinline__ bool dropout_keep(const DropoutParams& p, int i) {
    const int s = i / p.units, u = i - s * p.units;
    const unsigned long long index =
        (unsigned long long)s * p.units_total + p.unit_offset + u;
    return philox_uniform(philox_word(p.seed, p.stream, index)) >= p.p;
}

extern "C" __global__ void dropout_forward_train_f32(DropoutParams p, const float* x, float* y) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < p.n * p.units) y[i] = dropout_keep(p, i) ? x[i] : 0.0f;
}

extern "C" __global__ void dropout_backward_f32(DropoutParams p, const float* dy, float* dx) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < p.n * p.units) dx[i] = dropout_keep(p, i) ? dy[i] : 0.0f;
}

// scale = 1 - p, rounded once from f64 by the host as the reference does.
extern "C" __global__ void dropout_forward_test_f32(int n, float scale, const float* x,
                                                    float* y) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = x[i] * scale;
}
