// Definitions every kernel source shares, valid both under nvcc and under the host executor
// (`cuda/host/shim.h`, which defines ALEXNET_HOST_EXECUTOR before any kernel source is read).

#pragma once

// TEST_BARRIER(): a `__syncthreads()` that the "tests bite" builds remove. build.rs compiles
// `cuda/conv.cu` and `cuda/selftest.cu` a second time for the host executor with
// ALEXNET_DROP_TEST_BARRIER defined (registered as the `nobarrier` variant); a test then shows
// that the kernel gives wrong results without that barrier, i.e. that the tests can see a missing
// barrier at all. Use it at exactly one barrier that the kernel's correctness depends on.
#ifdef ALEXNET_DROP_TEST_BARRIER
#define TEST_BARRIER() ((void)0)
#else
#define TEST_BARRIER() __syncthreads()
#endif

// DYNAMIC_SHARED(type, name): the block's dynamic shared memory (the launch's `shared_bytes`) as
// `type* name`-like storage. Write this instead of `extern __shared__ type name[];`, which the
// host executor cannot express. All DYNAMIC_SHARED buffers of a kernel start at the same address,
// as in CUDA; the base is 16-byte aligned.
#ifndef ALEXNET_HOST_EXECUTOR
#define DYNAMIC_SHARED(type, name) extern __shared__ __align__(16) type name[]
#endif

// Division by a runtime constant 1 <= d < 2^31 for numerators 0 <= n < 2^31, by a multiply and
// a shift (Granlund & Montgomery, "Division by invariant integers using multiplication", 1994):
// with l = ceil(log2 d) and m = floor(2^32 (2^l - d) / d) + 1, n / d = (umulhi(n, m) + n) >> l.
struct FastDiv {
    int d;
    unsigned m, l;
    __device__ FastDiv(int divisor, unsigned m_, unsigned l_) : d(divisor), m(m_), l(l_) {}
    __device__ explicit FastDiv(int divisor) : d(divisor) {
        l = divisor > 1 ? 32 - __clz(divisor - 1) : 0;
        const unsigned long long two_l = 1ull << l;
        m = (unsigned)((((two_l - (unsigned)divisor) << 32)) / (unsigned)divisor) + 1u;
    }
    __device__ int div(int n) const { return (int)((__umulhi((unsigned)n, m) + (unsigned)n) >> l); }
};


// log2, exp2 and 1/x on the special-function unit, flushing subnormals (the callers' arguments
// are normal: LRN's scales are at least k > 0). Each is one MUFU instruction, without the
// subnormal scaling the plain intrinsics add; relative error about 2^-22. The host executor uses
// the accurate functions.
__device__ __forceinline__ float fast_log2(float x) {
#ifdef ALEXNET_HOST_EXECUTOR
    return log2f(x);
#else
    float r;
    asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
    return r;
#endif
}
__device__ __forceinline__ float fast_exp2(float x) {
#ifdef ALEXNET_HOST_EXECUTOR
    return exp2f(x);
#else
    float r;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
    return r;
#endif
}
__device__ __forceinline__ float fast_rcp(float x) {
#ifdef ALEXNET_HOST_EXECUTOR
    return 1.0f / x;
#else
    float r;
    asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
    return r;
#endif
}
