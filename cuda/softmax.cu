// Softmax with cross-entropy per row, and top-k for evaluation (`src/ops/softmax.rs`). One block
// of SOFTMAX_THREADS threads per row; reductions use a fixed shared-memory tree, so results do
// not depend on scheduling.

#include "common.cuh"
#include "params.cuh"

#define SOFTMAX_THREADS 256

// probs = softmax(row), dlogits = (probs - onehot(label))·inv_n, loss[row] = -log probs[label]
// computed as -(z[label] - max - log Σ exp(z - max)). Labels come as floats (exact below 2^24);
// one that is not a class makes its row's loss NaN (the host sees it; nothing reads out of
// bounds). grid n, block SOFTMAX_THREADS.
extern "C" __global__ void __launch_bounds__(SOFTMAX_THREADS)
    softmax_xent_f32(SoftmaxParams p, const float* logits, const float* labels, float* probs,
                     float* dlogits, float* loss) {
    __shared__ float red[SOFTMAX_THREADS];
    const int row = blockIdx.x, t = threadIdx.x;
    const long long off = (long long)row * p.classes;
    const float* z = logits + off;

    float mx = -INFINITY;
    for (int c = t; c < p.classes; c += SOFTMAX_THREADS) mx = fmaxf(mx, z[c]);
    red[t] = mx;
    __syncthreads();
    for (int s = SOFTMAX_THREADS / 2; s > 0; s >>= 1) {
        if (t < s) red[t] = fmaxf(red[t], red[t + s]);
        __syncthreads();
    }
    mx = red[0];
    __syncthreads();  // everyone has read red[0] before it is reused

    float sum = 0.0f;
    for (int c = t; c < p.classes; c += SOFTMAX_THREADS) sum += expf(z[c] - mx);
    red[t] = sum;
    __syncthreads();
    for (int s = SOFTMAX_THREADS / 2; s > 0; s >>= 1) {
        if (t < s) red[t] += red[t + s];
        __syncthreads();
    }
    sum = red[0];

    const float lf = labels[row];
    const bool valid = lf >= 0.0f && lf < (float)p.classes && lf == floorf(lf);
    const int label = valid ? (int)lf : -1;
    for (int c = t; c < p.classes; c += SOFTMAX_THREADS) {
        const float pr = expf(z[c] - mx) / sum;
        probs[off + c] = pr;
        dlogits[off + c] = (pr - (c == label ? 1.0f : 0.0f)) * p.inv_n;
    }
    if (t == 0) loss[row] = valid ? -(z[label] - mx - logf(sum)) : NAN;
}

// Whether (va, ia) ranks before (vb, ib): higher score first, ties to the lower index.
__device__ __forceinline__ bool topk_before(float va, int ia, float vb, int ib) {
    return va > vb || (va == vb && ia < ib);
}

// out[row·k + r] = index of the r-th highest score of the row (ties to the lower index), as a
// float. k passes, each a block-wide arg-max over the entries ranked after the previous pick.
// grid n, block SOFTMAX_THREADS.
extern "C" __global__ void __launch_bounds__(SOFTMAX_THREADS)
    top_k_f32(TopKParams p, const float* scores, float* out) {
    __shared__ float red_v[SOFTMAX_THREADS];
    __shared__ int red_i[SOFTMAX_THREADS];
    const int row = blockIdx.x, t = threadIdx.x;
    const float* z = scores + (long long)row * p.classes;
    float prev_v = 0.0f;
    int prev_i = -1;  // -1: nothing picked yet
    for (int r = 0; r < p.k; ++r) {
        float best_v = 0.0f;
        int best_i = -1;
        for (int c = t; c < p.classes; c += SOFTMAX_THREADS) {
            const float v = z[c];
            const bool after = prev_i < 0 || topk_before(prev_v, prev_i, v, c);
            if (after && (best_i < 0 || topk_before(v, c, best_v, best_i))) {
                best_v = v;
                best_i = c;
            }
        }
        red_v[t] = best_v;
        red_i[t] = best_i;
        __syncthreads();
        for (int s = SOFTMAX_THREADS / 2; s > 0; s >>= 1) {
            if (t < s && red_i[t + s] >= 0 &&
                (red_i[t] < 0 || topk_before(red_v[t + s], red_i[t + s], red_v[t], red_i[t]))) {
                red_v[t] = red_v[t + s];
                red_i[t] = red_i[t + s];
            }
            __syncthreads();
        }
        prev_v = red_v[0];
        prev_i = red_i[0];
        if (t == 0) out[(long long)row * p.k + r] = (float)prev_i;
        __syncthreads();  // everyone has read the pick before the next pass overwrites it
    }
}
