// The host executor: runs a kernel compiled against shim.h on the CPU, one block after another.
//
// Fiber mode (the default, what the Rust side and CI use): one fiber per CUDA thread on the
// calling OS thread. A thread runs until it waits at a barrier or returns, then hands over to the
// next unfinished thread of the block (round robin). The schedule is deterministic, and because a
// thread runs as far as it can before anyone else runs, a missing barrier shows up as a wrong
// result every time rather than now and then.
//
// Thread mode (builds with ALEXNET_EMU_THREAD_MODE, for ThreadSanitizer and AddressSanitizer on
// tiny shapes): one OS thread per CUDA thread of the block, barriers on a mutex and condition
// variable per block and per warp (per warp so that a warp's shuffles do not order the memory of
// other warps, which would hide races from ThreadSanitizer).
//
// Both modes: `__syncthreads` is a generation barrier; threads that have returned no longer
// count (CUDA allows threads to exit early). Warp syncs wait for the lanes of their mask that
// have not exited. Static (`__shared__`) and dynamic shared memory are filled with 0xFF bytes
// before every block, so a read of shared memory the block never wrote gives NaN (f32) or -1.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <string>
#include <sys/mman.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include "registry.h"
#include "shim.h"

#if defined(__x86_64__) && !defined(ALEXNET_EMU_UCONTEXT)
#define ALEXNET_EMU_ASM_SWITCH 1
#else
#include <ucontext.h>
#endif

ALEXNET_EMU_INDEX_STORAGE uint3 threadIdx;
ALEXNET_EMU_INDEX_STORAGE uint3 blockIdx;
ALEXNET_EMU_INDEX_STORAGE dim3 blockDim;
ALEXNET_EMU_INDEX_STORAGE dim3 gridDim;

// The bounds of the `alexnet_shared` section that shim.h puts `__shared__` variables in; the
// linker defines them when the section exists (weak: null when no kernel has static shared).
extern "C" char __start_alexnet_shared[] __attribute__((weak));
extern "C" char __stop_alexnet_shared[] __attribute__((weak));

#ifdef ALEXNET_EMU_ASM_SWITCH
// Defined in the assembly below.
extern "C" __attribute__((visibility("hidden"))) void alexnet_emu_switch(void** save_sp, void* load_sp);
extern "C" __attribute__((visibility("hidden"))) void alexnet_emu_fiber_start();
#endif

