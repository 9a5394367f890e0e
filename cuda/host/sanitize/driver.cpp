// main() of the sanitizer lane's driver: runs every registered case (or the ones named) in fiber
// or thread mode. Exit status 0 when all pass, 1 when one fails; the sanitizers exit with their
// own status when they report.
//   usage: driver fibers|threads [case...]

#include <cmath>
#include <cstring>
#include <string>

#include "driver.h"

extern "C" int alexnet_emu_launch(alexnet_emu::KernelFn kernel, void** args,
                                  const unsigned grid[3], const unsigned block[3],
                                  unsigned shared_bytes, int mode, char* err, size_t err_len);

namespace sanitize {
namespace {
struct Case {
    const char* name;
    CaseFn run;
};
std::vector<Case>& cases() {
    static std::vector<Case> all;
    return all;
}
int g_mode = 0;
}  // namespace

int register_case(const char* name, CaseFn run) {
    cases().push_back({name, run});
    return 0;
}

bool launch(alexnet_emu::KernelFn kernel, void** args, dim3 grid, dim3 block, unsigned shared) {
    const unsigned g[3] = {grid.x, grid.y, grid.z}, b[3] = {block.x, block.y, block.z};
    char err[512];
    if (alexnet_emu_launch(kernel, args, g, b, shared, g_mode, err, sizeof err) != 0) {
        fprintf(stderr, "launch failed: %s\n", err);
        return false;
    }
    return true;
}

bool close(const char* what, const std::vector<float>& got, const std::vector<double>& want,
           double tol) {
    for (size_t i = 0; i < want.size(); ++i) {
        const double scale = std::fabs(want[i]) > 1.0 ? std::fabs(want[i]) : 1.0;
        if (!(std::fabs(got[i] - want[i]) <= tol * scale)) {
            fprintf(stderr, "%s: element %zu is %.9g, want %.9g\n", what, i, got[i], want[i]);
            return false;
        }
    }
    return true;
}
}  // namespace sanitize

int main(int argc, char** argv) {
    if (argc < 2 || (std::strcmp(argv[1], "fibers") && std::strcmp(argv[1], "threads"))) {
        fprintf(stderr, "usage: %s fibers|threads [case...]\n", argv[0]);
        return 2;
    }
    sanitize::g_mode = std::strcmp(argv[1], "threads") == 0 ? 1 : 0;
    int failed = 0, ran = 0;
    for (const auto& c : sanitize::cases()) {
        bool wanted = argc == 2;
        for (int i = 2; i < argc; ++i) wanted |= std::strcmp(argv[i], c.name) == 0;
        if (!wanted) continue;
        ++ran;
        const bool ok = c.run();
        printf("%-24s %s\n", c.name, ok ? "ok" : "FAILED");
        failed += !ok;
    }
    if (ran == 0) {
        fprintf(stderr, "no case matched\n");
        return 2;
    }
    return failed ? 1 : 0;
}
