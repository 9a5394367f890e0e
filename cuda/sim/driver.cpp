// The driver API entry points (libcuda.so.1): the ones the engine calls, directly and through
// cudarc 0.19's safe layer. Each takes the platform's lock, lets the scheduler run a little
// (the device works while the host calls), and acts on the model in sim.h.

#include <cstdio>
#include <cstring>

#include "sim.h"

#define API extern "C" __attribute__((visibility("default")))

namespace sim {
namespace {

thread_local Context* tl_current = nullptr;

struct Call {
    Lock lk;
    Call() : lk(state().mu) {}
};

bool valid_context(Context* c) { return c && state().contexts.count(c) && !c->destroyed; }

Context* current() { return valid_context(tl_current) ? tl_current : nullptr; }

Device* device(CUdevice d) {
    State& st = state();
    return d >= 0 && d < (int)st.devices.size() ? st.devices[d].get() : nullptr;
}

Event* event_of(CUevent h) {
    auto* e = reinterpret_cast<Event*>(h);
    return state().events.count(e) && !e->destroyed ? e : nullptr;
}

void destroy_context(Lock& lk, Context* c) {
    // Its queued work is dropped, as a device reset drops it (a synchronising caller has none
    // left; one that did not may still hold work waiting for a collective that never comes).
    (void)lk;
    c->destroyed = true;
    for (Stream* s : c->streams) {
        s->destroyed = true;
        for (auto& op : s->queue) op->cancelled = true;
    }
    for (auto& op : c->legacy->queue) op->cancelled = true;
    // Everything the context allocated goes with it.
    std::vector<Allocation*> mine;
    for (auto& [base, a] : state().live)
        if (a->device == c->dev->ordinal) mine.push_back(a.get());
    for (Allocation* a : mine) release(a, host_op("the context's destruction"));
    state().contexts.erase(c);
    if (c->dev->primary == c) c->dev->primary = nullptr;
}

CUresult check_ctx(Context* c) {
    if (!c) return CUDA_ERROR_INVALID_CONTEXT;
    return c->sticky;
}

std::string gb(uint64_t bytes) {
    char buf[32];
    snprintf(buf, sizeof buf, "%.2f GB", bytes / 1e9);
    return buf;
}

}  // namespace

// For the other libraries of the platform (sim_api.cpp).
Context* current_context() { return current(); }
}  // namespace sim

using namespace sim;

// ---- initialisation, devices ----------------------------------------------------------------

API CUresult cuInit(unsigned flags) {
    Call c;
    State& st = state();
    if (flags) return CUDA_ERROR_INVALID_VALUE;
    if (st.initialized) return CUDA_SUCCESS;
    if (!config_error().empty()) {
        note("%s", config_error().c_str());
        return CUDA_ERROR_NOT_INITIALIZED;
    }
    const Config& cfg = config();
    if (cfg.gpus == 0) return CUDA_ERROR_NO_DEVICE;
    for (int i = 0; i < cfg.gpus; ++i) {
        auto d = std::make_unique<Device>();
        d->ordinal = i;
        d->capacity = cfg.capacity[i];
        d->pool.dev = d.get();
        st.devices.push_back(std::move(d));
    }
    install_fault_handler();
    st.initialized = true;
    note("simulated CUDA platform: %d GPU%s of %s, seed %llu, %s schedule, sanitizer %s%s", cfg.gpus,
         cfg.gpus == 1 ? "" : "s", gb(cfg.capacity[0]).c_str(), (unsigned long long)cfg.seed,
         cfg.schedule == Schedule::Late ? "late" : "seeded",
         cfg.sanitize == Sanitize::Off ? "off" : cfg.sanitize == Sanitize::Report ? "reporting" : "on",
         cfg.compute ? "" : ", values not computed (ALEXNET_SIM_COMPUTE=0)");
    return CUDA_SUCCESS;
}

API CUresult cuDriverGetVersion(int* version) {
    if (!version) return CUDA_ERROR_INVALID_VALUE;
    *version = 13000;
    return CUDA_SUCCESS;
}

API CUresult cuDeviceGetCount(int* count) {
    Call c;
    if (!state().initialized) return CUDA_ERROR_NOT_INITIALIZED;
    if (!count) return CUDA_ERROR_INVALID_VALUE;
    *count = (int)state().devices.size();
    return CUDA_SUCCESS;
}

API CUresult cuDeviceGet(CUdevice* dev, int ordinal) {
    Call c;
    if (!state().initialized) return CUDA_ERROR_NOT_INITIALIZED;
    if (!dev) return CUDA_ERROR_INVALID_VALUE;
    if (!device(ordinal)) return CUDA_ERROR_INVALID_DEVICE;
    *dev = ordinal;
    return CUDA_SUCCESS;
}

