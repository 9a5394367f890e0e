// The fixed-order reduction of split partial sums (split-K GEMMs, the conv bias gradient): the
// deterministic alternative to float atomics.

#include "common.cuh"
#include "params.cuh"

// out[i] = ((parts[i] + parts[len + i]) + ...) + bias[(i / bias_div) % bias_mod].
// bias may be null. grid ceil(len / 256), block 256.
extern "C" __global__ void reduce_splits_f32(ReduceParams p, const float* parts, const float* bias,
                                             float* out) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= p.len) return;
    float acc = parts[i];
    for (int s = 1; s < p.splits; ++s) acc += parts[(long long)s * p.len + i];
    if (bias) acc += bias[(i / p.bias_div) % p.bias_mod];
    out[i] = acc;
}
