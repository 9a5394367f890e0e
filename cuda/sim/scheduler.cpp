// Streams and the work queued on them, and when it runs.
//
// Each stream runs its operations in order. An operation may run once it is the first of its
// stream, the event points it waits for are complete, and (a collective) every member of its
// group is likewise first of its stream. Nothing runs on a thread of its own: at each API call
// the seeded scheduler runs a few runnable operations chosen at random (so the streams
// interleave differently with every seed, in orders the API permits), and a call that has to
// wait runs what it waits for. With ALEXNET_SIM_SCHEDULE=late only waiting runs work, and only
// the work waited for: every operation runs as late as the API allows.
//
// Happens-before: every operation gets a vector clock at issue: its stream's (stream order),
// joined with the issuing host thread's (what the host did before the call) and, for event
// waits, with the event's. A host thread joins a stream's or event's clock when it sees that
// point complete (synchronisation), and the pinned-memory protections follow (memory.cpp).

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <unistd.h>

#include "sim.h"

namespace sim {

State& state() {
    // Never destroyed: threads may still call in while the process exits.
    static State* s = new State;
    return *s;
}

double now_seconds() {
    using namespace std::chrono;
    return duration<double>(steady_clock::now().time_since_epoch()).count();
}

Host& host() {
    thread_local Host* h = nullptr;
    if (!h) {
        static int threads = 0;
        h = new Host{new_agent(), {}, threads++};
    }
    return *h;
}

std::string Stream::name() const {
    char buf[64];
    if (this == ctx->legacy) snprintf(buf, sizeof buf, "cuda:%d legacy stream", ctx->dev->ordinal);
    else snprintf(buf, sizeof buf, "cuda:%d stream %d", ctx->dev->ordinal, number);
    return buf;
}

Stream* new_stream(Context* ctx, unsigned flags, bool legacy) {
    auto* s = new Stream;
    s->ctx = ctx;
    s->flags = flags;
    s->agent = new_agent();
    if (legacy) {
        ctx->legacy = s;
    } else {
        s->number = ctx->dev->streams_made++;
        ctx->streams.push_back(s);
    }
    state().streams.insert(s);
    return s;
}

OpRef host_op(std::string what) {
    Host& h = host();
    auto info = std::make_shared<OpInfo>();
    info->what = std::move(what);
    info->where = "host thread " + std::to_string(h.number);
    info->agent = h.agent;
    info->epoch = h.clock.get(h.agent) + 1;
    h.clock.set(h.agent, info->epoch);
    info->trace = capture_trace();
    return info;
}

Stream* resolve_stream(CUstream h, Context* ctx) {
    if (h == nullptr || h == SIM_CU_STREAM_LEGACY || h == SIM_CU_STREAM_PER_THREAD)
        return ctx ? ctx->legacy : nullptr;
    Stream* s = reinterpret_cast<Stream*>(h);
    if (!state().streams.count(s) || s->destroyed) return nullptr;
    return s;
}

bool point_complete(const Point& p) { return !p.stream || p.stream->completed >= p.pos; }

namespace {

uint64_t next_random() {
    uint64_t& x = state().rng;
    if (!x) x = config().seed * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    return x * 0x2545F4914F6CDD1Dull;
}

// Members of each collective group issued so far.
std::map<uint64_t, std::vector<Op*>>& groups() {
    static std::map<uint64_t, std::vector<Op*>> g;
    return g;
}

bool head_ready(const Op* op) {
    const Stream* s = op->stream;
    if (s->queue.empty() || s->queue.front().get() != op) return false;
    if (op->cancelled) return true;
    for (const Point& w : op->waits)
        if (!point_complete(w)) return false;
    return true;
}

bool runnable(const Op* op) {
    if (!head_ready(op)) return false;
    if (op->cancelled || !op->group) return true;
    const auto& members = groups()[op->group];
    if ((int)members.size() < op->group_size) return false;
    for (const Op* m : members)
        if (!head_ready(m)) return false;
    return true;
}

// Completes `op`, the first of its stream.
void complete(Op* op) {
    Stream* s = op->stream;
    std::unique_ptr<Op> owned = std::move(s->queue.front());
    s->queue.pop_front();
    s->completed = op->pos;
    state().last_progress = now_seconds();
}

void run_op(Lock& lk, Op* op) {
    if (op->group && !op->cancelled) {
        // The whole group at once: its first member's run does the collective's work.
        std::vector<Op*> members = groups()[op->group];
        groups().erase(op->group);
        std::sort(members.begin(), members.end(),
                  [](const Op* a, const Op* b) { return a->group_index < b->group_index; });
        bool ok = true;
        for (Op* m : members) ok = check_accesses(*m) && ok;
        bool sticky = false;
        for (Op* m : members) sticky = sticky || m->stream->ctx->sticky != CUDA_SUCCESS;
        if (ok && !sticky && members.front()->run) members.front()->run(*members.front());
        for (Op* m : members) complete(m);
    } else {
        if (op->group) {
            auto& members = groups()[op->group];
            members.erase(std::remove(members.begin(), members.end(), op), members.end());
            if (members.empty()) groups().erase(op->group);
        }
        // After a fault the context runs nothing more, as on hardware.
        if (!op->cancelled && op->stream->ctx->sticky == CUDA_SUCCESS && check_accesses(*op) && op->run)
            op->run(*op);
        complete(op);
    }
    state().cv.notify_all();
    (void)lk;
}

// The furthest point of each stream that `target` needs (late schedule).
void needed(const Point& target, std::map<Stream*, uint64_t>& need) {
    if (!target.stream || point_complete(target)) return;
    uint64_t& have = need[target.stream];
    if (have >= target.pos) return;
    const uint64_t from = have;
    have = target.pos;
    for (const auto& op : target.stream->queue) {
        if (op->pos <= from) continue;
        if (op->pos > target.pos) break;
        for (const Point& w : op->waits) needed(w, need);
        if (op->group)
            for (Op* m : groups()[op->group]) needed(Point{m->stream, m->pos}, need);
    }
}

// A runnable operation, at random; within `need` if given.
Op* pick(const std::map<Stream*, uint64_t>* need) {
    std::vector<Op*> ready;
    for (Stream* s : state().streams) {
        if (s->queue.empty()) continue;
        Op* op = s->queue.front().get();
        if (need) {
            auto it = need->find(s);
            if (it == need->end() || op->pos > it->second) continue;
        }
        if (runnable(op)) ready.push_back(op);
    }
    if (ready.empty()) return nullptr;
    return ready[next_random() % ready.size()];
}

// Why `op` cannot run, for a hang report.
std::string blocked_on(const Op* op) {
    std::string s = "    " + op->info->what + " on " + op->info->where;
    if (op->stream->queue.front().get() != op) return s + " (behind earlier work of its stream)\n";
    for (const Point& w : op->waits)
        if (!point_complete(w)) {
            const Op* head = w.stream->queue.empty() ? nullptr : w.stream->queue.front().get();
            s += ", waits for an event on " + w.stream->name();
            if (head) s += " whose next work is " + head->info->what;
            s += "\n";
            return s;
        }
    if (op->group) {
        const auto& members = groups()[op->group];
        char buf[160];
        snprintf(buf, sizeof buf, ", a collective: %zu of its %d members issued", members.size(), op->group_size);
        s += buf;
        if (op->pending_note) s += " (" + op->pending_note() + ")";
        s += "\n";
        for (const Op* m : members)
            if (!head_ready(m)) s += "  member behind other work: " + m->info->what + " on " + m->info->where + "\n";
        return s;
    }
    return s + "\n";
}

[[noreturn]] void hang(const Point& p, const char* call) {
    std::string body;
    body += "  " + std::string(call) + " by host thread " + std::to_string(host().number) + " waits for work on " +
            p.stream->name() + ", issued at\n" + describe_trace(capture_trace(), "      ");
    body += "  Nothing has run for " + std::to_string((int)config().hang_seconds) +
            " s (ALEXNET_SIM_HANG_SECONDS), and the work waited for cannot run:\n";
    for (const auto& op : p.stream->queue) {
        if (op->pos > p.pos) break;
        body += blocked_on(op.get());
        body += describe_trace(op->info->trace, "        ");
        break;
    }
    std::fprintf(stderr, "\nalexnet-sim: HANG: %s\n%s\n", call, body.c_str());
    std::fflush(stderr);
    _exit(87);
}

}  // namespace

std::unique_ptr<Op> new_op(std::string what) {
    auto op = std::make_unique<Op>();
    op->info = std::make_shared<OpInfo>();
    op->info->what = std::move(what);
    return op;
}

Op* enqueue(Lock& lk, Stream* s, std::unique_ptr<Op> op) {
    State& st = state();
    Host& h = host();
    // The legacy stream and blocking streams wait for each other.
    Context* ctx = s->ctx;
    auto after = [&](Stream* other) {
        if (other != s && other->issued > other->completed) {
            op->waits.push_back(Point{other, other->issued});
            s->clock.join(other->clock);
        }
    };
    if (s == ctx->legacy) {
        for (Stream* o : ctx->streams)
            if (!o->destroyed && !(o->flags & CU_STREAM_NON_BLOCKING)) after(o);
    } else if (!(s->flags & CU_STREAM_NON_BLOCKING)) {
        after(ctx->legacy);
    }
    s->clock.join(h.clock);
    s->clock.set(s->agent, ++s->epoch);
    op->clock = s->clock;
    op->stream = s;
    op->pos = ++s->issued;
    OpInfo& info = *op->info;
    info.agent = s->agent;
    info.epoch = s->epoch;
    info.where = s->name();
    info.trace = capture_trace();
    Op* raw = op.get();
    if (raw->group) groups()[raw->group].push_back(raw);
    // From now until a host thread sees it complete, the host may not write pinned memory the
    // op reads, nor touch pinned memory it writes.
    for (const Access& a : raw->accesses)
        if (Allocation* al = find_live(a.lo, a.hi - a.lo); al && al->device < 0)
            protect_pinned(al, raw->info, a.kind == AccessKind::Write);
    s->queue.push_back(std::move(op));
    st.last_progress = now_seconds();
    st.cv.notify_all();
    (void)lk;
    return raw;
}

void progress(Lock& lk) {
    if (config().schedule == Schedule::Late) return;
    // A few operations, as many as a fair coin gives before it lands tails.
    while (next_random() % 3 != 0) {
        Op* op = pick(nullptr);
        if (!op) return;
        run_op(lk, op);
    }
}

void host_saw_clock(const Clock& c);

void host_saw(const Clock& c) {
    host().clock.join(c);
    host_saw_clock(c);
    update_protections();
}

void wait_point(Lock& lk, Point p, const Clock& clock, const char* call, bool seen) {
    State& st = state();
    const bool late = config().schedule == Schedule::Late;
    while (!point_complete(p)) {
        std::map<Stream*, uint64_t> need;
        if (late) needed(p, need);
        if (Op* op = pick(late ? &need : nullptr)) {
            run_op(lk, op);
            continue;
        }
        // Nothing this thread can run: another thread must act (an NCCL peer, say).
        st.cv.wait_for(lk, std::chrono::milliseconds(100));
        if (!point_complete(p) && now_seconds() - st.last_progress > config().hang_seconds) hang(p, call);
    }
    if (seen) host_saw(clock);
}

void wait_context(Lock& lk, Context* ctx, Device* dev, const char* call) {
    std::vector<Stream*> streams;
    for (Context* c : state().contexts)
        if (c == ctx || (!ctx && c->dev == dev))
            for (Stream* s : c->streams) streams.push_back(s);
    for (Context* c : state().contexts)
        if (c == ctx || (!ctx && c->dev == dev)) streams.push_back(c->legacy);
    for (Stream* s : streams) {
        const Clock clock = s->clock;
        wait_point(lk, Point{s, s->issued}, clock, call);
    }
}

void cancel_ops(Lock& lk, void* token) {
    for (Stream* s : state().streams)
        for (auto& op : s->queue)
            if (op->cancel_token == token) op->cancelled = true;
    state().last_progress = now_seconds();
    state().cv.notify_all();
    (void)lk;
}

}  // namespace sim