API CUresult cuDeviceGetName(char* name, int len, CUdevice d) {
    Call c;
    if (!state().initialized) return CUDA_ERROR_NOT_INITIALIZED;
    if (!device(d)) return CUDA_ERROR_INVALID_DEVICE;
    if (!name || len <= 0) return CUDA_ERROR_INVALID_VALUE;
    snprintf(name, (size_t)len, "%s", config().name.c_str());
    return CUDA_SUCCESS;
}

API CUresult cuDeviceTotalMem_v2(size_t* bytes, CUdevice d) {
    Call c;
    if (!state().initialized) return CUDA_ERROR_NOT_INITIALIZED;
    Device* dev = device(d);
    if (!dev) return CUDA_ERROR_INVALID_DEVICE;
    if (!bytes) return CUDA_ERROR_INVALID_VALUE;
    *bytes = dev->capacity;
    return CUDA_SUCCESS;
}

API CUresult cuDeviceGetAttribute(int* value, int attrib, CUdevice d) {
    Call c;
    if (!state().initialized) return CUDA_ERROR_NOT_INITIALIZED;
    if (!device(d)) return CUDA_ERROR_INVALID_DEVICE;
    if (!value) return CUDA_ERROR_INVALID_VALUE;
    switch (attrib) {
        case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK: *value = 1024; break;
        case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X: *value = 1024; break;
        case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y: *value = 1024; break;
        case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z: *value = 64; break;
        case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X: *value = 2147483647; break;
        case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y: *value = 65535; break;
        case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z: *value = 65535; break;
        case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK: *value = 48 * 1024; break;
        case CU_DEVICE_ATTRIBUTE_WARP_SIZE: *value = 32; break;
        case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: *value = config().sms; break;
        case CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY: *value = 1; break;
        case CU_DEVICE_ATTRIBUTE_CONCURRENT_KERNELS: *value = 1; break;
        case CU_DEVICE_ATTRIBUTE_ASYNC_ENGINE_COUNT: *value = 2; break;
        case CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING: *value = 1; break;
        case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: *value = 9; break;
        case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: *value = 0; break;
        case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: *value = 232448; break;
        case CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED: *value = 1; break;
        default:
            note("cuDeviceGetAttribute: attribute %d is not simulated", attrib);
            return CUDA_ERROR_NOT_SUPPORTED;
    }
    return CUDA_SUCCESS;
}

API CUresult cuDeviceCanAccessPeer(int* can, CUdevice d, CUdevice peer) {
    Call c;
    if (!state().initialized) return CUDA_ERROR_NOT_INITIALIZED;
    if (!device(d) || !device(peer)) return CUDA_ERROR_INVALID_DEVICE;
    if (!can) return CUDA_ERROR_INVALID_VALUE;
    *can = config().peer[d][peer] ? 1 : 0;
    return CUDA_SUCCESS;
}

API CUresult cuDeviceGetMemPool(CUmemoryPool* pool, CUdevice d) {
    Call c;
    if (!state().initialized) return CUDA_ERROR_NOT_INITIALIZED;
    Device* dev = device(d);
    if (!dev) return CUDA_ERROR_INVALID_DEVICE;
    if (!pool) return CUDA_ERROR_INVALID_VALUE;
    *pool = reinterpret_cast<CUmemoryPool>(&dev->pool);
    return CUDA_SUCCESS;
}

API CUresult cuDeviceGetDefaultMemPool(CUmemoryPool* pool, CUdevice d) { return cuDeviceGetMemPool(pool, d); }

