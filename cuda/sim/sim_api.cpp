// libcuda.so.1's side of sim_api.h.

#include <memory>

#include "sim.h"
#include "sim_api.h"

#define API extern "C" __attribute__((visibility("default")))

namespace sim {
Context* current_context();
}

using namespace sim;

API CUresult alexnet_sim_enqueue(CUstream stream, const sim_op_desc* d) {
    Lock lk(state().mu);
    progress(lk);
    Context* x = current_context();
    Stream* s = resolve_stream(stream, x);
    if (!s) return stream ? CUDA_ERROR_INVALID_HANDLE : CUDA_ERROR_INVALID_CONTEXT;
    if (s->ctx->sticky) return s->ctx->sticky;
    auto op = new_op(d->what ? d->what : "library operation");
    for (int i = 0; i < d->n_accesses; ++i) {
        const sim_access& a = d->accesses[i];
        op->accesses.push_back(Access{a.ptr, a.ptr + a.bytes, a.write ? AccessKind::Write : AccessKind::Read, true});
    }
    // The user data lives as long as the operation; its owner frees it.
    std::shared_ptr<void> user(d->user, [drop = d->drop](void* u) {
        if (drop) drop(u);
    });
    if (d->run) op->run = [run = d->run, user](Op&) { run(user.get()); };
    else op->run = [user](Op&) {};
    op->group = d->group;
    op->group_size = d->group_size;
    op->group_index = d->group_index;
    op->cancel_token = d->cancel_token;
    enqueue(lk, s, std::move(op));
    return CUDA_SUCCESS;
}

API int alexnet_sim_current_device(void) {
    Lock lk(state().mu);
    Context* x = current_context();
    return x ? x->dev->ordinal : -1;
}

API int alexnet_sim_stream_device(CUstream stream) {
    Lock lk(state().mu);
    Stream* s = resolve_stream(stream, current_context());
    return s ? s->ctx->dev->ordinal : -1;
}

API CUresult alexnet_sim_alloc(uint64_t bytes, const char* what, uint64_t* out) {
    Lock lk(state().mu);
    Context* x = current_context();
    if (!x) return CUDA_ERROR_INVALID_CONTEXT;
    if (CUresult r = alloc_device(lk, x->dev, bytes, false, what, out)) return r;
    Allocation* a = find_live(*out);
    a->allocated_by = host_op(what);
    init_shadow(a, a->allocated_by);
    return CUDA_SUCCESS;
}

API CUresult alexnet_sim_free(uint64_t ptr) {
    Lock lk(state().mu);
    Allocation* a = find_live(ptr);
    if (!a || a->base != ptr || a->device < 0) return CUDA_ERROR_INVALID_VALUE;
    wait_context(lk, nullptr, state().devices[a->device].get(), "a library's free");
    const OpRef by = host_op("a library's free");
    check_access(a, a->base, a->end(), AccessKind::Free, by, host().clock);
    release(a, by);
    return CUDA_SUCCESS;
}

API CUresult alexnet_sim_synchronize_device(int device, const char* call) {
    Lock lk(state().mu);
    State& st = state();
    if (device < 0 || device >= (int)st.devices.size()) return CUDA_ERROR_INVALID_DEVICE;
    wait_context(lk, nullptr, st.devices[device].get(), call);
    Device* dev = st.devices[device].get();
    return dev->primary ? dev->primary->sticky : CUDA_SUCCESS;
}

API void alexnet_sim_cancel(void* token) {
    Lock lk(state().mu);
    cancel_ops(lk, token);
}

API int alexnet_sim_compute(void) { return config().compute ? 1 : 0; }

API double alexnet_sim_hang_seconds(void) { return config().hang_seconds; }

API int alexnet_sim_fault_cublas_create(void) { return config().cublas_create_fails ? 1 : 0; }

API void alexnet_sim_fault_nccl(int* fail_rank, long* fail_call, int* late_rank, double* late_seconds) {
    const Config& c = config();
    *fail_rank = c.nccl_fail_rank;
    *fail_call = c.nccl_fail_call;
    *late_rank = c.nccl_late_rank;
    *late_seconds = c.nccl_late_seconds;
}

API void alexnet_sim_note(const char* line) { note("%s", line); }

API void alexnet_sim_report(const char* title, const char* body) { report(title, body); }
