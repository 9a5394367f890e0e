// Momentum SGD with weight decay, exactly `ops::sgd::update_naive` in f32:
//   v = ((momentum·v) - (decay·w)) - (lr·grad);  w = w + v
// Every operation is an explicitly rounded intrinsic, so nvcc cannot contract them into fused
// multiply-adds and the result is bit-identical to the CPU's.
// grid ceil(n / 256), block 256.

#include "common.cuh"
#include "params.cuh"

extern "C" __global__ void sgd_update_f32(SgdParams p, float* w, float* v, const float* grad) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= p.n) return;
    const float wi = w[i];
    const float vi = __fsub_rn(__fsub_rn(__fmul_rn(p.momentum, v[i]), __fmul_rn(p.decay, wi)),
                               __fmul_rn(p.lr, grad[i]));
    v[i] = vi;
    w[i] = __fadd_rn(wi, vi);
}
