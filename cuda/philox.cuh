// Philox-4x32-10 (Salmon et al., SC 2011), exactly as `src/ops/philox.rs`: the same (seed,
// stream, index) gives the same 32-bit word on the CPU and the GPU.

#pragma once
#include "common.cuh"

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

// Ten rounds on counter c under key (k0, k1), in place.
__device__ __forceinline__ void philox4x32_10(unsigned (&c)[4], unsigned k0, unsigned k1) {
#pragma unroll
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            k0 += PHILOX_W0;
            k1 += PHILOX_W1;
        }
        const unsigned hi0 = __umulhi(PHILOX_M0, c[0]), lo0 = PHILOX_M0 * c[0];
        const unsigned hi1 = __umulhi(PHILOX_M1, c[2]), lo1 = PHILOX_M1 * c[2];
        const unsigned n0 = hi1 ^ c[1] ^ k0, n2 = hi0 ^ c[3] ^ k1;
        c[0] = n0;
        c[1] = lo1;
        c[2] = n2;
        c[3] = lo0;
    }
}

// Word `index` of the stream (seed, stream): word index % 4 of the block at counter
// (index / 4, stream).
__device__ __forceinline__ unsigned philox_word(unsigned long long seed, unsigned long long stream,
                                                unsigned long long index) {
    const unsigned long long block = index / 4;
    unsigned c[4] = {(unsigned)block, (unsigned)(block >> 32), (unsigned)stream,
                     (unsigned)(stream >> 32)};
    philox4x32_10(c, (unsigned)seed, (unsigned)(seed >> 32));
    return c[index % 4];
}

// A uniform float in [0, 1) from the top 24 bits: exact in f32.
__device__ __forceinline__ float philox_uniform(unsigned bits) {
    return (float)(bits >> 8) * (1.0f / 16777216.0f);
}
