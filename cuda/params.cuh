// Launch parameter structs of every kernel, passed by value. Each is mirrored field for field by
// a `#[repr(C)]` struct in `src/device/kernels/params.rs` (plain 4-byte int/float fields, 8-byte
// integers first where present), so the host side fills them and the launcher copies the bytes.

#pragma once

// Convolution, all passes (see `src/ops/conv.rs`). Padding after the input (`pad_end`) only shows
// up in `out_h`/`out_w`; the kernels treat every tap outside the input as zero.
struct ConvParams {
    int n, c_in, h, w;
    int c_out, out_h, out_w;
    int k, stride, pad;
    int groups, cin_g, cout_g;
    // Filter gradient: GEMM-K terms (of n·out_h·out_w) per split; a multiple of GEMM_BK.
    int k_chunk;
    // Bias gradient: images per split.
    int img_chunk;
    // Forward: apply ReLU to the output (the plan fused the ReLU that follows).
    int relu;
};

// Fully connected layer, all passes: x [n, inputs], w [outputs, inputs], y [n, outputs].
struct FcParams {
    int n, inputs, outputs;
    // GEMM-K terms per split (a multiple of GEMM_BK); the GEMM's K is the pass's reduction.
    int k_chunk;
};

// out[i] = Σ_s parts[s·len + i] (s ascending) + bias[(i / bias_div) % bias_mod] when bias given.
struct ReduceParams {
    int len, splits, bias_div, bias_mod;
};

// Local response normalisation across channels (`src/ops/lrn.rs`).
struct LrnParams {
    int n, c, hw;
    int group_c;  // channels per group: windows never leave their group
    int half;     // size / 2
    float k, alpha /* effective: already divided by size where configured */, beta;
    float two_alpha_beta;  // 2·α'·β, rounded once from f64 as the reference does
};

// Same-map response normalisation (`src/ops/spatial_norm.rs`).
struct SpatialNormParams {
    int maps, h, w;
    int half;  // size / 2
    float k, alpha /* effective */, beta, two_alpha_beta;
};

// Max pooling (`src/ops/pool.rs`); `maps` = n·c.
struct PoolParams {
    int maps, h, w, out_h, out_w, size, stride;
    // Division by `stride` as a multiply and a shift (FastDiv in common.cuh), from the host.
    unsigned stride_m, stride_l;
};

// Dropout (`src/ops/dropout.rs`): the 64-bit fields first so the layout has no inner padding.
struct DropoutParams {
    unsigned long long seed, stream;
    int n, units, units_total, unit_offset;
    float p;
    int first_sample;  // the slice's first sample in the global batch (data-parallel replicas)
};

// Softmax + cross-entropy over [n, classes] rows.
struct SoftmaxParams {
    int n, classes;
    float inv_n;  // 1/n rounded once from f64, as the reference does
};

// Top-k per row of [n, classes] scores.
struct TopKParams {
    int n, classes, k;
};

// Momentum SGD with weight decay (`src/ops/sgd.rs`).
struct SgdParams {
    int n;
    float momentum, lr;
    float decay;  // weight_decay·lr, rounded once from f64 as the reference does
};

// The sizes `src/device/kernels/params.rs` checks the mirrors against.
static_assert(sizeof(ConvParams) == 64, "ConvParams layout");
static_assert(sizeof(FcParams) == 16, "FcParams layout");
static_assert(sizeof(ReduceParams) == 16, "ReduceParams layout");
static_assert(sizeof(LrnParams) == 36, "LrnParams layout");
static_assert(sizeof(SpatialNormParams) == 32, "SpatialNormParams layout");
static_assert(sizeof(PoolParams) == 36, "PoolParams layout");
static_assert(sizeof(DropoutParams) == 40 && alignof(DropoutParams) == 8, "DropoutParams layout");
static_assert(sizeof(SoftmaxParams) == 12, "SoftmaxParams layout");
static_assert(sizeof(TopKParams) == 12, "TopKParams layout");
static_assert(sizeof(SgdParams) == 16, "SgdParams layout");
