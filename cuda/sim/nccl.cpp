// libnccl.so.2 of the simulated platform: communicators over the threads of one process, and
// ncclAllReduce as a stream operation of each rank that completes only when every rank has
// issued its own and their streams have reached them (the platform's collective operations).
// So a rank that dies or never arrives leaves the others waiting, as the real library does;
// ncclCommAbort drops the aborting rank's queued collectives and releases nobody else. Set-up
// blocks until every rank has joined, or with a non-blocking config returns ncclInProgress and
// ncclCommGetAsyncError says when it is done; a peer that aborts before set-up completes makes
// the set-up fail for the others (ncclRemoteError).

#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "sim_api.h"

#define API extern "C" __attribute__((visibility("default")))

struct Collective;

namespace {

const char kMagic[16] = {'a', 'l', 'e', 'x', 'n', 'e', 't', '-', 's', 'i', 'm', '-', 'n', 'c', 'c', 'l'};

struct Group {
    uint64_t id;
    int nranks;
    std::vector<ncclComm_t> members;
    int joined = 0;
    bool abandoned = false;  // a rank gave up before every rank joined
    std::map<uint64_t, std::shared_ptr<Collective>> collectives;  // by sequence number
};

std::mutex g_mu;
std::condition_variable g_cv;
std::map<std::string, std::unique_ptr<Group>> g_groups;
uint64_t g_next_group = 1;
thread_local int tl_group_depth = 0;
std::string g_last_error;

void fail_note(const std::string& msg) {
    g_last_error = msg;
    alexnet_sim_note(msg.c_str());
}

double now() {
    using namespace std::chrono;
    return duration<double>(steady_clock::now().time_since_epoch()).count();
}

}  // namespace

struct ncclComm {
    Group* group = nullptr;
    int rank = 0, nranks = 0, device = -1;
    bool aborted = false;
    ncclResult_t async_error = ncclSuccess;
    uint64_t calls = 0;  // collectives issued: the k-th of every rank match
};

struct Collective {
    uint64_t count = 0;
    int dtype = 0, op = 0, nranks = 0;
    std::vector<const void*> send;
    std::vector<void*> recv;
    std::vector<bool> seen;
    std::string mismatch;
};

