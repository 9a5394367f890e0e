// The host executor's view of CUDA: included before a `.cu` source so that g++ compiles the
// unchanged kernel for the CPU. `executor.cpp` implements the functions declared here.
//
// Defined here for kernel sources to test: ALEXNET_HOST_EXECUTOR (1). Not defined: __CUDACC__,
// __CUDA_ARCH__ (so `#if __CUDA_ARCH__ >= 800` paths, e.g. tensor cores, take their SIMT twin).
//
// Mapping:
//   __global__ __device__ __host__ __constant__ __managed__   -> nothing
//   __forceinline__ / __align__(n)    -> GNU attributes, as CUDA's own host headers define them
//   __noinline__       -> not provided: libstdc++ uses the name inside its own attributes; write
//                         __attribute__((noinline)) if a kernel needs it
//   __launch_bounds__(...)                                    -> nothing
//   __shared__         -> a function-static variable: one block runs at a time, so all threads of
//                         the block see one copy. Placed in the linker section `alexnet_shared`
//                         so that the executor can poison it (0xFF bytes: NaN as f32, -1 as int)
//                         before every block, which turns a read of shared memory that this block
//                         never wrote into NaN instead of a stale value from the previous block.
//   DYNAMIC_SHARED(type, name)  -> the launch's dynamic shared bytes (see cuda/common.cuh),
//                         also poisoned before every block.
//   threadIdx blockIdx blockDim gridDim -> globals the scheduler sets (thread-local in the
//                         thread mode build).
//   warps are 32 lanes of consecutive linear thread ids; the last warp may be partial.
//
// Build switches (the sanitizer script uses them; build.rs uses none):
//   ALEXNET_EMU_THREAD_MODE        thread-local indices, so that the executor's thread mode (one
//                                  OS thread per CUDA thread) can run.
//   ALEXNET_EMU_NO_SHARED_SECTION  plain function-statics for __shared__ (no poisoning), so that
//                                  AddressSanitizer puts redzones around them.

#pragma once

#define ALEXNET_HOST_EXECUTOR 1

// Kernel sources are compiled inside an anonymous namespace, so every standard header they may
// want has to be included here first (its include guard then makes their #include a no-op).
#include <cassert>
#include <cfloat>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>

// ---- qualifiers ----------------------------------------------------------------------------

// build.rs preprocesses each source with ALEXNET_EMU_SCAN defined and finds the kernels by this
// marker; in the real compile it is empty.
#ifndef ALEXNET_EMU_SCAN
#define ALEXNET_EMU_GLOBAL_MARK
#endif
#define __global__ ALEXNET_EMU_GLOBAL_MARK
#define __device__
#define __host__
#define __constant__
#define __managed__
#define __forceinline__ __inline__ __attribute__((always_inline))
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)
// __restrict__ is a g++ keyword already.

#ifdef ALEXNET_EMU_NO_SHARED_SECTION
#define __shared__ static
#else
#define __shared__ static __attribute__((section("alexnet_shared")))
#endif

#define DYNAMIC_SHARED(type, name) type* const name = static_cast<type*>(alexnet_emu::dynamic_shared())

#ifdef ALEXNET_EMU_THREAD_MODE
#define ALEXNET_EMU_INDEX_STORAGE thread_local
#else
#define ALEXNET_EMU_INDEX_STORAGE
#endif

// ---- vector types and built-in variables ---------------------------------------------------

struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
    constexpr operator uint3() const { return uint3{x, y, z}; }
};
struct __attribute__((aligned(8))) float2 {
    float x, y;
};
struct __attribute__((aligned(16))) float4 {
    float x, y, z, w;
};
struct __attribute__((aligned(8))) int2 {
    int x, y;
};
struct __attribute__((aligned(16))) int4 {
    int x, y, z, w;
};
struct __attribute__((aligned(8))) uint2 {
    unsigned x, y;
};
struct __attribute__((aligned(16))) uint4 {
    unsigned x, y, z, w;
};
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline int2 make_int2(int x, int y) { return {x, y}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
inline uint3 make_uint3(unsigned x, unsigned y, unsigned z) { return {x, y, z}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }

extern ALEXNET_EMU_INDEX_STORAGE uint3 threadIdx;
extern ALEXNET_EMU_INDEX_STORAGE uint3 blockIdx;
extern ALEXNET_EMU_INDEX_STORAGE dim3 blockDim;
extern ALEXNET_EMU_INDEX_STORAGE dim3 gridDim;
constexpr int warpSize = 32;

// ---- what the executor provides -----------------------------------------------------------

namespace alexnet_emu {
// Block barrier; returns how many of the block's threads passed a non-zero `pred`.
int syncthreads_count(int pred);
// Warp barrier over the lanes of `mask` that have not exited; returns that set of lanes.
unsigned syncwarp(unsigned mask);
// Every lane of `mask` publishes `value`; each gets the value of lane `src` back (its own value
// when `src` is outside 0..31 or did not take part).
uint64_t warp_exchange(unsigned mask, uint64_t value, int src);
// The lanes of `mask` (not exited) whose `pred` is non-zero; `*group` gets the lanes that took part.
unsigned warp_ballot(unsigned mask, int pred, unsigned* group);
// Every lane of the (whole) warp publishes `bytes` (at most 64) from `mine`; each gets the 32
// lanes' bytes, lane by lane `bytes` apart, valid until its next call: the staging of
// warp-level MMA (cuda/mma.cuh).
const void* warp_share(const void* mine, unsigned bytes);
// Lanes of this warp that have not exited.
unsigned active_lanes();
unsigned lane_id();
void* dynamic_shared();
// cp.async (see cuda/async_copy.cuh): copies are queued per thread and performed only when the
// thread waits for their group, the latest moment hardware allows; the destination is poisoned
// (0xFF bytes, NaN as f32) at issue, so a read before the wait, or a copy issued into a stage
// someone still reads, gives NaN instead of a plausible value.
void async_copy(void* dst, const void* src, unsigned bytes, unsigned src_bytes);
void async_commit();
// Performs the thread's committed groups but the newest `pending`.
void async_wait(int pending);

template <typename T>
inline uint64_t to_bits(T v) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value,
                  "warp shuffles move at most 8 bytes");
    uint64_t b = 0;
    std::memcpy(&b, &v, sizeof(T));
    return b;
}
template <typename T>
inline T from_bits(uint64_t b) {
    T v;
    std::memcpy(&v, &b, sizeof(T));
    return v;
}
template <typename T, typename U>
inline T bit_cast(U u) {
    static_assert(sizeof(T) == sizeof(U), "bit_cast between types of one size");
    T t;
    std::memcpy(&t, &u, sizeof(T));
    return t;
}
}  // namespace alexnet_emu

// ---- synchronisation ----------------------------------------------------------------------

inline void __syncthreads() { alexnet_emu::syncthreads_count(0); }
inline int __syncthreads_count(int pred) { return alexnet_emu::syncthreads_count(pred != 0); }
inline int __syncthreads_and(int pred) { return alexnet_emu::syncthreads_count(pred == 0) == 0; }
inline int __syncthreads_or(int pred) { return alexnet_emu::syncthreads_count(pred != 0) != 0; }
inline void __syncwarp(unsigned mask = 0xffffffffu) { alexnet_emu::syncwarp(mask); }
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline unsigned __activemask() { return alexnet_emu::active_lanes(); }

// ---- warp shuffles and votes (32 lanes; `width` a power of two up to 32) ------------------