API CUresult cuGetErrorName(CUresult r, const char** name) {
    if (!name) return CUDA_ERROR_INVALID_VALUE;
    *name = error_name(r);
    return *name ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

API CUresult cuGetErrorString(CUresult r, const char** text) {
    if (!text) return CUDA_ERROR_INVALID_VALUE;
    *text = error_text(r);
    return *text ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

// ---- contexts -------------------------------------------------------------------------------

API CUresult cuDevicePrimaryCtxRetain(CUcontext* ctx, CUdevice d) {
    Call c;
    if (!state().initialized) return CUDA_ERROR_NOT_INITIALIZED;
    Device* dev = device(d);
    if (!dev) return CUDA_ERROR_INVALID_DEVICE;
    if (!ctx) return CUDA_ERROR_INVALID_VALUE;
    if (!dev->primary) {
        auto* x = new Context;
        x->dev = dev;
        new_stream(x, CU_STREAM_DEFAULT, true);
        state().contexts.insert(x);
        dev->primary = x;
    }
    dev->primary->refs++;
    *ctx = reinterpret_cast<CUcontext>(dev->primary);
    return CUDA_SUCCESS;
}

API CUresult cuDevicePrimaryCtxRelease_v2(CUdevice d) {
    Call c;
    if (!state().initialized) return CUDA_ERROR_NOT_INITIALIZED;
    Device* dev = device(d);
    if (!dev) return CUDA_ERROR_INVALID_DEVICE;
    Context* x = dev->primary;
    if (!x || x->refs <= 0) return CUDA_ERROR_INVALID_CONTEXT;
    if (--x->refs == 0) destroy_context(c.lk, x);
    return CUDA_SUCCESS;
}

// cudarc destroys the contexts it did not get as primary ones this way; the engine makes none.
API CUresult cuCtxDestroy_v2(CUcontext ctx) {
    Call c;
    auto* x = reinterpret_cast<Context*>(ctx);
    if (!valid_context(x)) return CUDA_ERROR_INVALID_CONTEXT;
    if (x->dev->primary == x) return CUDA_ERROR_INVALID_CONTEXT;  // released, not destroyed
    destroy_context(c.lk, x);
    return CUDA_SUCCESS;
}

API CUresult cuCtxGetCurrent(CUcontext* ctx) {
    Call c;
    if (!state().initialized) return CUDA_ERROR_NOT_INITIALIZED;
    if (!ctx) return CUDA_ERROR_INVALID_VALUE;
    *ctx = reinterpret_cast<CUcontext>(current());
    return CUDA_SUCCESS;
}

API CUresult cuCtxSetCurrent(CUcontext ctx) {
    Call c;
    if (!state().initialized) return CUDA_ERROR_NOT_INITIALIZED;
    auto* x = reinterpret_cast<Context*>(ctx);
    if (x && !valid_context(x)) return CUDA_ERROR_INVALID_CONTEXT;
    tl_current = x;
    return CUDA_SUCCESS;
}

API CUresult cuCtxGetDevice(CUdevice* d) {
    Call c;
    Context* x = current();
    if (!x) return CUDA_ERROR_INVALID_CONTEXT;
    if (!d) return CUDA_ERROR_INVALID_VALUE;
    *d = x->dev->ordinal;
    return CUDA_SUCCESS;
}

API CUresult cuCtxSynchronize() {
    Call c;
    Context* x = current();
    if (!x) return CUDA_ERROR_INVALID_CONTEXT;
    wait_context(c.lk, x, nullptr, "cuCtxSynchronize");
    return x->sticky;
}

API CUresult cuCtxEnablePeerAccess(CUcontext peer, unsigned flags) {
    Call c;
    Context* x = current();
    auto* p = reinterpret_cast<Context*>(peer);
    if (!x || !valid_context(p)) return CUDA_ERROR_INVALID_CONTEXT;
    if (flags) return CUDA_ERROR_INVALID_VALUE;
    if (p->dev == x->dev || !config().peer[x->dev->ordinal][p->dev->ordinal])
        return CUDA_ERROR_PEER_ACCESS_UNSUPPORTED;
    if (!x->peers.insert(p->dev->ordinal).second) return CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED;
    return CUDA_SUCCESS;
}

API CUresult cuMemPoolSetAttribute(CUmemoryPool pool, int attr, void* value) {
    Call c;
    auto* p = reinterpret_cast<Pool*>(pool);
    bool known = false;
    for (auto& d : state().devices) known = known || &d->pool == p;
    if (!known) return CUDA_ERROR_INVALID_VALUE;
    if (attr != CU_MEMPOOL_ATTR_RELEASE_THRESHOLD || !value) {
        note("cuMemPoolSetAttribute: attribute %d is not simulated", attr);
        return CUDA_ERROR_NOT_SUPPORTED;
    }
    std::memcpy(&p->release_threshold, value, 8);
    return CUDA_SUCCESS;
}

API CUresult cuMemPoolSetAccess(CUmemoryPool pool, const CUmemAccessDesc* desc, size_t count) {
    Call c;
    auto* p = reinterpret_cast<Pool*>(pool);
    bool known = false;
    for (auto& d : state().devices) known = known || &d->pool == p;
    if (!known || (!desc && count)) return CUDA_ERROR_INVALID_VALUE;
    for (size_t i = 0; i < count; ++i) {
        const int d = desc[i].location.id;
        if (desc[i].location.type != CU_MEM_LOCATION_TYPE_DEVICE || !device(d)) return CUDA_ERROR_INVALID_VALUE;
        if (d == p->dev->ordinal) continue;  // the owner always has access
        // Access needs the devices to be peers at all.
        if (!config().peer[d][p->dev->ordinal]) return CUDA_ERROR_INVALID_DEVICE;
        if (desc[i].flags == CU_MEM_ACCESS_FLAGS_PROT_NONE) p->access.erase(d);
        else p->access.insert(d);
    }
    return CUDA_SUCCESS;
}

// ---- streams and events ---------------------------------------------------------------------

API CUresult cuStreamCreate(CUstream* out, unsigned flags) {
    Call c;
    Context* x = current();
    if (CUresult r = check_ctx(x)) return r;
    if (!out || flags > CU_STREAM_NON_BLOCKING) return CUDA_ERROR_INVALID_VALUE;
    *out = reinterpret_cast<CUstream>(new_stream(x, flags));
    return CUDA_SUCCESS;
}

API CUresult cuStreamDestroy_v2(CUstream h) {
    Call c;
    Stream* s = resolve_stream(h, current());
    if (!s || s == s->ctx->legacy) return CUDA_ERROR_INVALID_HANDLE;
    // Its queued work still runs; the stream goes when it is done.
    s->destroyed = true;
    return CUDA_SUCCESS;
}

API CUresult cuStreamSynchronize(CUstream h) {
    Call c;
    Stream* s = resolve_stream(h, current());
    if (!s) return h ? CUDA_ERROR_INVALID_HANDLE : CUDA_ERROR_INVALID_CONTEXT;
    if (CUresult r = check_ctx(s->ctx)) return r;
    const Clock clock = s->clock;
    wait_point(c.lk, Point{s, s->issued}, clock, "cuStreamSynchronize");
    return s->ctx->sticky;
}

API CUresult cuStreamQuery(CUstream h) {
    Call c;
    Stream* s = resolve_stream(h, current());
    if (!s) return CUDA_ERROR_INVALID_HANDLE;
    if (CUresult r = check_ctx(s->ctx)) return r;
    progress(c.lk);
    if (s->completed >= s->issued) {
        host_saw(s->clock);
        return CUDA_SUCCESS;
    }
    if (config().schedule == Schedule::Late) {
        // Not done at this query, done by the next: work may wait until a host looks, not
        // forever. (The host has not seen it complete: nothing is joined.)
        const Clock clock = s->clock;
        wait_point(c.lk, Point{s, s->issued}, clock, "cuStreamQuery", false);
    }
    return CUDA_ERROR_NOT_READY;
}

API CUresult cuEventCreate(CUevent* out, unsigned flags) {
    Call c;
    Context* x = current();
    if (CUresult r = check_ctx(x)) return r;
    if (!out || flags & ~7u) return CUDA_ERROR_INVALID_VALUE;
    auto* e = new Event;
    e->ctx = x;
    e->flags = flags;
    state().events.insert(e);
    *out = reinterpret_cast<CUevent>(e);
    return CUDA_SUCCESS;
}

API CUresult cuEventDestroy_v2(CUevent h) {
    Call c;
    Event* e = event_of(h);
    if (!e) return CUDA_ERROR_INVALID_HANDLE;
    // A pending record still completes it; the event stays allocated for that, unreachable.
    e->destroyed = true;
    return CUDA_SUCCESS;
}

API CUresult cuEventRecord(CUevent h, CUstream sh) {
    Call c;
    progress(c.lk);
    Event* e = event_of(h);
    if (!e) return CUDA_ERROR_INVALID_HANDLE;
    Stream* s = resolve_stream(sh, sh ? nullptr : current());
    if (!s) return sh ? CUDA_ERROR_INVALID_HANDLE : CUDA_ERROR_INVALID_CONTEXT;
    if (s->ctx != e->ctx) return CUDA_ERROR_INVALID_HANDLE;  // "must be from the same context"
    if (CUresult r = check_ctx(s->ctx)) return r;
    auto op = new_op("cuEventRecord");
    op->run = [e](Op& self) {
        // A later record of the event replaced this one: its time is not the event's.
        if (e->point.stream != self.stream || e->point.pos != self.pos) return;
        e->time_ms = now_seconds() * 1e3;
        e->time_valid = true;
    };
    Op* queued = enqueue(c.lk, s, std::move(op));
    e->recorded = true;
    e->point = Point{s, queued->pos};
    e->clock = queued->clock;
    e->time_valid = false;
    return CUDA_SUCCESS;
}

API CUresult cuStreamWaitEvent(CUstream sh, CUevent h, unsigned flags) {
    Call c;
    progress(c.lk);
    Stream* s = resolve_stream(sh, current());
    Event* e = event_of(h);
    if (!s) return sh ? CUDA_ERROR_INVALID_HANDLE : CUDA_ERROR_INVALID_CONTEXT;
    if (!e) return CUDA_ERROR_INVALID_HANDLE;
    if (flags) return CUDA_ERROR_INVALID_VALUE;
    if (CUresult r = check_ctx(s->ctx)) return r;
    if (!e->recorded) return CUDA_SUCCESS;  // waiting for a never-recorded event waits for nothing
    auto op = new_op("cuStreamWaitEvent (an event of " + e->point.stream->name() + ")");
    op->waits.push_back(e->point);
    s->clock.join(e->clock);
    enqueue(c.lk, s, std::move(op));
    return CUDA_SUCCESS;
}

API CUresult cuEventSynchronize(CUevent h) {
    Call c;
    Event* e = event_of(h);
    if (!e) return CUDA_ERROR_INVALID_HANDLE;
    if (!e->recorded) return CUDA_SUCCESS;
    const Clock clock = e->clock;
    wait_point(c.lk, e->point, clock, "cuEventSynchronize");
    return e->ctx->sticky;
}

API CUresult cuEventQuery(CUevent h) {
    Call c;
    Event* e = event_of(h);
    if (!e) return CUDA_ERROR_INVALID_HANDLE;
    if (e->ctx->sticky) return e->ctx->sticky;
    progress(c.lk);
    if (!e->recorded || point_complete(e->point)) {
        if (e->recorded) host_saw(e->clock);
        return CUDA_SUCCESS;
    }
    if (config().schedule == Schedule::Late) {
        // As in cuStreamQuery.
        const Clock clock = e->clock;
        wait_point(c.lk, e->point, clock, "cuEventQuery", false);
    }
    return CUDA_ERROR_NOT_READY;
}

API CUresult cuEventElapsedTime_v2(float* ms, CUevent start, CUevent end) {
    Call c;
    Event* a = event_of(start);
    Event* b = event_of(end);
    if (!a || !b) return CUDA_ERROR_INVALID_HANDLE;
    if (!ms) return CUDA_ERROR_INVALID_VALUE;
    if ((a->flags | b->flags) & CU_EVENT_DISABLE_TIMING) return CUDA_ERROR_INVALID_HANDLE;
    if (!a->recorded || !b->recorded) return CUDA_ERROR_INVALID_HANDLE;
    if (!point_complete(a->point) || !point_complete(b->point)) return CUDA_ERROR_NOT_READY;
    if (!a->time_valid || !b->time_valid) return CUDA_ERROR_INVALID_HANDLE;
    *ms = (float)(b->time_ms - a->time_ms);
    return CUDA_SUCCESS;
}

API CUresult cuEventElapsedTime(float* ms, CUevent start, CUevent end) { return cuEventElapsedTime_v2(ms, start, end); }

// ---- memory ---------------------------------------------------------------------------------

API CUresult cuMemAllocAsync(CUdeviceptr* out, size_t bytes, CUstream sh) {
    Call c;
    progress(c.lk);
    Stream* s = resolve_stream(sh, current());
    if (!s) return sh ? CUDA_ERROR_INVALID_HANDLE : CUDA_ERROR_INVALID_CONTEXT;
    if (CUresult r = check_ctx(s->ctx)) return r;
    if (!out) return CUDA_ERROR_INVALID_VALUE;
    const std::string what = "cuMemAllocAsync of " + std::to_string(bytes) + " bytes";
    uint64_t p = 0;
    if (CUresult r = alloc_device(c.lk, s->ctx->dev, bytes, true, what + " on " + s->name(), &p)) return r;
    // Usable in stream order after this point: the sanitizer sees an earlier or unordered use.
    Op* op = enqueue(c.lk, s, new_op(what));
    Allocation* a = find_live(p);
    a->allocated_by = op->info;
    init_shadow(a, op->info);
    *out = p;
    return CUDA_SUCCESS;
}

API CUresult cuMemFreeAsync(CUdeviceptr p, CUstream sh) {
    Call c;
    progress(c.lk);
    Stream* s = resolve_stream(sh, current());
    if (!s) return sh ? CUDA_ERROR_INVALID_HANDLE : CUDA_ERROR_INVALID_CONTEXT;
    if (CUresult r = check_ctx(s->ctx)) return r;
    Allocation* a = find_live(p);
    if (!a || a->base != p || a->device < 0) {
        if (Allocation* f = find_freed(p)) {
            report("cuMemFreeAsync of memory already freed: " + describe_alloc(f),
                   f->freed_by ? "  freed before by\n" + describe_op(f->freed_by, "      ") : "");
        }
        return CUDA_ERROR_INVALID_VALUE;
    }
    auto op = new_op("cuMemFreeAsync of " + std::to_string(a->size) + " bytes");
    op->accesses.push_back(Access{a->base, a->end(), AccessKind::Free, false});
    const uint64_t base = a->base;
    op->run = [base](Op& self) {
        if (Allocation* live = find_live(base)) release(live, self.info);
    };
    enqueue(c.lk, s, std::move(op));
    return CUDA_SUCCESS;
}

API CUresult cuMemAlloc_v2(CUdeviceptr* out, size_t bytes) {
    Call c;
    Context* x = current();
    if (CUresult r = check_ctx(x)) return r;
    if (!out) return CUDA_ERROR_INVALID_VALUE;
    const std::string what = "cuMemAlloc of " + std::to_string(bytes) + " bytes";
    uint64_t p = 0;
    if (CUresult r = alloc_device(c.lk, x->dev, bytes, false, what, &p)) return r;
    Allocation* a = find_live(p);
    a->allocated_by = host_op(what);
    init_shadow(a, a->allocated_by);
    *out = p;
    return CUDA_SUCCESS;
}

API CUresult cuMemFree_v2(CUdeviceptr p) {
    Call c;
    Context* x = current();
    if (!x) return CUDA_ERROR_INVALID_CONTEXT;
    Allocation* a = find_live(p);
    if (!a || a->base != p || a->device < 0) return CUDA_ERROR_INVALID_VALUE;
    // cuMemFree waits for the device first.
    wait_context(c.lk, nullptr, state().devices[a->device].get(), "cuMemFree");
    const OpRef by = host_op("cuMemFree");
    check_access(a, a->base, a->end(), AccessKind::Free, by, host().clock);
    release(a, by);
    return CUDA_SUCCESS;
}

API CUresult cuMemGetInfo_v2(size_t* free_bytes, size_t* total) {
    Call c;
    Context* x = current();
    if (!x) return CUDA_ERROR_INVALID_CONTEXT;
    if (free_bytes) *free_bytes = x->dev->capacity - x->dev->used;
    if (total) *total = x->dev->capacity;
    return CUDA_SUCCESS;
}

API CUresult cuMemHostAlloc(void** out, size_t bytes, unsigned flags) {
    Call c;
    Context* x = current();
    if (CUresult r = check_ctx(x)) return r;
    if (!out || flags & ~7u) return CUDA_ERROR_INVALID_VALUE;
    if (CUresult r = alloc_pinned(bytes, out)) return r;
    Allocation* a = find_live(reinterpret_cast<uint64_t>(*out));
    a->what = "cuMemHostAlloc of " + std::to_string(bytes) + " bytes";
    a->allocated_by = host_op(a->what);
    // The host writes it unseen: its bytes count as written.
    init_shadow(a, a->allocated_by, true);
    return CUDA_SUCCESS;
}

API CUresult cuMemAllocHost_v2(void** out, size_t bytes) { return cuMemHostAlloc(out, bytes, 0); }

API CUresult cuMemFreeHost(void* p) {
    Call c;
    Allocation* a = find_live(reinterpret_cast<uint64_t>(p));
    if (!a || a->device >= 0 || a->base != reinterpret_cast<uint64_t>(p)) {
        if (Allocation* f = find_freed(reinterpret_cast<uint64_t>(p)))
            report("cuMemFreeHost of memory already freed: " + describe_alloc(f), "");
        return CUDA_ERROR_INVALID_VALUE;
    }
    // Frees now: queued copies still using it are a use after free (the sanitizer sees the free
    // unordered with them now, or the copy touching freed memory when it runs).
    const OpRef by = host_op("cuMemFreeHost");
    if (!a->host_readers.empty() || !a->host_writers.empty()) {
        const OpRef& user = !a->host_writers.empty() ? a->host_writers.back() : a->host_readers.back();
        report("pinned memory freed while a queued copy may still use it: " + describe_alloc(a),
               "  the copy\n" + describe_op(user, "      ") + "  the free\n" + describe_op(by, "      ") +
                   "  No host synchronisation has seen the copy complete.");
    }
    check_access(a, a->base, a->end(), AccessKind::Free, by, host().clock);
    release(a, by);
    return CUDA_SUCCESS;
}

API CUresult cuMemsetD8Async(CUdeviceptr p, unsigned char value, size_t n, CUstream sh) {
    Call c;
    progress(c.lk);
    Stream* s = resolve_stream(sh, current());
    if (!s) return sh ? CUDA_ERROR_INVALID_HANDLE : CUDA_ERROR_INVALID_CONTEXT;
    if (CUresult r = check_ctx(s->ctx)) return r;
    auto op = new_op("cuMemsetD8Async of " + std::to_string(n) + " bytes");
    op->accesses.push_back(Access{p, p + n, AccessKind::Write, false});
    op->run = [p, value, n](Op&) {
        if (config().compute) std::memset(reinterpret_cast<void*>(p), value, n);
    };
    enqueue(c.lk, s, std::move(op));
    return CUDA_SUCCESS;
}

API CUresult cuMemsetD32Async(CUdeviceptr p, unsigned value, size_t n, CUstream sh) {
    Call c;
    progress(c.lk);
    Stream* s = resolve_stream(sh, current());
    if (!s) return sh ? CUDA_ERROR_INVALID_HANDLE : CUDA_ERROR_INVALID_CONTEXT;
    if (CUresult r = check_ctx(s->ctx)) return r;
    auto op = new_op("cuMemsetD32Async of " + std::to_string(n) + " words");
    op->accesses.push_back(Access{p, p + 4 * n, AccessKind::Write, false});
    op->run = [p, value, n](Op&) {
        if (!config().compute) return;
        auto* w = reinterpret_cast<uint32_t*>(p);
        for (size_t i = 0; i < n; ++i) w[i] = value;
    };
    enqueue(c.lk, s, std::move(op));
    return CUDA_SUCCESS;
}

// ---- copies ---------------------------------------------------------------------------------

namespace {

CUresult copy_on(CUstream sh, const std::string& what, std::vector<Run> runs, Side from, Side to, bool sync) {
    Call c;
    progress(c.lk);
    Stream* s = resolve_stream(sh, current());
    if (!s) return sh ? CUDA_ERROR_INVALID_HANDLE : CUDA_ERROR_INVALID_CONTEXT;
    if (CUresult r = check_ctx(s->ctx)) return r;
    // Device to pageable host memory returns once the copy is done; so do the synchronous calls.
    bool blocking = sync;
    if (to == Side::Host)
        for (const Run& r : runs)
            if (Allocation* a = find_live(r.dst, r.bytes); !a || a->device >= 0) blocking = true;
    if (CUresult r = copy(c.lk, s, what, std::move(runs), from, to, blocking)) return r;
    return blocking ? s->ctx->sticky : CUDA_SUCCESS;
}

std::string bytes_of(size_t n) { return std::to_string(n) + " bytes"; }

Side side_of(unsigned memory_type, uint64_t p) {
    if (memory_type == CU_MEMORYTYPE_HOST) return Side::Host;
    if (memory_type == CU_MEMORYTYPE_UNIFIED) {
        Allocation* a = find_live(p);
        return a && a->device >= 0 ? Side::Device : Side::Host;
    }
    return Side::Device;
}

}  // namespace

API CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void* src, size_t n, CUstream s) {
    return copy_on(s, "cuMemcpyHtoDAsync of " + bytes_of(n), {Run{dst, reinterpret_cast<uint64_t>(src), n}},
                   Side::Host, Side::Device, false);
}

API CUresult cuMemcpyDtoHAsync_v2(void* dst, CUdeviceptr src, size_t n, CUstream s) {
    return copy_on(s, "cuMemcpyDtoHAsync of " + bytes_of(n), {Run{reinterpret_cast<uint64_t>(dst), src, n}},
                   Side::Device, Side::Host, false);
}

API CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s) {
    return copy_on(s, "cuMemcpyDtoDAsync of " + bytes_of(n), {Run{dst, src, n}}, Side::Device, Side::Device, false);
}

API CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void* src, size_t n) {
    return copy_on(nullptr, "cuMemcpyHtoD of " + bytes_of(n), {Run{dst, reinterpret_cast<uint64_t>(src), n}},
                   Side::Host, Side::Device, true);
}

API CUresult cuMemcpyDtoH_v2(void* dst, CUdeviceptr src, size_t n) {
    return copy_on(nullptr, "cuMemcpyDtoH of " + bytes_of(n), {Run{reinterpret_cast<uint64_t>(dst), src, n}},
                   Side::Device, Side::Host, true);
}

API CUresult cuMemcpyPeerAsync(CUdeviceptr dst, CUcontext dst_ctx, CUdeviceptr src, CUcontext src_ctx, size_t n,
                               CUstream s) {
    {
        Call c;
        if (!valid_context(reinterpret_cast<Context*>(dst_ctx)) || !valid_context(reinterpret_cast<Context*>(src_ctx)))
            return CUDA_ERROR_INVALID_CONTEXT;
    }
    return copy_on(s, "cuMemcpyPeerAsync of " + bytes_of(n), {Run{dst, src, n}}, Side::Device, Side::Device, false);
}

API CUresult cuMemcpy2DAsync_v2(const CUDA_MEMCPY2D* p, CUstream s) {
    if (!p) return CUDA_ERROR_INVALID_VALUE;
    if (p->srcMemoryType == CU_MEMORYTYPE_ARRAY || p->dstMemoryType == CU_MEMORYTYPE_ARRAY) {
        note("cuMemcpy2DAsync: CUDA arrays are not simulated");
        return CUDA_ERROR_NOT_SUPPORTED;
    }
    if (p->Height > 1 && (p->srcPitch < p->WidthInBytes || p->dstPitch < p->WidthInBytes))
        return CUDA_ERROR_INVALID_VALUE;
    const uint64_t src0 = (p->srcMemoryType == CU_MEMORYTYPE_HOST ? reinterpret_cast<uint64_t>(p->srcHost)
                                                                  : p->srcDevice) +
                          p->srcY * p->srcPitch + p->srcXInBytes;
    const uint64_t dst0 = (p->dstMemoryType == CU_MEMORYTYPE_HOST ? reinterpret_cast<uint64_t>(p->dstHost)
                                                                  : p->dstDevice) +
                          p->dstY * p->dstPitch + p->dstXInBytes;
    std::vector<Run> runs;
    for (size_t y = 0; y < p->Height; ++y)
        runs.push_back(Run{dst0 + y * p->dstPitch, src0 + y * p->srcPitch, p->WidthInBytes});
    Side from, to;
    {
        Call c;
        from = side_of(p->srcMemoryType, src0);
        to = side_of(p->dstMemoryType, dst0);
    }
    return copy_on(s,
                   "cuMemcpy2DAsync of " + std::to_string(p->Height) + " rows of " + bytes_of(p->WidthInBytes),
                   std::move(runs), from, to, false);
}

