// The simulated CUDA platform's core (DESIGN.md §5, level 3b): devices, contexts, memory,
// streams, events and the operations queued on them, shared by the three libraries it is built
// into (libcuda.so.1 holds it; libcublas.so.13 and libnccl.so.2 reach it through the
// `alexnet_sim_*` functions of sim_api.h).
//
// One mutex guards all of it. Work is queued per stream and runs later, in the calling
// threads: at API calls a seeded scheduler runs some of the work whose turn it is (the streams
// interleave in an order the API permits and the seed chooses), and a call that must wait runs
// what it waits for. With ALEXNET_SIM_SCHEDULE=late nothing runs before a call has to wait for
// it. Every operation carries the vector clock of what happens before it (stream order, event
// waits, the issuing host thread's synchronisations); the sanitizer (sanitizer.cpp) checks each
// memory access against the earlier ones with those clocks, so what it reports does not depend
// on the schedule that ran.

#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "abi.h"

namespace sim {

// ---- configuration (config.cpp) -------------------------------------------------------------

enum class Schedule { Seeded, Late };
enum class Sanitize { Off, Report, Abort };

struct Config {
    int gpus = 2;
    std::vector<uint64_t> capacity;  // bytes, per device
    std::string name;
    int sms = 132;
    // peer[a][b]: whether device a can access device b directly (cuDeviceCanAccessPeer).
    std::vector<std::vector<bool>> peer;
    uint64_t seed = 1;
    Schedule schedule = Schedule::Seeded;
    Sanitize sanitize = Sanitize::Abort;
    bool compute = true;  // false: launches are checked and ordered, but kernels do not run
    double hang_seconds = 120;
    // Faults (ALEXNET_SIM_FAULT, comma separated).
    long oom_at = 0;             // the n-th device allocation (from 1) fails
    bool cublas_create_fails = false;
    int nccl_fail_rank = -1;     // this rank's nccl_fail_call-th ncclAllReduce fails
    long nccl_fail_call = 0;
    int nccl_late_rank = -1;     // this rank joins its communicators nccl_late_seconds late
    double nccl_late_seconds = 0;
};

const Config& config();
// Why the environment's configuration cannot be used, or "" (cuInit refuses to start then).
const std::string& config_error();

// ---- where things were issued (trace.cpp) ---------------------------------------------------

constexpr int kTraceFrames = 40;
struct Trace {
    void* pc[kTraceFrames];
    int n = 0;
};
Trace capture_trace();
// The engine's frames of `t` (the simulation's own and the runtime's left out), one per line,
// each indented by `indent`.
std::string describe_trace(const Trace& t, const char* indent);

// ---- vector clocks (sanitizer.cpp) ----------------------------------------------------------

// Agents are the things that act in order: each stream, and each host thread.
using Agent = uint32_t;
struct Clock {
    std::vector<uint32_t> c;
    uint32_t get(Agent a) const { return a < c.size() ? c[a] : 0; }
    void set(Agent a, uint32_t v) {
        if (a >= c.size()) c.resize(a + 1, 0);
        c[a] = v;
    }
    void join(const Clock& o) {
        if (o.c.size() > c.size()) c.resize(o.c.size(), 0);
        for (size_t i = 0; i < o.c.size(); ++i)
            if (o.c[i] > c[i]) c[i] = o.c[i];
    }
};
Agent new_agent();

// What a report says of an operation, kept as long as the sanitizer remembers its accesses.
struct OpInfo {
    std::string what;   // "kernel conv::conv_forward_f32_128x128 (grid [..], block [..])"
    std::string where;  // "cuda:0 stream 3" or "host thread 2"
    Trace trace;
    Agent agent = 0;
    uint32_t epoch = 0;  // its agent's clock value at it
};
using OpRef = std::shared_ptr<const OpInfo>;

// ---- memory (memory.cpp) --------------------------------------------------------------------

enum class AccessKind { Alloc, Read, Write, Free };

// The sanitizer's record of one allocation: per byte range, the last write (or the allocation)
// and the reads since.
struct Piece {
    uint64_t hi;  // end (exclusive); the map key is the start
    OpRef last_write;
    std::vector<OpRef> reads;
    bool written = false;
};

struct Allocation {
    uint64_t base = 0, size = 0;
    size_t mapped = 0;  // bytes mapped for it (a whole number of pages)
    int device = -1;    // -1: pinned host memory
    bool pool = false;  // from a memory pool (cuMemAllocAsync)
    bool live = true;
    std::string what;   // "cuMemAllocAsync of 4096 bytes on cuda:0 stream 1"
    OpRef allocated_by, freed_by;
    std::map<uint64_t, Piece> shadow;
    // Pinned memory: queued copies that read it (the host may not write it) or write it (the
    // host may neither read nor write it) and that no host thread has yet seen complete.
    std::vector<OpRef> host_readers, host_writers;
    int protection = 0;  // the mprotect flags now in force (0: none set by the simulation)
    uint64_t end() const { return base + size; }
    bool contains(uint64_t p, uint64_t n) const { return p >= base && p + n <= base + size && p + n >= p; }
};

// ---- operations, streams, events (scheduler.cpp) --------------------------------------------

struct Context;
struct Stream;

// A point of a stream: everything up to and including its `pos`-th operation (from 1).
struct Point {
    Stream* stream = nullptr;
    uint64_t pos = 0;
};

// An access an operation makes: [lo, hi) of device or pinned memory. `device_side`: made by the
// device's cores (a kernel, cuBLAS, NCCL), so the memory must be the stream's device's, pinned,
// or a peer's with access enabled; copies (the copy engines) may reach any device.
struct Access {
    uint64_t lo, hi;
    AccessKind kind;
    bool device_side;
};

struct Op {
    std::shared_ptr<OpInfo> info;
    Clock clock;           // what happens before it (its own epoch included)
    Stream* stream = nullptr;
    uint64_t pos = 0;      // its place in the stream (from 1)
    std::vector<Point> waits;  // event waits: runnable once these points are complete
    // A collective: runnable only with every member of its group at the head of its stream;
    // the group runs once, by its first member's `run`.
    uint64_t group = 0;
    int group_size = 0, group_index = 0;
    void* cancel_token = nullptr;  // ops sharing a token can be cancelled together
    bool cancelled = false;
    std::vector<Access> accesses;  // checked when it runs, before `run`
    // A kernel whose device memory accesses are measured as it runs (watch_run): before it,
    // those are only checked for being allowed at all.
    bool measured = false;
    std::function<void(Op&)> run;  // the work; may be empty
    std::function<std::string()> pending_note;  // for hang reports: what it still waits for
};

struct Device;

struct Stream {
    Context* ctx = nullptr;
    int number = 0;  // per device, for descriptions
    unsigned flags = 0;
    Agent agent = 0;
    uint32_t epoch = 0;  // ops issued (the agent's clock)
    Clock clock;         // happens-before of its next op
    uint64_t issued = 0, completed = 0;
    std::deque<std::unique_ptr<Op>> queue;
    bool destroyed = false;  // released by the user; freed once its work is done
    std::string name() const;
};

struct Event {
    Context* ctx = nullptr;
    unsigned flags = 0;
    bool recorded = false;
    Point point;
    Clock clock;
    double time_ms = 0;  // when its record ran (steady clock), for timing events
    bool time_valid = false;
    bool destroyed = false;
};

struct Pool {
    Device* dev = nullptr;
    uint64_t release_threshold = 0;
    std::set<int> access;  // devices granted access with cuMemPoolSetAccess
};

struct Device {
    int ordinal = 0;
    uint64_t capacity = 0, used = 0;
    Pool pool;
    Context* primary = nullptr;
    int primary_refs = 0;
    int streams_made = 0;
};

struct Module;

struct Context {
    Device* dev = nullptr;
    int refs = 0;
    std::set<int> peers;  // devices whose memory this context may access (cuCtxEnablePeerAccess)
    CUresult sticky = CUDA_SUCCESS;
    Stream* legacy = nullptr;  // the NULL stream
    std::vector<Stream*> streams;
    bool destroyed = false;
};

// ---- the state ------------------------------------------------------------------------------

struct State {
    std::mutex mu;
    std::condition_variable cv;
    bool initialized = false;
    std::vector<std::unique_ptr<Device>> devices;
    std::set<Context*> contexts;
    std::set<Stream*> streams;
    std::set<Event*> events;
    std::map<uint64_t, std::unique_ptr<Allocation>> live;         // by base
    std::deque<std::unique_ptr<Allocation>> quarantine;           // freed, oldest first
    std::map<uint64_t, Allocation*> quarantined;                  // by base
    uint64_t quarantined_bytes = 0;
    long device_allocations = 0;  // counted for ALEXNET_SIM_FAULT=oom:N
    uint64_t rng = 0;
    double last_progress = 0;  // steady seconds when work last ran or was queued
};

// The state, locked by the caller for every use.
State& state();
using Lock = std::unique_lock<std::mutex>;

double now_seconds();

// The calling host thread: its agent and clock.
struct Host {
    Agent agent;
    Clock clock;
    int number;
};
Host& host();

// ---- scheduler.cpp --------------------------------------------------------------------------

// A new stream of `ctx` (`legacy`: its NULL stream, made with the context).
Stream* new_stream(Context* ctx, unsigned flags, bool legacy = false);
// The stream a handle names in the current context (NULL and the special handles are the
// context's legacy stream); nullptr if invalid.
Stream* resolve_stream(CUstream s, Context* ctx);
// Queues `op` on `s`, with its clock, number and issuing trace set, and protects the pinned
// memory its accesses touch; returns it.
Op* enqueue(Lock& lk, Stream* s, std::unique_ptr<Op> op);
// A new operation described by `what`, for `enqueue`.
std::unique_ptr<Op> new_op(std::string what);
// Runs some of the work whose turn it is (seeded schedule), at an API call.
void progress(Lock& lk);
// Waits until `point` (whose clock is `clock`) is complete, running what it needs; the calling
// host thread then has seen it (unless `seen` is false: a query that answers "not ready").
void wait_point(Lock& lk, Point point, const Clock& clock, const char* call, bool seen = true);
// Waits for every stream of `ctx` (`nullptr`: of every context on `dev`).
void wait_context(Lock& lk, Context* ctx, Device* dev, const char* call);
bool point_complete(const Point& p);
// Completes the queued ops holding `token` without running them (NCCL's abort).
void cancel_ops(Lock& lk, void* token);
// The calling host thread has seen everything `c` covers complete: it joins the clock, and the
// pinned-memory protections that no longer hold are lifted.
void host_saw(const Clock& c);

// ---- memory.cpp -----------------------------------------------------------------------------

// The allocation holding [p, p + n), live or in quarantine; nullptr if none.
Allocation* find_live(uint64_t p, uint64_t n = 1);
Allocation* find_freed(uint64_t p);
CUresult alloc_device(Lock& lk, Device* dev, uint64_t bytes, bool pool, const std::string& what,
                      uint64_t* out);
// Frees now (the caller ordered it): poison, quarantine, capacity back.
void release(Allocation* a, OpRef freed_by);
CUresult alloc_pinned(uint64_t bytes, void** out);
// Pinned memory under `a` is read (or written) by the queued `op`: the host may not write it
// (or touch it) until it has seen the op complete.
void protect_pinned(Allocation* a, const OpRef& op, bool op_writes);
void update_protections();
void host_saw_clock(const Clock& c);
// The simulation's own access to pinned memory under `a` (lifts its protection meanwhile).
struct PinnedAccess {
    explicit PinnedAccess(Allocation* a);
    ~PinnedAccess();
    Allocation* a;
};
void install_fault_handler();
// What `run` touched of `allocs` (device memory), to the page: each run of pages read, written
// or both.
struct Touched {
    Allocation* alloc;
    uint64_t lo, hi;
    bool read, written;
};
std::vector<Touched> watch_run(const std::vector<Allocation*>& allocs, const std::function<void()>& run);
// Checks `op`'s accesses when it runs (sanitizer, uses after free, addresses outside every
// allocation, peer access). False when one is illegal: the context then holds
// CUDA_ERROR_ILLEGAL_ADDRESS and the op does not run.
bool check_accesses(Op& op);
uint32_t fresh_pattern();

// ---- sanitizer.cpp --------------------------------------------------------------------------

// The allocation's record starts with `by` as its last write; `written`: whether its bytes
// count as written (pinned host memory: the host writes it, unseen).
void init_shadow(Allocation* a, const OpRef& by, bool written = false);
// Checks and records `kind` of [lo, hi) in `a` by `op` (its clock `clock`).
void check_access(Allocation* a, uint64_t lo, uint64_t hi, AccessKind kind, const OpRef& op,
                  const Clock& clock);
// Reports a finding: prints it and, with ALEXNET_SIM_SANITIZE=1 (the default), ends the run.
void report(const std::string& title, const std::string& body);
std::string describe_op(const OpRef& op, const char* indent);
std::string describe_alloc(const Allocation* a);

// ---- module.cpp -----------------------------------------------------------------------------

struct Module;
struct Function;
CUresult load_module(Context* ctx, const void* image, CUmodule* out);
Module* module_of(CUmodule h);
Function* function_of(CUfunction h);
CUresult module_unload(Module* m);
CUresult module_get_function(Module* m, const char* name, CUfunction* out);
CUresult function_param_info(Function* f, size_t index, size_t* offset, size_t* size);
CUresult function_set_attribute(Function* f, int attrib, int value);
Context* function_context(Function* f);
CUresult launch(Lock& lk, Function* f, const unsigned grid[3], const unsigned block[3], unsigned shared,
                Stream* s, void** params, void** extra);

// ---- copies (copy.cpp) ----------------------------------------------------------------------

// One contiguous run of a copy.
struct Run {
    uint64_t dst, src, bytes;
};
enum class Side { Device, Host };
// Queues a copy of `runs` on `s`, from memory of kind `from` to `to` (host memory may be pinned
// or pageable; device memory any device's). With `blocking`, waits for it before returning
// (what the driver does for device-to-pageable copies and the synchronous calls).
CUresult copy(Lock& lk, Stream* s, std::string what, std::vector<Run> runs, Side from, Side to, bool blocking);
// An operation on the host thread's own timeline (synchronous allocations): its record.
OpRef host_op(std::string what);

// ---- errors ---------------------------------------------------------------------------------

// One line on stderr, prefixed "alexnet-sim: ".
void note(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
const char* error_name(CUresult r);
const char* error_text(CUresult r);

}  // namespace sim