template <typename T>
inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize) {
    const int lane = alexnet_emu::lane_id();
    const int src = (lane & ~(width - 1)) + (src_lane & (width - 1));
    return alexnet_emu::from_bits<T>(alexnet_emu::warp_exchange(mask, alexnet_emu::to_bits(var), src));
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
    const int lane = alexnet_emu::lane_id();
    const int src = (lane & (width - 1)) < (int)delta ? -1 : lane - (int)delta;
    return alexnet_emu::from_bits<T>(alexnet_emu::warp_exchange(mask, alexnet_emu::to_bits(var), src));
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
    const int lane = alexnet_emu::lane_id();
    const int src = (lane & (width - 1)) + (int)delta >= width ? -1 : lane + (int)delta;
    return alexnet_emu::from_bits<T>(alexnet_emu::warp_exchange(mask, alexnet_emu::to_bits(var), src));
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize) {
    const int lane = alexnet_emu::lane_id();
    const int src = lane ^ lane_mask;
    const int inside = (src & ~(width - 1)) == (lane & ~(width - 1));
    return alexnet_emu::from_bits<T>(
        alexnet_emu::warp_exchange(mask, alexnet_emu::to_bits(var), inside ? src : -1));
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
    unsigned group;
    return alexnet_emu::warp_ballot(mask, pred != 0, &group);
}
inline int __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }
inline int __all_sync(unsigned mask, int pred) {
    unsigned group;
    return alexnet_emu::warp_ballot(mask, pred != 0, &group) == group;
}

// ---- atomics (relaxed, as CUDA's are; real atomics so the thread mode is race-free) --------