namespace {

size_t dtype_size(int t) {
    switch (t) {
        case ncclInt32: return 4;
        case ncclFloat32: return 4;
        case ncclFloat64: return 8;
        default: return 0;
    }
}

template <typename T>
void reduce(Collective& c) {
    std::vector<T> acc(c.count);
    for (int r = 0; r < c.nranks; ++r) {
        const T* in = static_cast<const T*>(c.send[r]);
        for (uint64_t i = 0; i < c.count; ++i) {
            const T v = in[i];
            if (r == 0) acc[i] = v;
            else if (c.op == ncclSum || c.op == ncclAvg) acc[i] += v;
            else if (c.op == ncclProd) acc[i] *= v;
            else if (c.op == ncclMax) acc[i] = v > acc[i] ? v : acc[i];
            else acc[i] = v < acc[i] ? v : acc[i];
        }
    }
    if (c.op == ncclAvg)
        for (auto& v : acc) v = (T)(v / (T)c.nranks);
    for (int r = 0; r < c.nranks; ++r) std::memcpy(c.recv[r], acc.data(), c.count * sizeof(T));
}

struct Member {
    std::shared_ptr<Collective> coll;
};

void run_collective(void* user) {
    Collective& c = *static_cast<Member*>(user)->coll;
    if (!c.mismatch.empty()) {
        alexnet_sim_report("ncclAllReduce calls that do not match across the ranks", c.mismatch.c_str());
        return;
    }
    if (!alexnet_sim_compute()) return;
    switch (c.dtype) {
        case ncclFloat32: reduce<float>(c); break;
        case ncclFloat64: reduce<double>(c); break;
        case ncclInt32: reduce<int32_t>(c); break;
    }
}

void drop_member(void* user) { delete static_cast<Member*>(user); }

ncclResult_t init(ncclComm_t* out, int nranks, const ncclUniqueId& id, int rank, bool blocking) {
    if (!out) return ncclInvalidArgument;
    if (std::memcmp(id.internal, kMagic, sizeof kMagic) != 0) {
        fail_note("ncclCommInitRank: the unique id was not made by ncclGetUniqueId of this platform");
        return ncclInvalidArgument;
    }
    int64_t pid;
    std::memcpy(&pid, id.internal + 16, 8);
    if (pid != getpid()) {
        fail_note("ncclCommInitRank: the simulated NCCL links the ranks of one process; this id comes from process " +
                  std::to_string(pid));
        return ncclInvalidUsage;
    }
    if (nranks < 1 || rank < 0 || rank >= nranks) return ncclInvalidArgument;
    const int device = alexnet_sim_current_device();
    if (device < 0) {
        fail_note("ncclCommInitRank: the calling thread has no current CUDA context (NCCL takes its device from it)");
        return ncclInvalidUsage;
    }
    int late_rank, fail_rank;
    long fail_call;
    double late_seconds;
    alexnet_sim_fault_nccl(&fail_rank, &fail_call, &late_rank, &late_seconds);
    if (rank == late_rank && late_seconds > 0) {
        char buf[128];
        snprintf(buf, sizeof buf, "fault injected: rank %d reaches NCCL's set-up %.1f s late", rank, late_seconds);
        alexnet_sim_note(buf);
        std::this_thread::sleep_for(std::chrono::duration<double>(late_seconds));
    }
    std::unique_lock<std::mutex> lk(g_mu);
    const std::string key(id.internal, SIM_NCCL_UNIQUE_ID_BYTES);
    auto& g = g_groups[key];
    if (!g) {
        g = std::make_unique<Group>();
        g->id = g_next_group++;
        g->nranks = nranks;
        g->members.assign(nranks, nullptr);
    }
    if (g->nranks != nranks) {
        fail_note("ncclCommInitRank: rank " + std::to_string(rank) + " says " + std::to_string(nranks) +
                  " ranks, an earlier one said " + std::to_string(g->nranks));
        return ncclInvalidUsage;
    }
    if (g->abandoned) {
        fail_note("ncclCommInitRank: rank " + std::to_string(rank) +
                  " arrived after a peer gave up on the set-up (it aborted its communicator)");
        return ncclRemoteError;
    }
    if (g->members[rank]) {
        fail_note("ncclCommInitRank: rank " + std::to_string(rank) + " joined twice");
        return ncclInvalidUsage;
    }
    auto* comm = new ncclComm;
    comm->group = g.get();
    comm->rank = rank;
    comm->nranks = nranks;
    comm->device = device;
    g->members[rank] = comm;
    g->joined++;
    g_cv.notify_all();
    *out = comm;
    if (!blocking) return g->joined == nranks ? ncclSuccess : ncclInProgress;
    const double start = now();
    Group* group = g.get();
    while (group->joined < nranks && !group->abandoned) {
        g_cv.wait_for(lk, std::chrono::milliseconds(100));
        if (now() - start > alexnet_sim_hang_seconds()) {
            std::string missing;
            for (int r = 0; r < nranks; ++r)
                if (!group->members[r]) missing += (missing.empty() ? "" : ", ") + std::to_string(r);
            std::fprintf(stderr,
                         "\nalexnet-sim: HANG: ncclCommInitRank: rank %d of %d has waited %.0f s for ranks %s, "
                         "which never joined (ALEXNET_SIM_HANG_SECONDS)\n",
                         rank, nranks, now() - start, missing.c_str());
            std::fflush(stderr);
            _exit(87);
        }
    }
    if (group->abandoned) {
        fail_note("ncclCommInitRank: a peer gave up on the set-up (it aborted its communicator)");
        return ncclRemoteError;
    }
    return ncclSuccess;
}

}  // namespace

API ncclResult_t ncclGetVersion(int* version) {
    if (!version) return ncclInvalidArgument;
    *version = 22703;  // 2.27.3
    return ncclSuccess;
}

API ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
    if (!id) return ncclInvalidArgument;
    std::lock_guard<std::mutex> lk(g_mu);
    static uint64_t counter = 0;
    std::memset(id->internal, 0, sizeof id->internal);
    std::memcpy(id->internal, kMagic, sizeof kMagic);
    const int64_t pid = getpid();
    const uint64_t n = ++counter;
    std::memcpy(id->internal + 16, &pid, 8);
    std::memcpy(id->internal + 24, &n, 8);
    return ncclSuccess;
}

API ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank) {
    return init(comm, nranks, id, rank, true);
}

API ncclResult_t ncclCommInitRankConfig(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank, void* config) {
    bool blocking = true;
    if (config) {
        sim_nccl_config_head head;
        std::memcpy(&head, config, sizeof head);
        if (head.magic != SIM_NCCL_CONFIG_MAGIC || head.size < sizeof head) {
            fail_note("ncclCommInitRankConfig: the config was not made by NCCL_CONFIG_INITIALIZER");
            return ncclInvalidArgument;
        }
        if (head.blocking != SIM_NCCL_CONFIG_UNDEF_INT) blocking = head.blocking != 0;
    }
    return init(comm, nranks, id, rank, blocking);
}

API ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* state) {
    if (!comm || !state) return ncclInvalidArgument;
    std::lock_guard<std::mutex> lk(g_mu);
    if (comm->group->abandoned && comm->group->joined < comm->nranks) *state = ncclRemoteError;
    else if (comm->group->joined < comm->nranks) *state = ncclInProgress;
    else *state = comm->async_error;
    return ncclSuccess;
}

API ncclResult_t ncclCommAbort(ncclComm_t comm) {
    if (!comm) return ncclSuccess;
    {
        std::lock_guard<std::mutex> lk(g_mu);
        comm->aborted = true;
        if (comm->group->joined < comm->nranks) comm->group->abandoned = true;
        g_cv.notify_all();
    }
    // This rank's queued collectives go; the other ranks' stay waiting for it.
    alexnet_sim_cancel(comm);
    return ncclSuccess;
}

API ncclResult_t ncclCommDestroy(ncclComm_t comm) {
    if (!comm) return ncclSuccess;
    std::lock_guard<std::mutex> lk(g_mu);
    comm->aborted = true;
    return ncclSuccess;
}

API ncclResult_t ncclCommCount(ncclComm_t comm, int* count) {
    if (!comm || !count) return ncclInvalidArgument;
    *count = comm->nranks;
    return ncclSuccess;
}

API ncclResult_t ncclCommUserRank(ncclComm_t comm, int* rank) {
    if (!comm || !rank) return ncclInvalidArgument;
    *rank = comm->rank;
    return ncclSuccess;
}

API ncclResult_t ncclCommCuDevice(ncclComm_t comm, int* device) {
    if (!comm || !device) return ncclInvalidArgument;
    *device = comm->device;
    return ncclSuccess;
}

API ncclResult_t ncclGroupStart() {
    ++tl_group_depth;
    return ncclSuccess;
}

API ncclResult_t ncclGroupEnd() {
    if (tl_group_depth <= 0) return ncclInvalidUsage;
    --tl_group_depth;
    return ncclSuccess;
}