API CUresult cuMemcpy3DPeerAsync(const CUDA_MEMCPY3D_PEER* p, CUstream s) {
    if (!p) return CUDA_ERROR_INVALID_VALUE;
    if (p->srcMemoryType == CU_MEMORYTYPE_ARRAY || p->dstMemoryType == CU_MEMORYTYPE_ARRAY) {
        note("cuMemcpy3DPeerAsync: CUDA arrays are not simulated");
        return CUDA_ERROR_NOT_SUPPORTED;
    }
    if (p->srcLOD || p->dstLOD) return CUDA_ERROR_INVALID_VALUE;
    if ((p->Height > 1 || p->Depth > 1) && (p->srcPitch < p->WidthInBytes || p->dstPitch < p->WidthInBytes))
        return CUDA_ERROR_INVALID_VALUE;
    if (p->Depth > 1 && (p->srcHeight < p->Height || p->dstHeight < p->Height)) return CUDA_ERROR_INVALID_VALUE;
    {
        Call c;
        if (!valid_context(reinterpret_cast<Context*>(p->srcContext)) ||
            !valid_context(reinterpret_cast<Context*>(p->dstContext)))
            return CUDA_ERROR_INVALID_CONTEXT;
    }
    const uint64_t src_base = p->srcMemoryType == CU_MEMORYTYPE_HOST ? reinterpret_cast<uint64_t>(p->srcHost) : p->srcDevice;
    const uint64_t dst_base = p->dstMemoryType == CU_MEMORYTYPE_HOST ? reinterpret_cast<uint64_t>(p->dstHost) : p->dstDevice;
    std::vector<Run> runs;
    for (size_t z = 0; z < p->Depth; ++z)
        for (size_t y = 0; y < p->Height; ++y)
            runs.push_back(Run{dst_base + ((p->dstZ + z) * p->dstHeight + p->dstY + y) * p->dstPitch + p->dstXInBytes,
                               src_base + ((p->srcZ + z) * p->srcHeight + p->srcY + y) * p->srcPitch + p->srcXInBytes,
                               p->WidthInBytes});
    Side from, to;
    {
        Call c;
        from = side_of(p->srcMemoryType, src_base);
        to = side_of(p->dstMemoryType, dst_base);
    }
    return copy_on(s,
                   "cuMemcpy3DPeerAsync of " + std::to_string(p->Depth * p->Height) + " rows of " +
                       bytes_of(p->WidthInBytes),
                   std::move(runs), from, to, false);
}

