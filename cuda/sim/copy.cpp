// Copies, as the driver documents them (CUDA driver API, "API synchronization behavior"):
//
// - device to device, and pinned host memory either way: fully asynchronous. The copy reads its
//   source when it runs, not when it is queued; until a host thread has seen it complete, the
//   host may not write pinned memory it reads, nor touch pinned memory it writes (memory.cpp
//   enforces it).
// - pageable host memory to device: "might be synchronous"; the driver may stage the data when
//   the copy runs. So the copy runs when its turn comes and reads the host memory then; the
//   sanitizer compares it with what the memory held at the call and reports a source the host
//   changed or released in between (the data copied is what it held at the call).
// - device to pageable host memory: returns once the copy has completed.
//
// Copies may reach any device (the copy engines stage what peer access does not cover).

#include <sys/uio.h>
#include <unistd.h>

#include <cstring>

#include "sim.h"

namespace sim {

namespace {

// Reads (or writes) host memory without faulting on memory the process no longer maps.
bool host_read(void* dst, uint64_t src, uint64_t bytes) {
    iovec local{dst, bytes}, remote{reinterpret_cast<void*>(src), bytes};
    return process_vm_readv(getpid(), &local, 1, &remote, 1, 0) == (ssize_t)bytes;
}

bool host_write(uint64_t dst, const void* src, uint64_t bytes) {
    iovec local{const_cast<void*>(src), bytes}, remote{reinterpret_cast<void*>(dst), bytes};
    return process_vm_writev(getpid(), &local, 1, &remote, 1, 0) == (ssize_t)bytes;
}

Allocation* pinned(uint64_t p, uint64_t n) {
    Allocation* a = find_live(p, n);
    return a && a->device < 0 ? a : nullptr;
}

}  // namespace

CUresult copy(Lock& lk, Stream* s, std::string what, std::vector<Run> runs, Side from, Side to, bool blocking) {
    auto op = new_op(std::move(what));
    // Pageable sources, as they were at the call.
    auto snapshots = std::make_shared<std::vector<std::vector<unsigned char>>>();
    std::vector<bool> pageable_src(runs.size(), false), pageable_dst(runs.size(), false);
    for (size_t i = 0; i < runs.size(); ++i) {
        const Run& r = runs[i];
        if (!r.bytes) continue;
        if (from == Side::Device || pinned(r.src, r.bytes)) {
            op->accesses.push_back(Access{r.src, r.src + r.bytes, AccessKind::Read, false});
        } else {
            pageable_src[i] = true;
            std::vector<unsigned char> data(r.bytes);
            if (!host_read(data.data(), r.src, r.bytes)) {
                note("%s: the host source at 0x%llx (%llu bytes) is not readable memory", op->info->what.c_str(),
                     (unsigned long long)r.src, (unsigned long long)r.bytes);
                return CUDA_ERROR_INVALID_VALUE;
            }
            snapshots->push_back(std::move(data));
        }
        if (to == Side::Device || pinned(r.dst, r.bytes)) {
            op->accesses.push_back(Access{r.dst, r.dst + r.bytes, AccessKind::Write, false});
        } else {
            pageable_dst[i] = true;
        }
    }
    op->run = [runs, snapshots, pageable_src, pageable_dst](Op& self) {
        // Without compute, device memory holds nothing meaningful: only what the host reads
        // back is copied (so it gets defined bytes).
        const bool compute = config().compute;
        size_t snap = 0;
        for (size_t i = 0; i < runs.size(); ++i) {
            const Run& r = runs[i];
            if (!r.bytes) continue;
            const unsigned char* src = reinterpret_cast<const unsigned char*>(r.src);
            std::vector<unsigned char> now;
            if (pageable_src[i]) {
                const auto& then = (*snapshots)[snap++];
                now.resize(r.bytes);
                if (!host_read(now.data(), r.src, r.bytes) || std::memcmp(now.data(), then.data(), r.bytes)) {
                    report("the pageable host source of an asynchronous copy changed before the copy ran",
                           "  the copy\n" + describe_op(self.info, "      ") +
                               "  The driver may read pageable memory when the copy runs (\"might be "
                               "synchronous\"): keep the source as it is until the stream has been "
                               "synchronised, or copy from pinned memory.");
                }
                src = then.data();
            }
            if (!compute && !pageable_dst[i] && !pinned(r.dst, r.bytes)) continue;
            if (pageable_dst[i]) {
                if (!host_write(r.dst, src, r.bytes))
                    report("the pageable host destination of a copy is no longer mapped when the copy runs",
                           "  the copy\n" + describe_op(self.info, "      "));
                continue;
            }
            Allocation* ps = pageable_src[i] ? nullptr : pinned(r.src, r.bytes);
            Allocation* pd = pinned(r.dst, r.bytes);
            std::unique_ptr<PinnedAccess> gs, gd;
            if (ps) gs = std::make_unique<PinnedAccess>(ps);
            if (pd && pd != ps) gd = std::make_unique<PinnedAccess>(pd);
            std::memmove(reinterpret_cast<void*>(r.dst), src, r.bytes);
        }
    };
    Op* queued = enqueue(lk, s, std::move(op));
    if (blocking) {
        const Clock clock = queued->clock;
        wait_point(lk, Point{s, queued->pos}, clock, "a synchronous copy");
    }
    return CUDA_SUCCESS;
}

}  // namespace sim