#define ALEXNET_EMU_ATOMIC_INT(T)                                                               \
    inline T atomicAdd(T* a, T v) { return __atomic_fetch_add(a, v, __ATOMIC_RELAXED); }        \
    inline T atomicSub(T* a, T v) { return __atomic_fetch_sub(a, v, __ATOMIC_RELAXED); }        \
    inline T atomicExch(T* a, T v) { return __atomic_exchange_n(a, v, __ATOMIC_RELAXED); }      \
    inline T atomicAnd(T* a, T v) { return __atomic_fetch_and(a, v, __ATOMIC_RELAXED); }        \
    inline T atomicOr(T* a, T v) { return __atomic_fetch_or(a, v, __ATOMIC_RELAXED); }          \
    inline T atomicXor(T* a, T v) { return __atomic_fetch_xor(a, v, __ATOMIC_RELAXED); }        \
    inline T atomicCAS(T* a, T expected, T desired) {                                           \
        __atomic_compare_exchange_n(a, &expected, desired, false, __ATOMIC_RELAXED,             \
                                    __ATOMIC_RELAXED);                                          \
        return expected;                                                                        \
    }                                                                                           \
    inline T atomicMax(T* a, T v) {                                                             \
        T old = __atomic_load_n(a, __ATOMIC_RELAXED);                                           \
        while (old < v &&                                                                       \
               !__atomic_compare_exchange_n(a, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) \
            ;                                                                                   \
        return old;                                                                             \
    }                                                                                           \
    inline T atomicMin(T* a, T v) {                                                             \
        T old = __atomic_load_n(a, __ATOMIC_RELAXED);                                           \
        while (old > v &&                                                                       \
               !__atomic_compare_exchange_n(a, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) \
            ;                                                                                   \
        return old;                                                                             \
    }
ALEXNET_EMU_ATOMIC_INT(int)
ALEXNET_EMU_ATOMIC_INT(unsigned int)
ALEXNET_EMU_ATOMIC_INT(unsigned long long)
ALEXNET_EMU_ATOMIC_INT(long long)
#undef ALEXNET_EMU_ATOMIC_INT

// Floating-point read-modify-writes: a compare-and-swap loop on the bits.
template <typename F, typename Op>
inline F alexnet_emu_atomic_float(F* a, Op op) {
    using Bits = typename std::conditional<sizeof(F) == 4, uint32_t, uint64_t>::type;
    Bits* p = reinterpret_cast<Bits*>(a);
    Bits old = __atomic_load_n(p, __ATOMIC_RELAXED);
    for (;;) {
        const Bits next = alexnet_emu::bit_cast<Bits>(op(alexnet_emu::bit_cast<F>(old)));
        if (__atomic_compare_exchange_n(p, &old, next, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            return alexnet_emu::bit_cast<F>(old);
    }
}
inline float atomicAdd(float* a, float v) {
    return alexnet_emu_atomic_float(a, [v](float x) { return x + v; });
}
inline double atomicAdd(double* a, double v) {
    return alexnet_emu_atomic_float(a, [v](double x) { return x + v; });
}
inline float atomicExch(float* a, float v) {
    return alexnet_emu::bit_cast<float>(atomicExch(reinterpret_cast<unsigned*>(a), alexnet_emu::bit_cast<unsigned>(v)));
}
inline unsigned atomicInc(unsigned* a, unsigned limit) {  // ((old >= limit) ? 0 : old + 1)
    unsigned old = __atomic_load_n(a, __ATOMIC_RELAXED);
    while (!__atomic_compare_exchange_n(a, &old, old >= limit ? 0u : old + 1u, true,
                                        __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        ;
    return old;
}
inline unsigned atomicDec(unsigned* a, unsigned limit) {  // ((old == 0 || old > limit) ? limit : old - 1)
    unsigned old = __atomic_load_n(a, __ATOMIC_RELAXED);
    while (!__atomic_compare_exchange_n(a, &old, (old == 0 || old > limit) ? limit : old - 1u,
                                        true, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        ;
    return old;
}

// ---- memory access hints -------------------------------------------------------------------

template <typename T>
inline T __ldg(const T* p) { return *p; }
template <typename T>
inline T __ldcg(const T* p) { return *p; }
template <typename T>
inline T __ldcs(const T* p) { return *p; }
template <typename T>
inline T __ldlu(const T* p) { return *p; }
template <typename T>
inline void __stcg(T* p, T v) { *p = v; }
template <typename T>
inline void __stcs(T* p, T v) { *p = v; }
template <typename T>
inline void __stwt(T* p, T v) { *p = v; }

// ---- math ----------------------------------------------------------------------------------
// The fast intrinsics map to the accurate functions: results differ from the GPU's in the last
// bits (and more for __expf/__powf on large arguments); compare with tolerances. The `_rn`
// arithmetic is exact IEEE round-to-nearest on both sides. g++ on x86-64 does not contract
// a*b+c into an FMA (nvcc does); __fmaf_rn is a real fused multiply-add on both.

inline float __expf(float x) { return expf(x); }
inline float __exp10f(float x) { return exp10f(x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __log10f(float x) { return log10f(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __tanf(float x) { return tanf(x); }
inline void __sincosf(float x, float* s, float* c) { sincosf(x, s, c); }
inline float __fdividef(float a, float b) { return a / b; }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __frsqrt_rn(float x) { return 1.0f / sqrtf(x); }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __saturatef(float x) { return x >= 1.0f ? 1.0f : (x > 0.0f ? x : 0.0f); }  // NaN -> 0
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }

// ---- integer intrinsics --------------------------------------------------------------------

inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((uint64_t)a * b) >> 32); }
inline int __mulhi(int a, int b) { return (int)(((int64_t)a * b) >> 32); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}
inline long long __mul64hi(long long a, long long b) {
    return (long long)(((__int128)a * b) >> 64);
}
inline unsigned __umul24(unsigned a, unsigned b) { return (a & 0xffffffu) * (b & 0xffffffu); }
inline int __mul24(int a, int b) {  // the low 24 bits of each, sign-extended
    const int a24 = (int)((uint32_t)a << 8) >> 8, b24 = (int)((uint32_t)b << 8) >> 8;
    return (int)((uint32_t)a24 * (uint32_t)b24);
}
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x) {
    x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
    x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
    x = ((x >> 4) & 0x0f0f0f0fu) | ((x & 0x0f0f0f0fu) << 4);
    return __builtin_bswap32(x);
}
inline unsigned __funnelshift_l(unsigned lo, unsigned hi, unsigned shift) {
    const uint64_t v = ((uint64_t)hi << 32) | lo;
    return (unsigned)((v << (shift & 31)) >> 32);
}
inline unsigned __funnelshift_r(unsigned lo, unsigned hi, unsigned shift) {
    const uint64_t v = ((uint64_t)hi << 32) | lo;
    return (unsigned)(v >> (shift & 31));
}

// ---- conversions and reinterpretations ----------------------------------------------------
// Float-to-integer conversions saturate and send NaN to 0, as the GPU's do.

template <typename I>
inline I alexnet_emu_saturate(double r) {
    if (r != r) return 0;
    if (r <= (double)std::numeric_limits<I>::min()) return std::numeric_limits<I>::min();
    if (r >= (double)std::numeric_limits<I>::max()) return std::numeric_limits<I>::max();
    return (I)r;
}
inline int __float2int_rn(float x) { return alexnet_emu_saturate<int>(nearbyint((double)x)); }
inline int __float2int_rz(float x) { return alexnet_emu_saturate<int>(trunc((double)x)); }
inline int __float2int_rd(float x) { return alexnet_emu_saturate<int>(floor((double)x)); }
inline int __float2int_ru(float x) { return alexnet_emu_saturate<int>(ceil((double)x)); }
inline unsigned __float2uint_rn(float x) { return alexnet_emu_saturate<unsigned>(nearbyint((double)x)); }
inline unsigned __float2uint_rz(float x) { return alexnet_emu_saturate<unsigned>(trunc((double)x)); }
inline unsigned __float2uint_rd(float x) { return alexnet_emu_saturate<unsigned>(floor((double)x)); }
inline unsigned __float2uint_ru(float x) { return alexnet_emu_saturate<unsigned>(ceil((double)x)); }
inline long long __float2ll_rn(float x) { return alexnet_emu_saturate<long long>(nearbyint((double)x)); }
inline long long __float2ll_rz(float x) { return alexnet_emu_saturate<long long>(trunc((double)x)); }
inline int __double2int_rn(double x) { return alexnet_emu_saturate<int>(nearbyint(x)); }
inline int __double2int_rz(double x) { return alexnet_emu_saturate<int>(trunc(x)); }
inline float __int2float_rn(int x) { return (float)x; }  // default rounding: to nearest even
inline float __uint2float_rn(unsigned x) { return (float)x; }
inline float __ll2float_rn(long long x) { return (float)x; }
inline float __double2float_rn(double x) { return (float)x; }
inline int __float_as_int(float x) { return alexnet_emu::bit_cast<int>(x); }
inline unsigned __float_as_uint(float x) { return alexnet_emu::bit_cast<unsigned>(x); }
inline float __int_as_float(int x) { return alexnet_emu::bit_cast<float>(x); }
inline float __uint_as_float(unsigned x) { return alexnet_emu::bit_cast<float>(x); }
inline long long __double_as_longlong(double x) { return alexnet_emu::bit_cast<long long>(x); }
inline double __longlong_as_double(long long x) { return alexnet_emu::bit_cast<double>(x); }

// ---- min / max as CUDA declares them (unqualified, in the global namespace) ---------------

#define ALEXNET_EMU_MINMAX(R, A, B)                          \
    inline R min(A a, B b) { return (R)a < (R)b ? (R)a : (R)b; } \
    inline R max(A a, B b) { return (R)a > (R)b ? (R)a : (R)b; }
ALEXNET_EMU_MINMAX(int, int, int)
ALEXNET_EMU_MINMAX(unsigned, unsigned, unsigned)
ALEXNET_EMU_MINMAX(unsigned, int, unsigned)
ALEXNET_EMU_MINMAX(unsigned, unsigned, int)
ALEXNET_EMU_MINMAX(long, long, long)
ALEXNET_EMU_MINMAX(unsigned long, unsigned long, unsigned long)
ALEXNET_EMU_MINMAX(long long, long long, long long)
ALEXNET_EMU_MINMAX(unsigned long long, unsigned long long, unsigned long long)
ALEXNET_EMU_MINMAX(unsigned long long, long long, unsigned long long)
ALEXNET_EMU_MINMAX(unsigned long long, unsigned long long, long long)
#undef ALEXNET_EMU_MINMAX
// fminf/fmaxf semantics (a NaN operand loses), as CUDA's float overloads have.
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
inline double min(float a, double b) { return fmin((double)a, b); }
inline double max(float a, double b) { return fmax((double)a, b); }
inline double min(double a, float b) { return fmin(a, (double)b); }
inline double max(double a, float b) { return fmax(a, (double)b); }
