// The simulated machine, from the environment (read once, at the first call):
//
//   ALEXNET_SIM_GPUS=2             devices
//   ALEXNET_SIM_MEMORY=80GB        capacity of each ("3GiB" for a GTX 580), or one per device
//                                  ("3GiB,3GiB"); every allocation of the engine and cuBLAS counts
//   ALEXNET_SIM_SMS=132            multiprocessors
//   ALEXNET_SIM_PEERS=all          peer access between all pairs, "none", or pairs ("0-1,2-3")
//   ALEXNET_SIM_SEED=1             the scheduler's seed
//   ALEXNET_SIM_SCHEDULE=seeded    or "late": every operation runs as late as the API allows
//   ALEXNET_SIM_SANITIZE=1         the stream sanitizer ends the run at a finding; "report" goes
//                                  on after printing it; 0 turns it off
//   ALEXNET_SIM_COMPUTE=1          0: kernels and GEMMs are checked and ordered but not run
//                                  (values are not computed; memory is accounted)
//   ALEXNET_SIM_HANG_SECONDS=120   a wait with no progress for this long is reported as a hang
//   ALEXNET_SIM_FAULT=...          comma separated: oom:N (the N-th device allocation fails),
//                                  cublas-create (cublasCreate fails), nccl-fail:RANK:N (that
//                                  rank's N-th ncclAllReduce fails), nccl-late:RANK:SECONDS
//                                  (that rank reaches NCCL's set-up that much later)

#include <cctype>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "sim.h"

