// The stream sanitizer: happens-before between every memory access the platform sees (kernel
// arguments, copies, fills, frees, cuBLAS and NCCL operations), in the manner of
// ThreadSanitizer's vector clocks (FastTrack): per byte range of each allocation, the last write
// and the reads since, each with its agent (stream or host thread) and epoch. An access is
// ordered after an earlier one when the earlier epoch is covered by the accessing operation's
// clock, which stream order, event waits and host synchronisation build (scheduler.cpp). An
// access not so ordered is a race, whatever order the schedule happened to run them in.
//
// Also reported: a read of bytes nothing has written (a fresh allocation holds garbage), and,
// from memory.cpp and module.cpp, uses after free, accesses outside every allocation, and
// kernels reading a peer's memory without peer access.

#include <cstdio>
#include <cstdlib>
#include <set>
#include <unistd.h>

#include "sim.h"

namespace sim {

Agent new_agent() {
    static Agent next = 0;
    return next++;
}

namespace {

bool ordered(const OpRef& earlier, const Clock& clock) {
    return earlier->epoch <= clock.get(earlier->agent);
}

// Makes a piece of `a`'s shadow start at `x` (splitting the one holding it).
void split_at(Allocation* a, uint64_t x) {
    if (x <= a->base || x >= a->end()) return;
    auto it = a->shadow.upper_bound(x);
    --it;
    if (it->first == x) return;
    Piece tail = it->second;
    it->second.hi = x;
    a->shadow.emplace(x, std::move(tail));
}

bool same_state(const Piece& p, const Piece& q) {
    return p.last_write == q.last_write && p.written == q.written && p.reads == q.reads;
}

// Joins the pieces of [lo, hi) and their neighbours that hold the same state.
void merge(Allocation* a, uint64_t lo, uint64_t hi) {
    auto it = a->shadow.upper_bound(lo);
    if (it != a->shadow.begin()) --it;
    if (it != a->shadow.begin()) --it;
    while (it != a->shadow.end() && it->first <= hi) {
        auto next = std::next(it);
        if (next == a->shadow.end()) break;
        if (it->second.hi == next->first && same_state(it->second, next->second)) {
            it->second.hi = next->second.hi;
            a->shadow.erase(next);
        } else {
            it = next;
        }
    }
}

std::string range(const Allocation* a, uint64_t lo, uint64_t hi) {
    char buf[96];
    snprintf(buf, sizeof buf, "bytes [%llu, %llu) of it", (unsigned long long)(lo - a->base),
             (unsigned long long)(hi - a->base));
    return buf;
}

const char* kind_name(AccessKind k) {
    switch (k) {
        case AccessKind::Alloc: return "allocation";
        case AccessKind::Read: return "read";
        case AccessKind::Write: return "write";
        case AccessKind::Free: return "free";
    }
    return "?";
}

std::string short_alloc(const Allocation* a) {
    char buf[96];
    if (a->device >= 0) snprintf(buf, sizeof buf, "cuda:%d memory", a->device);
    else snprintf(buf, sizeof buf, "pinned host memory");
    return buf;
}

std::string earlier_kind(const Allocation* a, const OpRef& op, bool is_write) {
    if (op == a->allocated_by) return "its allocation";
    return is_write ? "write" : "read";
}

void race(const Allocation* a, uint64_t lo, uint64_t hi, const OpRef& earlier,
          const std::string& earlier_what, const OpRef& later, AccessKind kind) {
    report("race between two operations on " + short_alloc(a),
           "  the memory: " + describe_alloc(a) + "  " + earlier_what + " by\n" + describe_op(earlier, "      ") + "  and " +
               kind_name(kind) + " (" + range(a, lo, hi) + ") by\n" + describe_op(later, "      ") +
               "  Nothing orders the second after the first: no stream order, event wait or host "
               "synchronisation between them.");
}

}  // namespace

void init_shadow(Allocation* a, const OpRef& by, bool written) {
    a->shadow.clear();
    Piece p;
    p.hi = a->end();
    p.last_write = by;
    p.written = written;
    a->shadow.emplace(a->base, std::move(p));
}

void check_access(Allocation* a, uint64_t lo, uint64_t hi, AccessKind kind, const OpRef& op,
                  const Clock& clock) {
    if (config().sanitize == Sanitize::Off) return;
    if (lo < a->base) lo = a->base;
    if (hi > a->end()) hi = a->end();
    if (lo >= hi) return;
    split_at(a, lo);
    split_at(a, hi);
    bool reported_unwritten = false;
    for (auto it = a->shadow.find(lo); it != a->shadow.end() && it->first < hi; ++it) {
        Piece& p = it->second;
        const uint64_t plo = it->first, phi = p.hi;
        if (p.last_write && p.last_write != op && !ordered(p.last_write, clock))
            race(a, plo, phi, p.last_write, earlier_kind(a, p.last_write, true), op, kind);
        if (kind == AccessKind::Write || kind == AccessKind::Free) {
            for (const auto& r : p.reads)
                if (r != op && !ordered(r, clock)) race(a, plo, phi, r, "read", op, kind);
        }
        if (kind == AccessKind::Read && !p.written && !reported_unwritten) {
            reported_unwritten = true;
            report("read of memory nothing has written, in " + short_alloc(a),
                   "  the memory: " + describe_alloc(a) + "  read (" + range(a, plo, phi) + ") by\n" + describe_op(op, "      ") +
                       "  A new allocation holds garbage until something writes it.");
        }
        switch (kind) {
            case AccessKind::Alloc:
                p.last_write = op;
                p.reads.clear();
                p.written = false;
                break;
            case AccessKind::Write:
                p.last_write = op;
                p.reads.clear();
                p.written = true;
                break;
            case AccessKind::Free:
                p.last_write = op;
                p.reads.clear();
                break;
            case AccessKind::Read: {
                // One read per agent is enough: a later read of the same agent covers it.
                auto& rs = p.reads;
                for (size_t i = 0; i < rs.size();)
                    if (rs[i]->agent == op->agent || ordered(rs[i], clock)) rs.erase(rs.begin() + (long)i);
                    else ++i;
                rs.push_back(op);
                break;
            }
        }
    }
    merge(a, lo, hi);
}

std::string describe_op(const OpRef& op, const char* indent) {
    std::string s = std::string(indent) + op->what + " on " + op->where + ", issued at\n";
    return s + describe_trace(op->trace, (std::string(indent) + "  ").c_str());
}

std::string describe_alloc(const Allocation* a) {
    char buf[160];
    if (a->device >= 0)
        snprintf(buf, sizeof buf, "cuda:%d memory at 0x%llx (%llu bytes)", a->device,
                 (unsigned long long)a->base, (unsigned long long)a->size);
    else
        snprintf(buf, sizeof buf, "pinned host memory at 0x%llx (%llu bytes)",
                 (unsigned long long)a->base, (unsigned long long)a->size);
    std::string s = buf;
    s += " (" + a->what + ")";
    if (a->allocated_by) s += ", allocated at\n" + describe_trace(a->allocated_by->trace, "      ");
    else s += "\n";
    return s;
}

void report(const std::string& title, const std::string& body) {
    if (config().sanitize == Sanitize::Off) return;
    static std::set<std::string> seen;
    if (!seen.insert(title + body).second) return;
    std::fprintf(stderr, "\nalexnet-sim: SANITIZER: %s\n%s\n", title.c_str(), body.c_str());
    std::fflush(stderr);
    if (config().sanitize == Sanitize::Abort) {
        std::fprintf(stderr, "alexnet-sim: the run ends here (ALEXNET_SIM_SANITIZE=report goes on)\n");
        std::fflush(stderr);
        _exit(86);
    }
}

}  // namespace sim
