// The sanitizer lane's driver (scripts/emu-sanitize.sh): tiny cases that launch kernels through
// the executor and compare with plain loops. A case file includes shim.h and this header, then
// one `.cu` inside an anonymous namespace, and defines its cases with SANITIZE_CASE; each case
// file is its own translation unit, so one `.cu` per file.

#pragma once

#include <cstdio>
#include <vector>

#include "registry.h"
#include "shim.h"

namespace sanitize {

using CaseFn = bool (*)();
int register_case(const char* name, CaseFn run);

// Runs the kernel entry over the grid in the mode the driver was started with; false (and a
// message on stderr) when the executor refuses the launch.
bool launch(alexnet_emu::KernelFn kernel, void** args, dim3 grid, dim3 block, unsigned shared);

// Launch<&kernel>::run(grid, block, shared, args...): arguments converted to the kernel's
// parameter types, so a case passes plain values and pointers.
template <auto K>
struct Launch;
template <typename... P, void (*K)(P...)>
struct Launch<K> {
    static bool run(dim3 grid, dim3 block, unsigned shared, std::decay_t<P>... params) {
        void* args[] = {static_cast<void*>(&params)..., nullptr};
        return launch(&alexnet_emu::Invoke<void (*)(P...), K>::call, args, grid, block, shared);
    }
};

// |got - want| <= tol * max(1, |want|) everywhere; prints the first mismatch.
bool close(const char* what, const std::vector<float>& got, const std::vector<double>& want,
           double tol);

}  // namespace sanitize

#define SANITIZE_CASE(name)                                                              \
    static bool name();                                                                  \
    [[maybe_unused]] static const int name##_registered = sanitize::register_case(#name, &name); \
    static bool name()
