// What libcublas.so.13 and libnccl.so.2 of the simulated platform use of libcuda.so.1's core:
// queuing their work on streams (with its memory accesses, for the sanitizer and the ordering),
// device memory for their workspaces, synchronisation, and the configured faults.

#pragma once

#include "abi.h"

extern "C" {

typedef struct {
    uint64_t ptr, bytes;
    int write;  // 0: read, 1: written
} sim_access;

typedef struct {
    const char* what;  // how reports name it, e.g. "cublasSgemm (m 4096, n 128, k 9216)"
    const sim_access* accesses;
    int n_accesses;
    // The work, called once when it runs, with the platform's lock held (NULL: none). For a
    // collective, only its member with group_index 0 runs, after every member's accesses were
    // checked.
    void (*run)(void* user);
    void (*drop)(void* user);  // frees `user` once the operation is done or cancelled (or NULL)
    void* user;
    uint64_t group;  // non-zero: a collective of group_size members, each queued on its stream
    int group_size, group_index;
    void* cancel_token;  // alexnet_sim_cancel(token) drops every queued operation holding it
} sim_op_desc;

// Queues `op` on `stream` (a stream of the current context; NULL its legacy stream).
CUresult alexnet_sim_enqueue(CUstream stream, const sim_op_desc* op);
// The current context's device, or -1 when the thread has none.
int alexnet_sim_current_device(void);
// The device of `stream` in the current context, or -1 when it is no stream there.
int alexnet_sim_stream_device(CUstream stream);
// Device memory on the current context's device, counted against its capacity; usable at once
// by every stream (like cuMemAlloc).
CUresult alexnet_sim_alloc(uint64_t bytes, const char* what, uint64_t* out);
// Frees it, after waiting for the device (like cuMemFree).
CUresult alexnet_sim_free(uint64_t ptr);
// Waits for all work of `device` (like cudaDeviceSynchronize).
CUresult alexnet_sim_synchronize_device(int device, const char* call);
void alexnet_sim_cancel(void* token);
int alexnet_sim_compute(void);
double alexnet_sim_hang_seconds(void);
int alexnet_sim_fault_cublas_create(void);
void alexnet_sim_fault_nccl(int* fail_rank, long* fail_call, int* late_rank, double* late_seconds);
void alexnet_sim_note(const char* line);
// A sanitizer finding (ends the run unless ALEXNET_SIM_SANITIZE=report).
void alexnet_sim_report(const char* title, const char* body);

}  // extern "C"