// ---- modules and launches -------------------------------------------------------------------

API CUresult cuModuleLoadData(CUmodule* out, const void* image) {
    Call c;
    Context* x = current();
    if (CUresult r = check_ctx(x)) return r;
    if (!out) return CUDA_ERROR_INVALID_VALUE;
    return load_module(x, image, out);
}

API CUresult cuModuleUnload(CUmodule h) {
    Call c;
    Module* m = module_of(h);
    if (!m) return CUDA_ERROR_INVALID_HANDLE;
    return module_unload(m);
}

API CUresult cuModuleGetFunction(CUfunction* out, CUmodule h, const char* name) {
    Call c;
    Module* m = module_of(h);
    if (!m) return CUDA_ERROR_INVALID_HANDLE;
    if (!out || !name) return CUDA_ERROR_INVALID_VALUE;
    return module_get_function(m, name, out);
}

API CUresult cuFuncGetParamInfo(CUfunction h, size_t index, size_t* offset, size_t* size) {
    Call c;
    Function* f = function_of(h);
    if (!f) return CUDA_ERROR_INVALID_HANDLE;
    return function_param_info(f, index, offset, size);
}

API CUresult cuFuncSetAttribute(CUfunction h, int attrib, int value) {
    Call c;
    Function* f = function_of(h);
    if (!f) return CUDA_ERROR_INVALID_HANDLE;
    return function_set_attribute(f, attrib, value);
}

API CUresult cuLaunchKernel(CUfunction h, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                            unsigned bz, unsigned shared, CUstream sh, void** params, void** extra) {
    Call c;
    progress(c.lk);
    Function* f = function_of(h);
    if (!f) return CUDA_ERROR_INVALID_HANDLE;
    Context* x = current();
    if (!x) return CUDA_ERROR_INVALID_CONTEXT;
    if (function_context(f) != x) return CUDA_ERROR_INVALID_CONTEXT;
    if (CUresult r = check_ctx(x)) return r;
    Stream* s = resolve_stream(sh, x);
    if (!s) return CUDA_ERROR_INVALID_HANDLE;
    if (s->ctx != x) return CUDA_ERROR_INVALID_HANDLE;
    const unsigned grid[3] = {gx, gy, gz}, block[3] = {bx, by, bz};
    return launch(c.lk, f, grid, block, shared, s, params, extra);
}
