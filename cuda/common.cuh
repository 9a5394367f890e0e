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
