// Warp-level tensor-core products (`mma.sync`, sm_80 and later) in the two shapes the kernels use,
// with their operand conversions:
//
//   mma_tf32_m16n8k8   D[16x8] = A[16x8]·B[8x8] + C, A and B in TF32, C and D in fp32
//   mma_bf16_m16n8k16  D[16x8] = A[16x16]·B[16x8] + C, A and B in bf16, C and D in fp32
//
// A warp holds each matrix spread over its 32 lanes as the PTX ISA's fragment layouts say
// (section 9.7.14.5.7, "Matrix Fragments for mma.m16n8k8", .tf32; 9.7.14.5.8, "Matrix Fragments
// for mma.m16n8k16 with floating point type", .bf16; with groupID g = lane >> 2 and
// threadID_in_group t = lane % 4):
//
//   tf32 A: a0 (g, t)    a1 (g+8, t)    a2 (g, t+4)    a3 (g+8, t+4)          (row, column)
//   tf32 B: b0 (t, g)    b1 (t+4, g)
//   bf16 A: a0,a1 (g, 2t..2t+1)   a2,a3 (g+8, 2t..)   a4,a5 (g, 2t+8..)   a6,a7 (g+8, 2t+8..)
//           (two bf16 per 32-bit register, the lower index in the low half)
//   bf16 B: b0,b1 (2t..2t+1, g)   b2,b3 (2t+8.., g)
//   C, D:   c0,c1 (g, 2t..2t+1)   c2,c3 (g+8, 2t..2t+1)
//
// These functions take the fragments as registers; the kernels build them from shared memory.
// On the host executor (cuda/host/shim.h) each is a warp collective, like a shuffle: the lanes
// publish their registers, and each computes its four outputs from the fragments of the lanes
// the formulas above name, in fp32 with k ascending. selftest_mma_* (cuda/selftest.cu) checks
// those formulas against a plain matrix product, on the GPU as on the host.

#pragma once
#include "common.cuh"

// cvt.rna.tf32.f32: to nearest, ties away from zero; the TF32 value as its fp32 bit pattern
// (low 13 mantissa bits zero). Matches `ops::precision::to_tf32`.
__device__ __forceinline__ unsigned to_tf32(float x) {
#ifdef ALEXNET_HOST_EXECUTOR
    const unsigned bits = alexnet_emu::bit_cast<unsigned>(x);
    if ((bits & 0x7f800000u) == 0x7f800000u) return bits;  // infinities and NaN pass through
    return (bits + 0x1000u) & ~0x1fffu;
#else
    unsigned r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
    return r;
#endif
}

// Two floats as bf16, to nearest with ties to even (cvt.rn.bf16x2.f32): `lo` in the low half.
__device__ __forceinline__ unsigned pack_bf16x2(float lo, float hi) {
#ifdef ALEXNET_HOST_EXECUTOR
    const auto bf16 = [](float x) -> unsigned {
        const unsigned bits = alexnet_emu::bit_cast<unsigned>(x);
        if ((bits & 0x7fffffffu) > 0x7f800000u) return (bits >> 16) | 0x40u;  // a quiet NaN
        return (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
    };
    return bf16(lo) | (bf16(hi) << 16);
#else
    unsigned r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
#endif
}

#ifdef ALEXNET_HOST_EXECUTOR
namespace alexnet_emu_mma {
inline float from_bf16(unsigned half_bits) { return alexnet_emu::bit_cast<float>(half_bits << 16); }
inline float tf32_value(unsigned bits) { return alexnet_emu::bit_cast<float>(bits & ~0x1fffu); }
}  // namespace alexnet_emu_mma
#endif

__device__ __forceinline__ void mma_tf32_m16n8k8(float (&d)[4], const unsigned (&a)[4],
                                                 const unsigned (&b)[2]) {
#ifdef ALEXNET_HOST_EXECUTOR
    struct Regs {
        unsigned a[4], b[2];
    };
    const Regs mine{{a[0], a[1], a[2], a[3]}, {b[0], b[1]}};
    const Regs* all = static_cast<const Regs*>(alexnet_emu::warp_share(&mine, sizeof mine));
    const int lane = alexnet_emu::lane_id(), g = lane >> 2, t = lane & 3;
    // A(row, k) lives in lane (row % 8)·4 + k % 4, register (row >= 8) + 2·(k >= 4);
    // B(k, col) in lane col·4 + k % 4, register (k >= 4).
    const auto A = [&](int row, int k) {
        return alexnet_emu_mma::tf32_value(all[(row % 8) * 4 + k % 4].a[(row >= 8) + 2 * (k >= 4)]);
    };
    const auto B = [&](int k, int col) {
        return alexnet_emu_mma::tf32_value(all[col * 4 + k % 4].b[k >= 4]);
    };
    // This lane's outputs take rows g and g + 8 and columns 2t and 2t + 1: each read once.
    float rows[2][8], cols[2][8];
    for (int k = 0; k < 8; ++k) {
        rows[0][k] = A(g, k), rows[1][k] = A(g + 8, k);
        cols[0][k] = B(k, 2 * t), cols[1][k] = B(k, 2 * t + 1);
    }
    for (int i = 0; i < 4; ++i) {
        float sum = d[i];
        for (int k = 0; k < 8; ++k) sum = fmaf(rows[i >> 1][k], cols[i & 1][k], sum);
        d[i] = sum;
    }
#else
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

__device__ __forceinline__ void mma_bf16_m16n8k16(float (&d)[4], const unsigned (&a)[4],
                                                  const unsigned (&b)[2]) {
#ifdef ALEXNET_HOST_EXECUTOR
    struct Regs {
        unsigned a[4], b[2];
    };
    const Regs mine{{a[0], a[1], a[2], a[3]}, {b[0], b[1]}};
    const Regs* all = static_cast<const Regs*>(alexnet_emu::warp_share(&mine, sizeof mine));
    const int lane = alexnet_emu::lane_id(), g = lane >> 2, t = lane & 3;
    // A(row, k): lane (row % 8)·4 + (k % 8) / 2, register (row >= 8) + 2·(k >= 8), half k % 2;
    // B(k, col): lane col·4 + (k % 8) / 2, register (k >= 8), half k % 2.
    const auto half_of = [](unsigned reg, int h) { return (reg >> (16 * h)) & 0xffffu; };
    const auto A = [&](int row, int k) {
        const unsigned reg = all[(row % 8) * 4 + (k % 8) / 2].a[(row >= 8) + 2 * (k >= 8)];
        return alexnet_emu_mma::from_bf16(half_of(reg, k % 2));
    };
    const auto B = [&](int k, int col) {
        const unsigned reg = all[col * 4 + (k % 8) / 2].b[k >= 8];
        return alexnet_emu_mma::from_bf16(half_of(reg, k % 2));
    };
    // As in the TF32 product: rows g and g + 8, columns 2t and 2t + 1, each read once.
    float rows[2][16], cols[2][16];
    for (int k = 0; k < 16; ++k) {
        rows[0][k] = A(g, k), rows[1][k] = A(g + 8, k);
        cols[0][k] = B(k, 2 * t), cols[1][k] = B(k, 2 * t + 1);
    }
    for (int i = 0; i < 4; ++i) {
        float sum = d[i];
        for (int k = 0; k < 16; ++k) sum = fmaf(rows[i >> 1][k], cols[i & 1][k], sum);
        d[i] = sum;
    }
#else
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}
