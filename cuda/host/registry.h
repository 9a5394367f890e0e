// The kernel registry: what build.rs's generated translation units export for each kernel, and
// the template that turns a kernel into a `void(void** args)` entry without a hand-written
// signature: the parameter types are deduced from the function pointer and each `args[i]` (a
// pointer to the i-th argument's bytes, as cuLaunchKernel takes them) is copied into its type.
// The Rust side (`src/emu/mod.rs`) mirrors these structs with #[repr(C)].

#pragma once

#include <cstddef>
#include <cstring>
#include <type_traits>
#include <utility>

namespace alexnet_emu {

using KernelFn = void (*)(void** args);

struct KernelEntry {
    const char* variant;  // "" for the normal build, else e.g. "nobarrier"
    const char* module;   // the `.cu` file's stem
    const char* name;     // the extern "C" name
    KernelFn launch;
    unsigned n_params;
};

struct KernelTable {
    const KernelEntry* entries;
    size_t len;
};

template <typename F, F K>
struct Invoke;

template <typename... P, void (*K)(P...)>
struct Invoke<void (*)(P...), K> {
    static constexpr unsigned n_params = sizeof...(P);

    template <typename T>
    static T load(void* arg) {
        static_assert(std::is_trivially_copyable<T>::value, "kernel parameters are plain bytes");
        T v;
        std::memcpy(&v, arg, sizeof(T));
        return v;
    }
    template <size_t... I>
    static void call_with(void** args, std::index_sequence<I...>) {
        (void)args;
        K(load<std::decay_t<P>>(args[I])...);
    }
    static void call(void** args) { call_with(args, std::index_sequence_for<P...>{}); }
};

template <auto K>
constexpr KernelEntry kernel_entry(const char* variant, const char* module, const char* name) {
    using Fn = decltype(K);
    return KernelEntry{variant, module, name, &Invoke<Fn, K>::call, Invoke<Fn, K>::n_params};
}

}  // namespace alexnet_emu