namespace sim {

namespace {

std::string g_config_error;

const char* env(const char* name) {
    const char* v = std::getenv(name);
    return v && *v ? v : nullptr;
}

void fail(const std::string& msg) {
    if (g_config_error.empty()) g_config_error = msg;
}

bool parse_long(const std::string& s, long* out) {
    char* end = nullptr;
    const long v = std::strtol(s.c_str(), &end, 10);
    if (s.empty() || *end) return false;
    *out = v;
    return true;
}

// "80GB", "3GiB", "512MiB", "1000000" (bytes).
bool parse_bytes(std::string s, uint64_t* out) {
    size_t i = 0;
    while (i < s.size() && (std::isdigit((unsigned char)s[i]) || s[i] == '.')) ++i;
    if (i == 0) return false;
    const double v = std::atof(s.substr(0, i).c_str());
    std::string unit = s.substr(i);
    for (auto& c : unit) c = (char)std::tolower((unsigned char)c);
    double scale;
    if (unit.empty() || unit == "b") scale = 1;
    else if (unit == "kb") scale = 1e3;
    else if (unit == "mb") scale = 1e6;
    else if (unit == "gb") scale = 1e9;
    else if (unit == "kib") scale = 1024.0;
    else if (unit == "mib") scale = 1024.0 * 1024;
    else if (unit == "gib") scale = 1024.0 * 1024 * 1024;
    else return false;
    *out = (uint64_t)(v * scale);
    return *out > 0;
}

std::vector<std::string> split(const std::string& s, char sep) {
    std::vector<std::string> out;
    size_t start = 0;
    for (;;) {
        const size_t at = s.find(sep, start);
        out.push_back(s.substr(start, at == std::string::npos ? std::string::npos : at - start));
        if (at == std::string::npos) return out;
        start = at + 1;
    }
}

Config read() {
    Config c;
    if (const char* v = env("ALEXNET_SIM_GPUS")) {
        long n;
        if (!parse_long(v, &n) || n < 0 || n > 64) fail(std::string("ALEXNET_SIM_GPUS=") + v + ": expected a count of devices (0 to 64)");
        else c.gpus = (int)n;
    }
    c.capacity.assign(c.gpus, 80000000000ull);
    if (const char* v = env("ALEXNET_SIM_MEMORY")) {
        const auto parts = split(v, ',');
        for (size_t i = 0; i < parts.size(); ++i) {
            uint64_t b;
            if (!parse_bytes(parts[i], &b)) {
                fail(std::string("ALEXNET_SIM_MEMORY=") + v + ": expected sizes like 80GB or 3GiB");
                break;
            }
            if (parts.size() == 1) c.capacity.assign(c.gpus, b);
            else if (i < c.capacity.size()) c.capacity[i] = b;
        }
        if (parts.size() != 1 && (int)parts.size() != c.gpus)
            fail(std::string("ALEXNET_SIM_MEMORY=") + v + ": one size, or one per device (" + std::to_string(c.gpus) + ")");
    }
    c.name = env("ALEXNET_SIM_NAME") ? env("ALEXNET_SIM_NAME") : "alexnet-sim GPU";
    if (const char* v = env("ALEXNET_SIM_SMS")) {
        long n;
        if (!parse_long(v, &n) || n < 1 || n > 1024) fail(std::string("ALEXNET_SIM_SMS=") + v + ": expected a multiprocessor count");
        else c.sms = (int)n;
    }
    c.peer.assign(c.gpus, std::vector<bool>(c.gpus, true));
    if (const char* v = env("ALEXNET_SIM_PEERS")) {
        const std::string s = v;
        if (s == "none") {
            c.peer.assign(c.gpus, std::vector<bool>(c.gpus, false));
        } else if (s != "all") {
            c.peer.assign(c.gpus, std::vector<bool>(c.gpus, false));
            for (const auto& pair : split(s, ',')) {
                const auto ab = split(pair, '-');
                long a, b;
                if (ab.size() != 2 || !parse_long(ab[0], &a) || !parse_long(ab[1], &b) || a < 0 ||
                    b < 0 || a >= c.gpus || b >= c.gpus) {
                    fail("ALEXNET_SIM_PEERS=" + s + ": expected all, none, or pairs of devices like 0-1,2-3");
                    break;
                }
                c.peer[a][b] = c.peer[b][a] = true;
            }
        }
        for (int i = 0; i < c.gpus; ++i) c.peer[i][i] = false;
    }
    for (int i = 0; i < c.gpus; ++i) c.peer[i][i] = false;
    if (const char* v = env("ALEXNET_SIM_SEED")) {
        long n;
        if (!parse_long(v, &n)) fail(std::string("ALEXNET_SIM_SEED=") + v + ": expected a number");
        else c.seed = (uint64_t)n;
    }
    if (const char* v = env("ALEXNET_SIM_SCHEDULE")) {
        const std::string s = v;
        if (s == "late") c.schedule = Schedule::Late;
        else if (s != "seeded") fail("ALEXNET_SIM_SCHEDULE=" + s + ": expected seeded or late");
    }
    if (const char* v = env("ALEXNET_SIM_SANITIZE")) {
        const std::string s = v;
        if (s == "0") c.sanitize = Sanitize::Off;
        else if (s == "report") c.sanitize = Sanitize::Report;
        else if (s != "1") fail("ALEXNET_SIM_SANITIZE=" + s + ": expected 1, report or 0");
    }
    if (const char* v = env("ALEXNET_SIM_COMPUTE")) {
        const std::string s = v;
        if (s == "0") c.compute = false;
        else if (s != "1") fail("ALEXNET_SIM_COMPUTE=" + s + ": expected 1 or 0");
    }
    if (const char* v = env("ALEXNET_SIM_HANG_SECONDS")) {
        c.hang_seconds = std::atof(v);
        if (!(c.hang_seconds > 0)) fail(std::string("ALEXNET_SIM_HANG_SECONDS=") + v + ": expected seconds");
    }
    if (const char* v = env("ALEXNET_SIM_FAULT")) {
        for (const auto& f : split(v, ',')) {
            const auto p = split(f, ':');
            long a = 0, b = 0;
            if (p[0] == "oom" && p.size() == 2 && parse_long(p[1], &a) && a > 0) {
                c.oom_at = a;
            } else if (p[0] == "cublas-create" && p.size() == 1) {
                c.cublas_create_fails = true;
            } else if (p[0] == "nccl-fail" && p.size() == 3 && parse_long(p[1], &a) &&
                       parse_long(p[2], &b) && a >= 0 && b > 0) {
                c.nccl_fail_rank = (int)a;
                c.nccl_fail_call = b;
            } else if (p[0] == "nccl-late" && p.size() == 3 && parse_long(p[1], &a) && a >= 0) {
                c.nccl_late_rank = (int)a;
                c.nccl_late_seconds = std::atof(p[2].c_str());
            } else {
                fail("ALEXNET_SIM_FAULT=" + std::string(v) +
                     ": expected oom:N, cublas-create, nccl-fail:RANK:N or nccl-late:RANK:SECONDS");
                break;
            }
        }
    }
    return c;
}

}  // namespace

const Config& config() {
    static const Config c = read();
    return c;
}

// Why the configuration cannot be used, or "" (cuInit refuses to start then).
const std::string& config_error() {
    config();
    return g_config_error;
}

void note(const char* fmt, ...) {
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    std::fprintf(stderr, "alexnet-sim: %s\n", buf);
    std::fflush(stderr);
}

}  // namespace sim