namespace alexnet_emu {
namespace {

constexpr unsigned kMaxThreads = 1024;
constexpr unsigned kMaxWarps = kMaxThreads / 32;
// The largest dynamic shared memory a block can opt into on sm_90 (227 KiB).
constexpr unsigned kMaxDynamicShared = 227 * 1024;
constexpr unsigned char kPoison = 0xFF;

enum Mode { kFibers = 0, kThreads = 1 };

// ---- barrier state, the same in both modes ------------------------------------------------

struct WarpState {
    uint32_t live;      // lanes that exist and have not returned
    uint32_t arrived;   // lanes waiting at a warp sync
    uint32_t want[32];  // the mask each waiting lane passed
    uint32_t released[32];  // bumped when the lane's sync completes
    uint32_t group[32];     // the lanes it completed with
    uint64_t slot[32];      // values published for shuffles and votes
    uint32_t partial;       // waiting lanes whose mask leaves out some live lane
    std::mutex mu;          // thread mode
    std::condition_variable cv;
};

struct BlockState {
    int alive;       // threads that have not returned
    int arrived;     // threads waiting at __syncthreads
    uint64_t generation;
    int count, result;  // __syncthreads_count
    std::mutex mu;      // thread mode
    std::condition_variable cv;
};

BlockState g_block;
WarpState g_warps[kMaxWarps];

// cp.async queues, one per CUDA thread (each touched only by its own thread, in both modes).
// One flat list per thread, cleared (capacity kept) once everything in it was performed: the
// convolution and fc kernels issue a copy per float of every tile, so a queue that allocated
// per group cost more than the kernels' arithmetic.
struct AsyncCopy {
    void* dst;
    const void* src;
    unsigned bytes, src_bytes;
};
struct AsyncQueue {
    std::vector<AsyncCopy> copies;  // issued, oldest first; those before `performed` are done
    std::vector<size_t> ends;       // each committed group's end in `copies`, oldest first
    size_t performed = 0;           // copies[..performed] have landed
    size_t groups_done = 0;         // ends[..groups_done] have landed
    void clear() {
        copies.clear();
        ends.clear();
        performed = 0;
        groups_done = 0;
    }
};
AsyncQueue g_async[kMaxThreads];

// Per warp, two staging areas for warp_share, used in turn: a lane publishes into the one its
// collective count selects, and can publish for its next collective while others still read
// the last one (they read it before arriving at the next one's barrier, which it needs).
constexpr unsigned kShareBytes = 64;
alignas(16) unsigned char g_share[kMaxWarps][2][32 * kShareBytes];
unsigned g_share_turn[kMaxWarps][32];


// Which CUDA thread (linear id in the block) is running on this OS thread.
ALEXNET_EMU_INDEX_STORAGE unsigned g_linear;

Mode g_mode = kFibers;
KernelFn g_kernel;
void** g_args;
void* g_dynamic_shared;

// Completes every group of waiting lanes whose lanes (of the mask, not returned) have all
// arrived. Returns whether any did.
bool warp_release_ready(WarpState& w) {
    bool any = false;
    uint32_t pending = w.arrived;
    while (pending) {
        const int lane = __builtin_ctz(pending);
        const uint32_t need = (w.want[lane] | (1u << lane)) & w.live;
        pending &= ~(1u << lane);
        if ((w.arrived & need) == need) {
            for (uint32_t m = need; m; m &= m - 1) {
                const int j = __builtin_ctz(m);
                w.released[j]++;
                w.group[j] = need;
            }
            w.arrived &= ~need;
            w.partial &= ~need;
            pending &= ~need;
            any = true;
        }
    }
    return any;
}

// After a lane arrived with `mask`: completes what its arrival completes. While every waiting
// lane asks for the whole warp (the collectives: MMA, shuffles, votes) that is one test, not a
// pass over the waiting lanes for each arrival.
bool warp_arrived(WarpState& w, unsigned lane, uint32_t mask) {
    if (((mask | (1u << lane)) & w.live) != w.live) w.partial |= 1u << lane;
    if (w.partial) return warp_release_ready(w);
    if ((w.arrived & w.live) != w.live) return false;
    for (uint32_t m = w.live; m; m &= m - 1) {
        const int j = __builtin_ctz(m);
        w.released[j]++;
        w.group[j] = w.live;
    }
    w.arrived &= ~w.live;
    return true;
}

bool block_release_ready(BlockState& b) {
    if (b.arrived == 0 || b.arrived != b.alive) return false;
    b.result = b.count;
    b.count = 0;
    b.arrived = 0;
    b.generation++;
    return true;
}

// ---- fibers ---------------------------------------------------------------------------------

#ifdef ALEXNET_EMU_ASM_SWITCH
// A context is the saved stack pointer; the callee-saved registers live on that stack.
struct Context {
    void* sp;
};
// alexnet_emu_switch: push the callee-saved registers, save rsp, load the other rsp, pop, ret.
// A new fiber's stack holds zeroed registers and alexnet_emu_fiber_start as the return
// address, which calls the function in r13. (MXCSR and the x87 control word are not switched:
// no kernel changes them.)
asm(R"(
    .text
    .p2align 4
    .globl alexnet_emu_switch
    .hidden alexnet_emu_switch
    .type alexnet_emu_switch, @function
alexnet_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size alexnet_emu_switch, .-alexnet_emu_switch

    .p2align 4
    .globl alexnet_emu_fiber_start
    .hidden alexnet_emu_fiber_start
    .type alexnet_emu_fiber_start, @function
alexnet_emu_fiber_start:
    callq *%r13
    ud2
    .size alexnet_emu_fiber_start, .-alexnet_emu_fiber_start
)");

inline void ctx_switch(Context* from, Context* to) { alexnet_emu_switch(&from->sp, to->sp); }

void ctx_make(Context* c, char* stack, size_t size, void (*fn)()) {
    // Seven words from a 16-byte aligned top minus 8: after the six pops and the ret, rsp is
    // 16-byte aligned where fiber_start's call needs it.
    uintptr_t top = (reinterpret_cast<uintptr_t>(stack) + size) & ~uintptr_t(15);
    void** sp = reinterpret_cast<void**>(top - 72);
    sp[0] = nullptr;  // r15
    sp[1] = nullptr;  // r14
    sp[2] = reinterpret_cast<void*>(fn);  // r13
    sp[3] = nullptr;  // r12
    sp[4] = nullptr;  // rbx
    sp[5] = nullptr;  // rbp
    sp[6] = reinterpret_cast<void*>(&alexnet_emu_fiber_start);
    sp[7] = nullptr;
    c->sp = sp;
}
#else
// Portable fallback: swapcontext (one signal-mask system call per switch, so slower).
struct Context {
    ucontext_t uc;
};
inline void ctx_switch(Context* from, Context* to) { swapcontext(&from->uc, &to->uc); }
void ctx_make(Context* c, char* stack, size_t size, void (*fn)()) {
    getcontext(&c->uc);
    c->uc.uc_stack.ss_sp = stack;
    c->uc.uc_stack.ss_size = size;
    c->uc.uc_link = nullptr;
    makecontext(&c->uc, fn, 0);
}
#endif

enum Wait { kRunning = 0, kAtSyncthreads, kAtWarpSync };

struct Fiber {
    Context ctx;
    uint3 tid;
    unsigned next, prev;  // the ring of threads that have not returned
    Wait wait;
};

Fiber g_fibers[kMaxThreads];
Context g_main;
unsigned g_fibers_alive;
// Resumptions of waiting fibers that found nothing changed since the last progress; more than
// one round of them means no thread can ever move again (a deadlock).
uint64_t g_idle_resumes;
// Read by other threads (the benchmark); bumped with a plain load and store, not a locked add.
std::atomic<uint64_t> g_switches{0};
bool g_failed;
std::string g_error;

// One mapping for kMaxThreads fiber stacks, made at the first launch. Each slot starts with a
// PROT_NONE guard page, so a stack overflow faults at once instead of corrupting a neighbour.
char* g_stacks;
size_t g_page;
size_t g_stack_slot;  // bytes per fiber, the guard page included

size_t stack_bytes() {
    size_t kib = 128;
    if (const char* s = std::getenv("ALEXNET_EMU_STACK_KIB")) {
        const long v = std::atol(s);
        if (v >= 16) kib = (size_t)v;
    }
    return kib * 1024;
}

bool ensure_stacks(std::string& err) {
    if (g_stacks) return true;
    g_page = (size_t)sysconf(_SC_PAGESIZE);
    const size_t slot = (stack_bytes() + g_page - 1) / g_page * g_page + g_page;
    void* p = mmap(nullptr, slot * kMaxThreads, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        err = "cannot map the fiber stacks";
        return false;
    }
    g_stacks = static_cast<char*>(p);
    g_stack_slot = slot;
    for (unsigned i = 0; i < kMaxThreads; ++i) mprotect(g_stacks + i * slot, g_page, PROT_NONE);
    return true;
}

inline void note_progress() { g_idle_resumes = 0; }

inline void switch_to(Context* from, unsigned next) {
    g_linear = next;
    threadIdx = g_fibers[next].tid;
    g_switches.store(g_switches.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    ctx_switch(from, &g_fibers[next].ctx);
}

// Abandons the block (its fibers are never resumed) and returns to the launch with `msg`.
[[noreturn]] void fiber_fail(const char* msg) {
    g_failed = true;
    g_error = msg;
    ctx_switch(&g_fibers[g_linear].ctx, &g_main);
    __builtin_unreachable();
}

void report_deadlock() {
    unsigned at_block = 0, at_warp = 0;
    for (unsigned i = g_linear, n = 0; n < g_fibers_alive; i = g_fibers[i].next, ++n) {
        at_block += g_fibers[i].wait == kAtSyncthreads;
        at_warp += g_fibers[i].wait == kAtWarpSync;
    }
    char buf[256];
    snprintf(buf, sizeof buf,
             "deadlock in block (%u,%u,%u): %u threads wait at __syncthreads and %u at a warp "
             "sync that can never complete (a barrier in divergent code?)",
             blockIdx.x, blockIdx.y, blockIdx.z, at_block, at_warp);
    fiber_fail(buf);
}

// Runs the other fibers until `ready()` holds.
template <class Ready>
void fiber_wait(Wait why, Ready ready) {
    Fiber& me = g_fibers[g_linear];
    me.wait = why;
    while (!ready()) {
        if (++g_idle_resumes > g_fibers_alive || me.next == g_linear) report_deadlock();
        switch_to(&me.ctx, me.next);
    }
    me.wait = kRunning;
}

[[noreturn]] void fiber_exit() {
    const unsigned me = g_linear;
    BlockState& b = g_block;
    WarpState& w = g_warps[me / 32];
    b.alive--;
    block_release_ready(b);
    w.live &= ~(1u << (me % 32));
    warp_release_ready(w);
    note_progress();
    Fiber& f = g_fibers[me];
    g_fibers[f.prev].next = f.next;
    g_fibers[f.next].prev = f.prev;
    if (--g_fibers_alive == 0) {
        ctx_switch(&f.ctx, &g_main);
    } else {
        switch_to(&f.ctx, f.next);
    }
    __builtin_unreachable();
}

void fiber_main() {
    g_kernel(g_args);
    fiber_exit();
}

// Each fiber's thread index, set once per launch (the divisions cost more than a small block's
// kernel body when done for every block).
void set_thread_indices(unsigned n) {
    for (unsigned i = 0; i < n; ++i)
        g_fibers[i].tid = uint3{i % blockDim.x, (i / blockDim.x) % blockDim.y, i / (blockDim.x * blockDim.y)};
}

bool run_block_fibers(unsigned n) {
    for (unsigned i = 0; i < n; ++i) {
        Fiber& f = g_fibers[i];
        ctx_make(&f.ctx, g_stacks + i * g_stack_slot + g_page, g_stack_slot - g_page, &fiber_main);
        f.next = (i + 1) % n;
        f.prev = (i + n - 1) % n;
        f.wait = kRunning;
    }
    g_fibers_alive = n;
    g_idle_resumes = 0;
    g_failed = false;
    switch_to(&g_main, 0);
    return !g_failed;
}

// ---- threads --------------------------------------------------------------------------------

#ifdef ALEXNET_EMU_THREAD_MODE
// A wait that takes this long is a deadlock: report it and stop (the thread mode is for
// sanitizer runs of tiny shapes, where nothing takes seconds).
constexpr auto kThreadDeadlock = std::chrono::seconds(60);

template <class Ready>
void thread_wait(std::unique_lock<std::mutex>& lk, std::condition_variable& cv, Ready ready) {
    if (!cv.wait_for(lk, kThreadDeadlock, ready)) {
        fprintf(stderr,
                "alexnet emu: deadlock in block (%u,%u,%u), thread %u: a barrier that can never "
                "complete\n",
                blockIdx.x, blockIdx.y, blockIdx.z, g_linear);
        std::abort();
    }
}

void thread_exit() {
    {
        std::lock_guard<std::mutex> lk(g_block.mu);
        g_block.alive--;
        if (block_release_ready(g_block)) g_block.cv.notify_all();
    }
    WarpState& w = g_warps[g_linear / 32];
    std::lock_guard<std::mutex> lk(w.mu);
    w.live &= ~(1u << (g_linear % 32));
    if (warp_release_ready(w)) w.cv.notify_all();
}

bool run_block_threads(unsigned n) {
    const uint3 block = blockIdx;
    const dim3 bdim = blockDim, gdim = gridDim;
    std::vector<std::thread> threads;
    threads.reserve(n);
    for (unsigned i = 0; i < n; ++i) {
        threads.emplace_back([=] {
            g_linear = i;
            threadIdx = uint3{i % bdim.x, (i / bdim.x) % bdim.y, i / (bdim.x * bdim.y)};
            blockIdx = block;
            blockDim = bdim;
            gridDim = gdim;
            g_kernel(g_args);
            thread_exit();
        });
    }
    for (auto& t : threads) t.join();
    return true;
}
#endif

// ---- launches -------------------------------------------------------------------------------

void reset_block(unsigned n) {
    // Copies a block never waited for are dropped with it: nothing can read them any more.
    for (unsigned i = 0; i < n; ++i) {
        g_async[i].clear();
    }
    g_block.alive = (int)n;
    g_block.arrived = 0;
    g_block.generation = 0;
    g_block.count = 0;
    g_block.result = 0;
    for (unsigned w = 0; w < (n + 31) / 32; ++w) {
        WarpState& ws = g_warps[w];
        const unsigned lanes = n - w * 32 >= 32 ? 32 : n - w * 32;
        ws.live = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1;
        ws.arrived = 0;
        ws.partial = 0;
        for (int l = 0; l < 32; ++l) g_share_turn[w][l] = 0;
        for (int l = 0; l < 32; ++l) {
            ws.want[l] = 0;
            ws.released[l] = 0;
            ws.group[l] = 0;
            ws.slot[l] = 0;
        }
    }
}

void poison_shared(unsigned dynamic_bytes) {
    char* const begin = __start_alexnet_shared;
    char* const end = __stop_alexnet_shared;
    if (begin && end > begin) std::memset(begin, kPoison, end - begin);
    if (dynamic_bytes) std::memset(g_dynamic_shared, kPoison, dynamic_bytes);
}

std::string check_config(const unsigned grid[3], const unsigned block[3], unsigned shared_bytes,
                         int mode) {
    char buf[256];
    const unsigned long long threads = (unsigned long long)block[0] * block[1] * block[2];
    if (!grid[0] || !grid[1] || !grid[2] || !block[0] || !block[1] || !block[2]) {
        snprintf(buf, sizeof buf, "grid (%u,%u,%u) and block (%u,%u,%u) need every dimension >= 1",
                 grid[0], grid[1], grid[2], block[0], block[1], block[2]);
        return buf;
    }
    if (threads > kMaxThreads || block[0] > 1024 || block[1] > 1024 || block[2] > 64) {
        snprintf(buf, sizeof buf,
                 "block (%u,%u,%u) has %llu threads; CUDA allows at most 1024 (x, y <= 1024, z <= 64)",
                 block[0], block[1], block[2], threads);
        return buf;
    }
    if (grid[0] > 2147483647u || grid[1] > 65535 || grid[2] > 65535) {
        snprintf(buf, sizeof buf, "grid (%u,%u,%u) exceeds CUDA's limits (x < 2^31, y, z <= 65535)",
                 grid[0], grid[1], grid[2]);
        return buf;
    }
    if (shared_bytes > kMaxDynamicShared) {
        snprintf(buf, sizeof buf, "%u bytes of dynamic shared memory exceed the %u a block can have",
                 shared_bytes, kMaxDynamicShared);
        return buf;
    }
    if (mode != kFibers && mode != kThreads) return "unknown executor mode";
#ifndef ALEXNET_EMU_THREAD_MODE
    if (mode == kThreads) return "thread mode needs a build with ALEXNET_EMU_THREAD_MODE";
#endif
    return "";
}

std::mutex g_busy;

void copy_error(const std::string& msg, char* err, size_t err_len) {
    if (!err || !err_len) return;
    const size_t n = msg.size() < err_len - 1 ? msg.size() : err_len - 1;
    std::memcpy(err, msg.data(), n);
    err[n] = '\0';
}

}  // namespace

// ---- the interface kernels call (declared in shim.h) ----------------------------------------

unsigned lane_id() { return g_linear % 32; }

void* dynamic_shared() { return g_dynamic_shared; }

void async_copy(void* dst, const void* src, unsigned bytes, unsigned src_bytes) {
    // Poisoned until the wait that covers it (the 4-byte case inline: it is nearly every copy).
    if (bytes == 4) {
        const uint32_t poison = 0xFFFFFFFFu;
        std::memcpy(dst, &poison, 4);
    } else {
        std::memset(dst, kPoison, bytes);
    }
    g_async[g_linear].copies.push_back(AsyncCopy{dst, src, bytes, src_bytes});
}

void async_commit() {
    AsyncQueue& q = g_async[g_linear];
    q.ends.push_back(q.copies.size());
}

void async_wait(int pending) {
    AsyncQueue& q = g_async[g_linear];
    const size_t keep = pending > 0 ? (size_t)pending : 0;
    const size_t outstanding = q.ends.size() - q.groups_done;
    if (outstanding <= keep) return;
    q.groups_done += outstanding - keep;
    const size_t end = q.ends[q.groups_done - 1];
    for (size_t i = q.performed; i < end; ++i) {
        const AsyncCopy& c = q.copies[i];
        // src_bytes < bytes zero-fills the rest, as cp.async's src-size operand does.
        if (c.bytes == 4 && c.src_bytes == 4) {
            std::memcpy(c.dst, c.src, 4);
        } else {
            std::memcpy(c.dst, c.src, c.src_bytes);
            std::memset(static_cast<char*>(c.dst) + c.src_bytes, 0, c.bytes - c.src_bytes);
        }
    }
    q.performed = end;
    // Everything issued has landed: start the list again (its capacity stays).
    if (q.performed == q.copies.size() && q.groups_done == q.ends.size()) q.clear();
}

unsigned active_lanes() {
    WarpState& w = g_warps[g_linear / 32];
    if (g_mode == kThreads) {
        std::lock_guard<std::mutex> lk(w.mu);
        return w.live;
    }
    return w.live;
}

int syncthreads_count(int pred) {
    BlockState& b = g_block;
    if (g_mode == kFibers) {
        const uint64_t gen = b.generation;
        b.count += pred;
        b.arrived++;
        note_progress();
        if (!block_release_ready(b)) fiber_wait(kAtSyncthreads, [&] { return b.generation != gen; });
        return b.result;
    }
#ifdef ALEXNET_EMU_THREAD_MODE
    std::unique_lock<std::mutex> lk(b.mu);
    const uint64_t gen = b.generation;
    b.count += pred;
    b.arrived++;
    if (block_release_ready(b))
        b.cv.notify_all();
    else
        thread_wait(lk, b.cv, [&] { return b.generation != gen; });
    return b.result;
#else
    return 0;
#endif
}

unsigned syncwarp(unsigned mask) {
    const unsigned lane = g_linear % 32;
    WarpState& w = g_warps[g_linear / 32];
    if (g_mode == kFibers) {
        const uint32_t ticket = w.released[lane];
        w.arrived |= 1u << lane;
        w.want[lane] = mask;
        note_progress();
        warp_arrived(w, lane, mask);
        fiber_wait(kAtWarpSync, [&] { return w.released[lane] != ticket; });
        return w.group[lane];
    }
#ifdef ALEXNET_EMU_THREAD_MODE
    std::unique_lock<std::mutex> lk(w.mu);
    const uint32_t ticket = w.released[lane];
    w.arrived |= 1u << lane;
    w.want[lane] = mask;
    if (warp_release_ready(w)) w.cv.notify_all();
    thread_wait(lk, w.cv, [&] { return w.released[lane] != ticket; });
    return w.group[lane];
#else
    return 0;
#endif
}

uint64_t warp_exchange(unsigned mask, uint64_t value, int src) {
    WarpState& w = g_warps[g_linear / 32];
    // Publish, wait for the group, read the source lane, and wait again so that nobody
    // overwrites a slot before everyone has read it.
    w.slot[g_linear % 32] = value;
    const unsigned group = syncwarp(mask);
    const uint64_t got = (src >= 0 && src < 32 && ((group >> src) & 1u)) ? w.slot[src] : value;
    syncwarp(group);
    return got;
}

const void* warp_share(const void* mine, unsigned bytes) {
    const unsigned w = g_linear / 32, lane = g_linear % 32;
    if (bytes > kShareBytes) {
        fprintf(stderr, "alexnet emu: warp_share of %u bytes (at most %u)\n", bytes, kShareBytes);
        std::abort();
    }
    unsigned char* area = g_share[w][g_share_turn[w][lane]++ & 1];
    std::memcpy(area + lane * bytes, mine, bytes);
    // Warp-level MMA needs the whole warp, and the kernels give it.
    const unsigned group = syncwarp(0xffffffffu);
    if (group != 0xffffffffu) {
        fprintf(stderr, "alexnet emu: a warp collective MMA without all 32 lanes (lanes %08x)\n", group);
        std::abort();
    }
    return area;
}

unsigned warp_ballot(unsigned mask, int pred, unsigned* group_out) {
    WarpState& w = g_warps[g_linear / 32];
    w.slot[g_linear % 32] = pred != 0;
    const unsigned group = syncwarp(mask);
    unsigned ballot = 0;
    for (unsigned m = group; m; m &= m - 1) {
        const int j = __builtin_ctz(m);
        if (w.slot[j]) ballot |= 1u << j;
    }
    syncwarp(group);
    *group_out = group;
    return ballot;
}

}  // namespace alexnet_emu

using namespace alexnet_emu;

// Runs `kernel` over the grid. mode 0: fibers; 1: OS threads (ALEXNET_EMU_THREAD_MODE builds).
// Returns 0, or non-zero with a message in `err`. One launch at a time (others wait).
extern "C" int alexnet_emu_launch(KernelFn kernel, void** args, const unsigned grid[3],
                                  const unsigned block[3], unsigned shared_bytes, int mode,
                                  char* err, size_t err_len) {
    std::lock_guard<std::mutex> busy(g_busy);
    std::string msg = check_config(grid, block, shared_bytes, mode);
    if (!msg.empty()) {
        copy_error(msg, err, err_len);
        return 1;
    }
    const unsigned n = block[0] * block[1] * block[2];
    if (mode == kFibers && !ensure_stacks(msg)) {
        copy_error(msg, err, err_len);
        return 1;
    }
    g_mode = static_cast<Mode>(mode);
    g_kernel = kernel;
    g_args = args;
    // Exactly the requested bytes, so that AddressSanitizer sees an overrun; malloc's 16-byte
    // alignment is what DYNAMIC_SHARED promises.
    g_dynamic_shared = std::malloc(shared_bytes ? shared_bytes : 1);
    blockDim = dim3(block[0], block[1], block[2]);
    gridDim = dim3(grid[0], grid[1], grid[2]);
    if (mode == kFibers) set_thread_indices(n);
    bool ok = true;
    for (unsigned z = 0; ok && z < grid[2]; ++z)
        for (unsigned y = 0; ok && y < grid[1]; ++y)
            for (unsigned x = 0; ok && x < grid[0]; ++x) {
                blockIdx = uint3{x, y, z};
                reset_block(n);
                poison_shared(shared_bytes);
#ifdef ALEXNET_EMU_THREAD_MODE
                ok = mode == kThreads ? run_block_threads(n) : run_block_fibers(n);
#else
                ok = run_block_fibers(n);
#endif
            }
    std::free(g_dynamic_shared);
    g_dynamic_shared = nullptr;
    if (!ok) {
        copy_error(g_error, err, err_len);
        return 1;
    }
    return 0;
}

// Fiber switches since the process started (for the switch-cost benchmark).
extern "C" uint64_t alexnet_emu_fiber_switches() { return g_switches.load(std::memory_order_relaxed); }
