// Where an operation was issued: the return addresses at the API call, named (function, file and
// line) only when a report needs them, by addr2line over the objects dladdr names. The report
// shows the engine's frames: the simulation's own, the Rust runtime's and cudarc's are left out.

#include <dlfcn.h>
#include <execinfo.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "sim.h"

namespace sim {

Trace capture_trace() {
    Trace t;
    t.n = backtrace(t.pc, kTraceFrames);
    return t;
}

namespace {

struct Frame {
    std::string function, location;
};

bool is_simulation_object(const char* path) {
    const char* base = std::strrchr(path, '/');
    base = base ? base + 1 : path;
    return !std::strcmp(base, "libcuda.so.1") || !std::strcmp(base, "libcublas.so.13") ||
           !std::strcmp(base, "libnccl.so.2");
}

bool starts_with(const std::string& s, const char* p) { return s.compare(0, std::strlen(p), p) == 0; }

// Frames a reader of the engine does not need: the language runtime, cudarc, threads.
bool is_runtime(const Frame& f) {
    static const char* const prefixes[] = {
        "core::", "std::", "alloc::", "cudarc::", "<core::", "<alloc::", "<std::", "<cudarc::",
        "__", "rust_begin_unwind", "rayon", "<rayon", "<<rayon", "start_thread", "clone", "__libc",
        "_start", "main", "test::", "<test::", "<F as", "<&", "??", "<alloc", "anyhow::", "<fn(",
    };
    for (const char* p : prefixes)
        if (starts_with(f.function, p)) return true;
    return false;
}

// "src/cuda/launcher.rs:311" from an absolute path, where the path has such a part.
std::string short_location(const std::string& loc) {
    for (const char* part : {"/src/", "/tests/", "/benches/", "/cuda/"}) {
        const size_t at = loc.rfind(part);
        if (at != std::string::npos) return loc.substr(at + 1);
    }
    return loc;
}

// Each address's frames, innermost (inlined) first.
std::vector<std::vector<Frame>> symbolize(const std::string& object, const std::vector<uintptr_t>& offsets) {
    std::string cmd = "addr2line -a -C -f -i -e '" + object + "'";
    char buf[32];
    for (uintptr_t o : offsets) {
        snprintf(buf, sizeof buf, " 0x%lx", (unsigned long)o);
        cmd += buf;
    }
    cmd += " 2>/dev/null";
    std::vector<std::vector<Frame>> out(offsets.size());
    FILE* p = popen(cmd.c_str(), "r");
    if (!p) return out;
    std::vector<std::string> lines;
    char line[4096];
    while (fgets(line, sizeof line, p)) {
        std::string s = line;
        while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
        lines.push_back(s);
    }
    pclose(p);
    // Each address: "0x...", then (function, location) pairs, innermost inline frame first.
    int index = -1;
    for (size_t i = 0; i < lines.size(); ++i) {
        if (starts_with(lines[i], "0x")) {
            ++index;
            continue;
        }
        if (index < 0 || index >= (int)out.size() || i + 1 >= lines.size()) break;
        std::string fn = lines[i];
        // Rust's legacy mangling leaves a hash: "alexnet::x::y::h0123456789abcdef".
        const size_t h = fn.rfind("::h");
        if (h != std::string::npos && fn.size() - h == 19) fn.resize(h);
        out[index].push_back(Frame{fn, short_location(lines[i + 1])});
        ++i;
    }
    return out;
}

}  // namespace

std::string describe_trace(const Trace& t, const char* indent) {
    // Objects and offsets of the frames outside the simulation.
    std::vector<std::pair<std::string, uintptr_t>> frames;
    bool past_simulation = false;
    for (int i = 0; i < t.n; ++i) {
        Dl_info info;
        if (!dladdr(t.pc[i], &info) || !info.dli_fname) continue;
        if (is_simulation_object(info.dli_fname)) {
            if (past_simulation) break;  // back in the simulation: a callback's caller
            continue;
        }
        past_simulation = true;
        // The return address minus one lies in the call instruction.
        const uintptr_t pc = (uintptr_t)t.pc[i] - 1;
        frames.push_back({info.dli_fname, pc - (uintptr_t)info.dli_fbase});
    }
    std::map<std::string, std::vector<uintptr_t>> by_object;
    for (const auto& f : frames) by_object[f.first].push_back(f.second);
    std::map<std::pair<std::string, uintptr_t>, std::vector<Frame>> named;
    for (const auto& [object, offsets] : by_object) {
        const auto names = symbolize(object, offsets);
        for (size_t i = 0; i < offsets.size(); ++i) named[{object, offsets[i]}] = names[i];
    }
    std::string out;
    int shown = 0;
    for (const auto& f : frames) {
        std::vector<Frame> inlined = named[f];
        if (inlined.empty()) {
            char buf[64];
            snprintf(buf, sizeof buf, "+0x%lx", (unsigned long)f.second);
            const char* slash = std::strrchr(f.first.c_str(), '/');
            inlined.push_back(Frame{std::string(slash ? slash + 1 : f.first.c_str()) + buf, ""});
        }
        for (const Frame& fr : inlined) {
            if (is_runtime(fr) || shown == 6) continue;
            out += indent;
            out += fr.function;
            if (!fr.location.empty() && fr.location.find("??") == std::string::npos) out += "  (" + fr.location + ")";
            out += "\n";
            ++shown;
        }
    }
    if (out.empty()) out = std::string(indent) + "(no frames of the engine)\n";
    return out;
}

}  // namespace sim
