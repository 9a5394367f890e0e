// Asynchronous copies from global to shared memory (`cp.async`, sm_80 and later): the copy goes
// straight into shared memory without passing through registers, so a main loop can have several
// tiles in flight while it computes on another, and the compiler cannot move the loads below the
// math (the way it sinks a register prefetch).
//
// Ordering: a thread's copies belong to the group its next `cp_async_commit()` closes;
// `cp_async_wait<N>()` returns once all but its newest N groups have landed, for this thread only.
// Other threads see the data after a barrier that follows their writers' waits.
//
// On the host executor (cuda/host/shim.h) each copy is queued and performed at the wait that
// covers it, with the destination poisoned (NaN) in between: a kernel that reads a stage before
// waiting for it, or issues into a stage another thread still reads, gets NaNs, not old data.
// TEST_ASYNC_WAIT<N>() is the wait the `nowait` test build drops, to show that the tests see it.

#pragma once

// A 4-byte copy of *src to *dst; when !valid, nothing is read and dst gets zero (cp.async's
// src-size operand of 0), so padding and tails cost no branch. src must still be a valid address
// when !valid (callers pass a clamped one).
__device__ __forceinline__ void cp_async_f32(float* dst, const float* src, bool valid) {
#ifdef ALEXNET_HOST_EXECUTOR
    alexnet_emu::async_copy(dst, src, 4, valid ? 4 : 0);
#else
    const unsigned s = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(s), "l"(src),
                 "r"(valid ? 4 : 0));
#endif
}

// Four such copies, to dst + i·PITCH floats from src[i] when valid[i], in one asm statement:
// ptxas pads an LDGSTS that follows a shared-memory load with three no-op loads, so copies
// issued back to back after their address arithmetic share one padding instead of four.
template <int PITCH>
__device__ __forceinline__ void cp_async_f32x4(float* dst, const float* const (&src)[4],
                                               const bool (&valid)[4]) {
#ifdef ALEXNET_HOST_EXECUTOR
    for (int i = 0; i < 4; ++i) alexnet_emu::async_copy(dst + i * PITCH, src[i], 4, valid[i] ? 4 : 0);
#else
    const unsigned s = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile(
        "{\n"
        " .reg .pred p0, p1, p2, p3;\n"
        " setp.eq.u32 p0, %5, 0;\n"
        " setp.eq.u32 p1, %6, 0;\n"
        " setp.eq.u32 p2, %7, 0;\n"
        " setp.eq.u32 p3, %8, 0;\n"
        " cp.async.ca.shared.global [%0], [%1], 4, p0;\n"
        " cp.async.ca.shared.global [%0+%9], [%2], 4, p1;\n"
        " cp.async.ca.shared.global [%0+%10], [%3], 4, p2;\n"
        " cp.async.ca.shared.global [%0+%11], [%4], 4, p3;\n"
        "}\n" ::"r"(s),
        "l"(src[0]), "l"(src[1]), "l"(src[2]), "l"(src[3]), "r"((unsigned)valid[0]),
        "r"((unsigned)valid[1]), "r"((unsigned)valid[2]), "r"((unsigned)valid[3]),
        "n"(PITCH * 4), "n"(2 * PITCH * 4), "n"(3 * PITCH * 4));
#endif
}

__device__ __forceinline__ void cp_async_commit() {
#ifdef ALEXNET_HOST_EXECUTOR
    alexnet_emu::async_commit();
#else
    asm volatile("cp.async.commit_group;\n" ::);
#endif
}

template <int N>
__device__ __forceinline__ void cp_async_wait() {
#ifdef ALEXNET_HOST_EXECUTOR
    alexnet_emu::async_wait(N);
#else
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}

#ifdef ALEXNET_DROP_TEST_ASYNC_WAIT
template <int N>
__device__ __forceinline__ void TEST_ASYNC_WAIT() {}
#else
template <int N>
__device__ __forceinline__ void TEST_ASYNC_WAIT() {
    cp_async_wait<N>();
}
#endif
