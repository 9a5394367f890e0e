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

// How a kernel treats a parameter, from its type: a value, or a pointer whose pointee is const
// (read) or not (written, and maybe read). The simulated platform's sanitizer reads it.
enum ParamKind : unsigned char { kValue = 0, kReadPointer = 1, kWritePointer = 2 };

struct KernelEntry {
    const char* variant;  // "" for the normal build, else e.g. "nobarrier"
    const char* module;   // the `.cu` file's stem
    const char* name;     // the extern "C" name
    KernelFn launch;
    unsigned n_params;
    // Per parameter (each array has n_params entries and one more, unused): its size and
    // alignment in bytes, as cuLaunchKernel and cuFuncGetParamInfo lay parameters out, and kind.
    const unsigned* param_sizes;
    const unsigned* param_aligns;
    const unsigned char* param_kinds;
};

struct KernelTable {
    const KernelEntry* entries;
    size_t len;
};

template <typename F, F K>
struct Invoke;

template <typename T>
constexpr unsigned char param_kind() {
    using D = std::decay_t<T>;
    if constexpr (std::is_pointer<D>::value)
        return std::is_const<std::remove_pointer_t<D>>::value ? kReadPointer : kWritePointer;
    else
        return kValue;
}

template <typename... P, void (*K)(P...)>
struct Invoke<void (*)(P...), K> {
    static constexpr unsigned n_params = sizeof...(P);
    static constexpr unsigned sizes[] = {(unsigned)sizeof(std::decay_t<P>)..., 0u};
    static constexpr unsigned aligns[] = {(unsigned)alignof(std::decay_t<P>)..., 0u};
    static constexpr unsigned char kinds[] = {param_kind<P>()..., (unsigned char)0};

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
    using I = Invoke<Fn, K>;
    return KernelEntry{variant, module, name, &I::call, I::n_params, I::sizes, I::aligns, I::kinds};
}

}  // namespace alexnet_emu
