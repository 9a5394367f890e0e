// Device and pinned host memory. A device pointer is a host address the host executor can
// dereference: every allocation is a mapping of its own, so addresses are never shared between
// allocations, and a device's capacity counts what the engine and cuBLAS hold (a fresh
// allocation past it is CUDA_ERROR_OUT_OF_MEMORY). New memory holds garbage (a NaN pattern), not
// zeros. Freed memory is filled with another NaN pattern and held back in a quarantine for a
// while before its mapping goes, so a use after free finds it (and is reported) instead of a
// new allocation at the same address.
//
// Pinned host memory is also protected from the host while queued copies use it: the host may
// read but not write memory a queued copy reads, and may not touch memory a queued copy writes,
// until some host thread has seen the copy complete. A host access in between faults; the
// fault handler reports it with both sides and ends the run. Freed pinned memory is
// inaccessible while in quarantine.

#include <signal.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>

#include "sim.h"

namespace sim {

namespace {

constexpr uint32_t kFresh = 0x7FC0FEEDu;   // a quiet NaN: new allocations
constexpr uint32_t kFreed = 0x7FC0DEADu;   // another: freed memory
constexpr size_t kQuarantineCount = 256;
constexpr uint64_t kQuarantineBytes = 4ull << 30;

size_t page() {
    static const size_t p = (size_t)sysconf(_SC_PAGESIZE);
    return p;
}

void fill(void* p, uint64_t bytes, uint32_t pattern) {
    uint32_t* w = static_cast<uint32_t*>(p);
    std::fill(w, w + bytes / 4, pattern);
    std::memset(static_cast<char*>(p) + bytes / 4 * 4, 0xFF, bytes % 4);
}

void* map(uint64_t bytes, size_t* mapped) {
    *mapped = (size_t)((bytes + page() - 1) / page() * page());
    void* p = mmap(nullptr, *mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    return p == MAP_FAILED ? nullptr : p;
}

void set_protection(Allocation* a, int prot) {
    if (a->protection == prot) return;
    mprotect(reinterpret_cast<void*>(a->base), a->mapped, prot);
    a->protection = prot;
}

// What the host may do with pinned memory `a` now.
int wanted_protection(const Allocation* a) {
    if (!a->live) return PROT_NONE;
    if (!a->host_writers.empty()) return PROT_NONE;
    if (!a->host_readers.empty()) return PROT_READ;
    return PROT_READ | PROT_WRITE;
}

Clock& host_seen() {
    static Clock c;
    return c;
}

}  // namespace

uint32_t fresh_pattern() { return kFresh; }

Allocation* find_live(uint64_t p, uint64_t n) {
    auto& live = state().live;
    auto it = live.upper_bound(p);
    if (it == live.begin()) return nullptr;
    --it;
    Allocation* a = it->second.get();
    return a->contains(p, n ? n : 1) ? a : nullptr;
}

Allocation* find_freed(uint64_t p) {
    auto& q = state().quarantined;
    auto it = q.upper_bound(p);
    if (it == q.begin()) return nullptr;
    --it;
    Allocation* a = it->second;
    return p >= a->base && p < a->end() ? a : nullptr;
}

CUresult alloc_device(Lock&, Device* dev, uint64_t bytes, bool pool, const std::string& what,
                      uint64_t* out) {
    if (bytes == 0) return CUDA_ERROR_INVALID_VALUE;
    State& st = state();
    const Config& cfg = config();
    ++st.device_allocations;
    // The driver hands out memory in units of 512 bytes at least.
    const uint64_t charged = (bytes + 511) / 512 * 512;
    if (cfg.oom_at && st.device_allocations == cfg.oom_at) {
        note("fault injected: device allocation %ld (%llu bytes on cuda:%d) fails with CUDA_ERROR_OUT_OF_MEMORY",
             st.device_allocations, (unsigned long long)bytes, dev->ordinal);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    if (dev->used + charged > dev->capacity) return CUDA_ERROR_OUT_OF_MEMORY;
    auto a = std::make_unique<Allocation>();
    void* p = map(bytes, &a->mapped);
    if (!p) return CUDA_ERROR_OUT_OF_MEMORY;
    // Without compute nothing reads it, and untouched pages cost no memory.
    if (cfg.compute) fill(p, bytes, kFresh);
    a->base = reinterpret_cast<uint64_t>(p);
    a->size = bytes;
    a->device = dev->ordinal;
    a->pool = pool;
    a->what = what;
    a->protection = PROT_READ | PROT_WRITE;
    dev->used += charged;
    *out = a->base;
    st.live[a->base] = std::move(a);
    return CUDA_SUCCESS;
}

CUresult alloc_pinned(uint64_t bytes, void** out) {
    if (bytes == 0) return CUDA_ERROR_INVALID_VALUE;
    auto a = std::make_unique<Allocation>();
    void* p = map(bytes, &a->mapped);
    if (!p) return CUDA_ERROR_OUT_OF_MEMORY;
    fill(p, bytes, kFresh);
    a->base = reinterpret_cast<uint64_t>(p);
    a->size = bytes;
    a->device = -1;
    a->protection = PROT_READ | PROT_WRITE;
    *out = p;
    state().live[a->base] = std::move(a);
    return CUDA_SUCCESS;
}

void release(Allocation* a, OpRef freed_by) {
    State& st = state();
    auto it = st.live.find(a->base);
    if (it == st.live.end()) return;
    std::unique_ptr<Allocation> owned = std::move(it->second);
    st.live.erase(it);
    owned->live = false;
    owned->freed_by = std::move(freed_by);
    owned->host_readers.clear();
    owned->host_writers.clear();
    if (owned->device >= 0) {
        Device* dev = st.devices[owned->device].get();
        dev->used -= (owned->size + 511) / 512 * 512;
        if (config().compute) fill(reinterpret_cast<void*>(owned->base), owned->size, kFreed);
    } else {
        set_protection(owned.get(), PROT_READ | PROT_WRITE);
        fill(reinterpret_cast<void*>(owned->base), owned->size, kFreed);
        // The host may not touch freed pinned memory either: a fault names the use.
        set_protection(owned.get(), config().sanitize == Sanitize::Off ? PROT_READ | PROT_WRITE : PROT_NONE);
    }
    owned->shadow.clear();
    st.quarantined[owned->base] = owned.get();
    st.quarantined_bytes += owned->mapped;
    st.quarantine.push_back(std::move(owned));
    while (st.quarantine.size() > kQuarantineCount || st.quarantined_bytes > kQuarantineBytes) {
        Allocation* old = st.quarantine.front().get();
        st.quarantined.erase(old->base);
        st.quarantined_bytes -= old->mapped;
        munmap(reinterpret_cast<void*>(old->base), old->mapped);
        st.quarantine.pop_front();
    }
}

void protect_pinned(Allocation* a, const OpRef& op, bool op_writes) {
    if (config().sanitize == Sanitize::Off) return;
    (op_writes ? a->host_writers : a->host_readers).push_back(op);
    set_protection(a, wanted_protection(a));
}

void host_saw_clock(const Clock& c) { host_seen().join(c); }

void update_protections() {
    if (config().sanitize == Sanitize::Off) return;
    const Clock& seen = host_seen();
    auto done = [&](const OpRef& op) { return op->epoch <= seen.get(op->agent); };
    for (auto& [base, a] : state().live) {
        if (a->device >= 0 || (a->host_readers.empty() && a->host_writers.empty())) continue;
        for (auto* list : {&a->host_readers, &a->host_writers})
            list->erase(std::remove_if(list->begin(), list->end(), done), list->end());
        set_protection(a.get(), wanted_protection(a.get()));
    }
}

PinnedAccess::PinnedAccess(Allocation* a) : a(a) {
    if (a->protection != (PROT_READ | PROT_WRITE))
        mprotect(reinterpret_cast<void*>(a->base), a->mapped, PROT_READ | PROT_WRITE);
}

PinnedAccess::~PinnedAccess() {
    if (a->protection != (PROT_READ | PROT_WRITE))
        mprotect(reinterpret_cast<void*>(a->base), a->mapped, a->protection);
}

// ---- what a running kernel touches ----------------------------------------------------------
//
// While a kernel runs, the device memory its arguments point into is inaccessible; each first
// read of a page faults, is recorded and makes the page readable, each first write likewise
// makes it writable. So the sanitizer learns, to the page, what the kernel read and wrote,
// however narrower than its allocations that is. (The kernel runs on the thread that holds the
// state's lock, and nothing else touches device memory meanwhile.)

namespace {

struct Watch {
    uint64_t lo, hi;  // the allocation's mapping
    uint8_t* pages;   // per page: 1 read, 2 written
};
constexpr int kMaxWatches = 64;
Watch g_watch[kMaxWatches];
std::atomic<int> g_watches{0};

// The fault handler's first look: a watched page? Then record and open it, and retry.
bool watched_fault(uint64_t addr, void* uctx) {
    const int n = g_watches.load(std::memory_order_acquire);
    for (int i = 0; i < n; ++i) {
        Watch& w = g_watch[i];
        if (addr < w.lo || addr >= w.hi) continue;
        const size_t p = (addr - w.lo) / page();
        const bool write = static_cast<ucontext_t*>(uctx)->uc_mcontext.gregs[REG_ERR] & 2;
        w.pages[p] |= write ? 2 : 1;
        void* at = reinterpret_cast<void*>(w.lo + p * page());
        mprotect(at, page(), write ? PROT_READ | PROT_WRITE : PROT_READ);
        return true;
    }
    return false;
}

}  // namespace

std::vector<Touched> watch_run(const std::vector<Allocation*>& allocs, const std::function<void()>& run) {
    std::vector<std::vector<uint8_t>> pages(allocs.size());
    const int n = std::min<int>((int)allocs.size(), kMaxWatches);
    for (int i = 0; i < n; ++i) {
        Allocation* a = allocs[i];
        pages[i].assign(a->mapped / page(), 0);
        g_watch[i] = Watch{a->base, a->base + a->mapped, pages[i].data()};
        mprotect(reinterpret_cast<void*>(a->base), a->mapped, PROT_NONE);
    }
    g_watches.store(n, std::memory_order_release);
    run();
    g_watches.store(0, std::memory_order_release);
    std::vector<Touched> out;
    for (int i = 0; i < n; ++i) {
        Allocation* a = allocs[i];
        mprotect(reinterpret_cast<void*>(a->base), a->mapped, PROT_READ | PROT_WRITE);
        // Runs of pages in the same state, within the allocation's bytes.
        const auto& pg = pages[i];
        for (size_t p = 0; p < pg.size();) {
            size_t q = p;
            while (q < pg.size() && pg[q] == pg[p]) ++q;
            const uint64_t lo = a->base + p * page(), hi = std::min(a->end(), a->base + q * page());
            if (pg[p] && lo < hi) out.push_back(Touched{a, lo, hi, (pg[p] & 1) != 0, (pg[p] & 2) != 0});
            p = q;
        }
    }
    return out;
}

// ---- the host touching pinned memory it may not ---------------------------------------------

namespace {

struct sigaction g_previous;

Allocation* pinned_at(uint64_t p) {
    for (auto& [base, a] : state().live)
        if (a->device < 0 && p >= a->base && p < a->base + a->mapped) return a.get();
    for (auto& a : state().quarantine)
        if (a->device < 0 && p >= a->base && p < a->base + a->mapped) return a.get();
    return nullptr;
}

void on_fault(int sig, siginfo_t* info, void* uctx) {
    const uint64_t addr = reinterpret_cast<uint64_t>(info->si_addr);
    if (watched_fault(addr, uctx)) return;
    // The state's lock: another thread may hold it for a while (a kernel running); the
    // faulting thread itself never touches pinned memory with it held.
    std::unique_lock<std::mutex> lk(state().mu, std::defer_lock);
    for (int i = 0; i < 20000 && !lk.try_lock(); ++i) usleep(100);
    Allocation* a = lk.owns_lock() ? pinned_at(addr) : nullptr;
    if (!a) {
        // Not ours: the handler that was there before decides (Rust's reports stack overflows).
        sigaction(SIGSEGV, &g_previous, nullptr);
        if (g_previous.sa_flags & SA_SIGINFO) {
            if (g_previous.sa_sigaction) g_previous.sa_sigaction(sig, info, uctx);
        }
        return;  // the access runs again, under the previous handler or the default action
    }
    const Trace here = capture_trace();
    std::string body = "  the host thread's access, at\n" + describe_trace(here, "      ");
    std::string title;
    if (!a->live) {
        title = "host access to freed pinned memory";
        body += "  the memory: " + describe_alloc(a);
        if (a->freed_by) body += "  freed by\n" + describe_op(a->freed_by, "      ");
    } else if (!a->host_writers.empty()) {
        title = "host access to pinned memory while a queued copy writes it";
        body += "  the memory: " + describe_alloc(a);
        body += "  the copy\n" + describe_op(a->host_writers.back(), "      ");
        body += "  No host synchronisation (stream, event or context) has seen the copy complete.";
    } else {
        title = "host write to pinned memory while a queued copy reads it";
        body += "  the memory: " + describe_alloc(a);
        body += "  the copy\n" + describe_op(a->host_readers.back(), "      ");
        body += "  An asynchronous copy reads pinned memory when it runs, not when it is queued: "
                "the host must see it complete (event or stream synchronisation) before writing.";
    }
    std::fprintf(stderr, "\nalexnet-sim: SANITIZER: %s\n%s\n", title.c_str(), body.c_str());
    std::fflush(stderr);
    _exit(86);
}

}  // namespace

void install_fault_handler() {
    if (config().sanitize == Sanitize::Off) return;
    struct sigaction sa;
    std::memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    // On the faulting thread's own stack, not the alternate one the Rust runtime gives each
    // thread for stack overflows: a report needs far more than that small stack holds.
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &g_previous);
}

}  // namespace sim

namespace sim {

bool check_accesses(Op& op) {
    Context* ctx = op.stream->ctx;
    const int here = ctx->dev->ordinal;
    for (const Access& x : op.accesses) {
        Allocation* a = find_live(x.lo, x.hi - x.lo);
        std::string problem;
        if (!a) {
            if (Allocation* f = find_freed(x.lo)) {
                report("use after free: " + op.info->what + " touches freed " + describe_alloc(f),
                       "  the use\n" + describe_op(op.info, "      ") +
                           (f->freed_by ? "  the free\n" + describe_op(f->freed_by, "      ") : ""));
                problem = "freed memory";
            } else if (Allocation* in = find_live(x.lo, 1)) {
                char buf[96];
                snprintf(buf, sizeof buf, "[%llu, %llu) of it", (unsigned long long)(x.lo - in->base),
                         (unsigned long long)(x.hi - in->base));
                report("access past the end of " + describe_alloc(in),
                       std::string("  bytes ") + buf + " by\n" + describe_op(op.info, "      "));
                problem = "an address past the end of an allocation";
            } else {
                char buf[64];
                snprintf(buf, sizeof buf, "0x%llx", (unsigned long long)x.lo);
                report(std::string("access outside every allocation, at ") + buf,
                       "  by\n" + describe_op(op.info, "      "));
                problem = "an address outside every allocation";
            }
        } else if (x.device_side && a->device >= 0 && a->device != here) {
            const bool enabled = ctx->peers.count(a->device) != 0;
            const bool pool_ok = !a->pool || state().devices[a->device]->pool.access.count(here) != 0;
            if (!enabled || !pool_ok) {
                report("cuda:" + std::to_string(here) + " touches a peer's memory without peer access: " +
                           describe_alloc(a),
                       "  by\n" + describe_op(op.info, "      ") +
                           (enabled ? "  Peer access is enabled, but this memory comes from the peer's memory pool, "
                                      "which needs cuMemPoolSetAccess as well.\n"
                                    : "  cuCtxEnablePeerAccess was not called for that device.\n"));
                problem = "a peer's memory without peer access";
            }
        }
        if (!problem.empty()) {
            note("%s on %s touched %s: the context now holds CUDA_ERROR_ILLEGAL_ADDRESS", op.info->what.c_str(),
                 op.info->where.c_str(), problem.c_str());
            ctx->sticky = CUDA_ERROR_ILLEGAL_ADDRESS;
            return false;
        }
        // A kernel's device memory is checked after it ran, as far as it touched it.
        if (!(op.measured && x.device_side && a->device >= 0))
            check_access(a, x.lo, x.hi, x.kind, op.info, op.clock);
    }
    return true;
}

}  // namespace sim
