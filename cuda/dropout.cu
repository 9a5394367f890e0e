// Dropout as the paper writes it (`src/ops/dropout.rs`): in training y = x where kept, else 0,
// no rescaling; at test y = (1 - p)·x. Unit (s, u) is kept iff
// uniform(word(seed, stream, (first_sample + s)·units_total + unit_offset + u)) >= p: the mask is
// regenerated, never stored, and matches the CPU's bit for bit.

#include "common.cuh"
#include "params.cuh"
#include "philox.cuh"

// One thread per Philox block of a sample's units: the block's four words decide the (up to)
// four units whose indices fall in it, so one Philox call serves four outputs.
// grid (ceil(slots / 256), n) with slots = units / 4 + 2 (the blocks a sample's units can
// touch), block 256.
template <class Apply>
__device__ __forceinline__ void dropout_block(const DropoutParams& p, Apply apply) {
    const int s = blockIdx.y;
    const unsigned long long first =
        (unsigned long long)(p.first_sample + s) * p.units_total + p.unit_offset;
    const unsigned long long b = first / 4 + blockIdx.x * blockDim.x + threadIdx.x;
    if (4 * b >= first + p.units) return;
    unsigned c[4] = {(unsigned)b, (unsigned)(b >> 32), (unsigned)p.stream,
                     (unsigned)(p.stream >> 32)};
    philox4x32_10(c, (unsigned)p.seed, (unsigned)(p.seed >> 32));
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const long long u = (long long)(4 * b + j) - (long long)first;
        if (u >= 0 && u < p.units) apply((long long)s * p.units + u, philox_uniform(c[j]) >= p.p);
    }
}

extern "C" __global__ void dropout_forward_train_f32(DropoutParams p, const float* x, float* y) {
    dropout_block(p, [&](long long i, bool keep) { y[i] = keep ? x[i] : 0.0f; });
}

extern "C" __global__ void dropout_backward_f32(DropoutParams p, const float* dy, float* dx) {
    dropout_block(p, [&](long long i, bool keep) { dx[i] = keep ? dy[i] : 0.0f; });
}

// scale = 1 - p, rounded once from f64 by the host as the reference does.
extern "C" __global__ void dropout_forward_test_f32(int n, float scale, const float* x,
                                                    float* y) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = x[i] * scale;
}