API ncclResult_t ncclAllReduce(const void* send, void* recv, size_t count, int dtype, int op, ncclComm_t comm,
                               CUstream stream) {
    if (!comm) return ncclInvalidArgument;
    const size_t size = dtype_size(dtype);
    if (!size) {
        fail_note("ncclAllReduce: only int32, float32 and float64 are simulated");
        return ncclInvalidArgument;
    }
    if (op < ncclSum || op > ncclAvg) return ncclInvalidArgument;
    std::shared_ptr<Collective> coll;
    uint64_t group_key;
    {
        std::lock_guard<std::mutex> lk(g_mu);
        if (comm->aborted) return ncclInvalidUsage;
        if (comm->group->joined < comm->nranks) {
            fail_note("ncclAllReduce: the communicator's set-up has not completed");
            return ncclInvalidUsage;
        }
        int fail_rank, late_rank;
        long fail_call;
        double late_seconds;
        alexnet_sim_fault_nccl(&fail_rank, &fail_call, &late_rank, &late_seconds);
        const uint64_t seq = comm->calls++;
        if (comm->rank == fail_rank && (long)comm->calls == fail_call) {
            comm->async_error = ncclSystemError;
            fail_note("fault injected: rank " + std::to_string(comm->rank) + "'s ncclAllReduce call " +
                      std::to_string(fail_call) + " fails with ncclSystemError");
            return ncclSystemError;
        }
        auto& slot = comm->group->collectives[seq];
        if (!slot) {
            slot = std::make_shared<Collective>();
            slot->count = count;
            slot->dtype = dtype;
            slot->op = op;
            slot->nranks = comm->nranks;
            slot->send.assign(comm->nranks, nullptr);
            slot->recv.assign(comm->nranks, nullptr);
            slot->seen.assign(comm->nranks, false);
        } else if (slot->count != count || slot->dtype != dtype || slot->op != op) {
            slot->mismatch = "  collective " + std::to_string(seq) + ": rank " + std::to_string(comm->rank) +
                             " passes " + std::to_string(count) + " elements of type " + std::to_string(dtype) +
                             " with op " + std::to_string(op) + ", an earlier rank " + std::to_string(slot->count) +
                             " of type " + std::to_string(slot->dtype) + " with op " + std::to_string(slot->op);
        }
        slot->send[comm->rank] = send;
        slot->recv[comm->rank] = recv;
        slot->seen[comm->rank] = true;
        coll = slot;
        bool all = true;
        for (bool s : slot->seen) all = all && s;
        if (all) comm->group->collectives.erase(seq);
        group_key = (comm->group->id << 40) | (seq + 1);
    }
    if (alexnet_sim_stream_device(stream) != comm->device) {
        fail_note("ncclAllReduce: the stream is not one of the communicator's device (cuda:" +
                  std::to_string(comm->device) + ") in the current context");
        return ncclInvalidUsage;
    }
    const sim_access acc[2] = {{(uint64_t)send, count * size, 0}, {(uint64_t)recv, count * size, 1}};
    const std::string what = "ncclAllReduce of " + std::to_string(count) + " elements (rank " +
                             std::to_string(comm->rank) + " of " + std::to_string(comm->nranks) + ")";
    sim_op_desc d{};
    d.what = what.c_str();
    d.accesses = acc;
    d.n_accesses = 2;
    d.run = run_collective;
    d.drop = drop_member;
    d.user = new Member{coll};
    d.group = group_key;
    d.group_size = comm->nranks;
    d.group_index = comm->rank;
    d.cancel_token = comm;
    if (alexnet_sim_enqueue(stream, &d) != CUDA_SUCCESS) {
        delete static_cast<Member*>(d.user);
        return ncclUnhandledCudaError;
    }
    return ncclSuccess;
}

API const char* ncclGetErrorString(ncclResult_t r) {
    switch (r) {
        case ncclSuccess: return "no error";
        case ncclUnhandledCudaError: return "unhandled cuda error (run with NCCL_DEBUG=INFO for details)";
        case ncclSystemError: return "unhandled system error (run with NCCL_DEBUG=INFO for details)";
        case ncclInternalError: return "internal error - please report this issue to the NCCL developers";
        case ncclInvalidArgument: return "invalid argument (run with NCCL_DEBUG=WARN for details)";
        case ncclInvalidUsage: return "invalid usage (run with NCCL_DEBUG=WARN for details)";
        case ncclRemoteError: return "remote process exited or there was a network error";
        case ncclInProgress: return "NCCL operation in progress";
        default: return "unknown result code";
    }
}

API const char* ncclGetLastError(ncclComm_t) {
    std::lock_guard<std::mutex> lk(g_mu);
    static thread_local std::string copy;
    copy = g_last_error;
    return copy.c_str();
}
