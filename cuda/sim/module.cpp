// Modules and launches. cuModuleLoadData takes the engine's embedded fatbin (nvcc's container:
// a header, then entries of PTX and of ELF cubins per target), checks that it holds code this
// device can run (SASS for sm_90, or PTX the driver would compile), and reads the kernel entry
// points from a cubin's symbol table. Those names identify the `.cu` file: the module is bound
// to the host executor's build of that file, and cuModuleGetFunction finds only its kernels.
//
// cuLaunchKernel refuses what the hardware refuses (block and grid limits, dynamic shared memory
// past 48 KiB unless raised with cuFuncSetAttribute, or past the device's maximum), copies the
// parameter values (laid out as the kernel's signature lays them out, which the host build
// knows), and queues the kernel. Each pointer parameter is an access for the sanitizer: a
// pointer to const is read, any other written, from the pointer to the end of its allocation.

#include <elf.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <map>
#include <set>

#include "../host/registry.h"
#include "sim.h"

extern "C" const alexnet_emu::KernelTable* const* alexnet_emu_tables(size_t* count);
extern "C" int alexnet_emu_launch(alexnet_emu::KernelFn kernel, void** args, const unsigned grid[3],
                                  const unsigned block[3], unsigned shared_bytes, int mode, char* err,
                                  size_t err_len);

namespace sim {

struct Function;

struct Module {
    Context* ctx = nullptr;
    std::string name;  // the .cu file's stem
    std::map<std::string, std::unique_ptr<Function>> functions;
    bool unloaded = false;
};

struct Function {
    Module* module = nullptr;
    const alexnet_emu::KernelEntry* entry = nullptr;
    std::vector<size_t> offsets;  // each parameter's offset in the parameter buffer
    size_t param_bytes = 0;
    unsigned max_dynamic_shared = 48 * 1024;
};

namespace {

constexpr unsigned kDefaultShared = 48 * 1024;
constexpr unsigned kMaxSharedOptin = 232448;  // 227 KiB: sm_90's per-block maximum
constexpr int kArch = 90;

std::set<Module*>& modules() {
    static std::set<Module*> m;
    return m;
}

// The host build's kernels (normal variant), by module.
const std::map<std::string, std::map<std::string, const alexnet_emu::KernelEntry*>>& host_kernels() {
    static const auto table = [] {
        std::map<std::string, std::map<std::string, const alexnet_emu::KernelEntry*>> t;
        size_t count = 0;
        const alexnet_emu::KernelTable* const* tables = alexnet_emu_tables(&count);
        for (size_t i = 0; i < count; ++i) {
            for (size_t j = 0; j < tables[i]->len; ++j) {
                const alexnet_emu::KernelEntry& e = tables[i]->entries[j];
                if (!*e.variant) t[e.module][e.name] = &e;
            }
        }
        return t;
    }();
    return table;
}

struct FatbinEntry {
    unsigned kind;  // 1 PTX, 2 ELF
    unsigned arch;  // sm or compute capability, e.g. 90
    const unsigned char* payload;
    uint64_t size;
};

// The entries of an nvcc fatbin, or false if `image` is not one.
bool fatbin_entries(const void* image, std::vector<FatbinEntry>* out) {
    const auto* p = static_cast<const unsigned char*>(image);
    uint32_t magic;
    uint16_t header;
    uint64_t body;
    std::memcpy(&magic, p, 4);
    if (magic != 0xBA55ED50u) return false;
    std::memcpy(&header, p + 6, 2);
    std::memcpy(&body, p + 8, 8);
    for (uint64_t off = header; off + 32 <= header + body;) {
        uint16_t kind;
        uint32_t entry_header, arch;
        uint64_t size;
        std::memcpy(&kind, p + off, 2);
        std::memcpy(&entry_header, p + off + 4, 4);
        std::memcpy(&size, p + off + 8, 8);
        std::memcpy(&arch, p + off + 28, 4);
        if (entry_header == 0) return false;
        out->push_back(FatbinEntry{kind, arch, p + off + entry_header, size});
        off += entry_header + size;
    }
    return !out->empty();
}

// The kernel entry points of a cubin: functions marked as entries (st_other 0x10).
bool cubin_kernels(const unsigned char* elf, uint64_t size, std::set<std::string>* out) {
    if (size < sizeof(Elf64_Ehdr) || std::memcmp(elf, ELFMAG, SELFMAG) != 0) return false;
    Elf64_Ehdr eh;
    std::memcpy(&eh, elf, sizeof eh);
    if (eh.e_shoff + (uint64_t)eh.e_shnum * sizeof(Elf64_Shdr) > size) return false;
    std::vector<Elf64_Shdr> sections(eh.e_shnum);
    std::memcpy(sections.data(), elf + eh.e_shoff, eh.e_shnum * sizeof(Elf64_Shdr));
    for (const Elf64_Shdr& sh : sections) {
        if (sh.sh_type != SHT_SYMTAB || sh.sh_link >= sections.size()) continue;
        const Elf64_Shdr& strtab = sections[sh.sh_link];
        if (sh.sh_offset + sh.sh_size > size || strtab.sh_offset + strtab.sh_size > size) return false;
        for (uint64_t i = 0; i < sh.sh_size / sizeof(Elf64_Sym); ++i) {
            Elf64_Sym sym;
            std::memcpy(&sym, elf + sh.sh_offset + i * sizeof(Elf64_Sym), sizeof sym);
            if (ELF64_ST_TYPE(sym.st_info) != STT_FUNC || !(sym.st_other & 0x10)) continue;
            if (sym.st_name >= strtab.sh_size) return false;
            out->insert(reinterpret_cast<const char*>(elf + strtab.sh_offset + sym.st_name));
        }
        return true;
    }
    return false;
}

std::string dims(unsigned x, unsigned y, unsigned z) {
    return "[" + std::to_string(x) + ", " + std::to_string(y) + ", " + std::to_string(z) + "]";
}

}  // namespace

CUresult load_module(Context* ctx, const void* image, CUmodule* out) {
    std::vector<FatbinEntry> entries;
    if (!image || !fatbin_entries(image, &entries)) {
        note("cuModuleLoadData: the image is not an nvcc fatbin (the simulated driver loads only fatbins)");
        return CUDA_ERROR_INVALID_IMAGE;
    }
    bool runs = false;
    std::set<std::string> names;
    bool have_names = false;
    for (const FatbinEntry& e : entries) {
        // SASS runs on its own major version at or above its minor; PTX is compiled for any
        // device at or above its target.
        if (e.kind == 2 && e.arch / 10 == kArch / 10 && e.arch <= kArch) runs = true;
        if (e.kind == 1 && e.arch <= kArch) runs = true;
        if (e.kind == 2 && !have_names) have_names = cubin_kernels(e.payload, e.size, &names);
    }
    if (!runs) {
        note("cuModuleLoadData: the fatbin holds no code for sm_%d (neither its SASS nor PTX of an older target)", kArch);
        return CUDA_ERROR_NO_BINARY_FOR_GPU;
    }
    if (!have_names) {
        note("cuModuleLoadData: the fatbin has no readable cubin to learn its kernels from");
        return CUDA_ERROR_INVALID_IMAGE;
    }
    // The host build of the file with exactly these kernels.
    for (const auto& [module, kernels] : host_kernels()) {
        std::set<std::string> host_names;
        for (const auto& k : kernels) host_names.insert(k.first);
        if (host_names != names) continue;
        auto* m = new Module;
        m->ctx = ctx;
        m->name = module;
        modules().insert(m);
        *out = reinterpret_cast<CUmodule>(m);
        return CUDA_SUCCESS;
    }
    std::string list;
    for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
    note("cuModuleLoadData: no host build of the kernels has this fatbin's kernels (%s): the simulation and the "
         "engine come from different builds", list.c_str());
    return CUDA_ERROR_INVALID_IMAGE;
}

Module* module_of(CUmodule h) {
    auto* m = reinterpret_cast<Module*>(h);
    return modules().count(m) && !m->unloaded ? m : nullptr;
}

Function* function_of(CUfunction h) {
    auto* f = reinterpret_cast<Function*>(h);
    for (Module* m : modules())
        for (auto& [name, fn] : m->functions)
            if (fn.get() == f) return m->unloaded ? nullptr : f;
    return nullptr;
}

CUresult module_unload(Module* m) {
    m->unloaded = true;  // its functions stay allocated: queued launches still name them
    return CUDA_SUCCESS;
}

CUresult module_get_function(Module* m, const char* name, CUfunction* out) {
    auto& kernels = host_kernels().at(m->name);
    auto k = kernels.find(name);
    if (k == kernels.end()) return CUDA_ERROR_NOT_FOUND;
    auto& f = m->functions[name];
    if (!f) {
        f = std::make_unique<Function>();
        f->module = m;
        f->entry = k->second;
        size_t off = 0;
        for (unsigned i = 0; i < f->entry->n_params; ++i) {
            const size_t align = f->entry->param_aligns[i];
            off = (off + align - 1) / align * align;
            f->offsets.push_back(off);
            off += f->entry->param_sizes[i];
        }
        f->param_bytes = off;
    }
    *out = reinterpret_cast<CUfunction>(f.get());
    return CUDA_SUCCESS;
}

CUresult function_param_info(Function* f, size_t index, size_t* offset, size_t* size) {
    if (index >= f->entry->n_params) return CUDA_ERROR_INVALID_VALUE;
    if (offset) *offset = f->offsets[index];
    if (size) *size = f->entry->param_sizes[index];
    return CUDA_SUCCESS;
}

CUresult function_set_attribute(Function* f, int attrib, int value) {
    if (attrib != CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES) {
        note("cuFuncSetAttribute: attribute %d is not simulated", attrib);
        return CUDA_ERROR_NOT_SUPPORTED;
    }
    if (value < 0 || (unsigned)value > kMaxSharedOptin) return CUDA_ERROR_INVALID_VALUE;
    f->max_dynamic_shared = (unsigned)value;
    return CUDA_SUCCESS;
}

Context* function_context(Function* f) { return f->module->ctx; }

CUresult launch(Lock& lk, Function* f, const unsigned grid[3], const unsigned block[3], unsigned shared,
                Stream* s, void** params, void** extra) {
    const auto* e = f->entry;
    const std::string name = f->module->name + "::" + e->name;
    const unsigned long long threads = (unsigned long long)block[0] * block[1] * block[2];
    if (!grid[0] || !grid[1] || !grid[2] || !block[0] || !block[1] || !block[2]) return CUDA_ERROR_INVALID_VALUE;
    if (block[0] > 1024 || block[1] > 1024 || block[2] > 64 || threads > 1024) {
        note("cuLaunchKernel %s: block %s has %llu threads; the device allows 1024 (x, y <= 1024, z <= 64)",
             name.c_str(), dims(block[0], block[1], block[2]).c_str(), threads);
        return CUDA_ERROR_INVALID_VALUE;
    }
    if (grid[0] > 2147483647u || grid[1] > 65535 || grid[2] > 65535) {
        note("cuLaunchKernel %s: grid %s exceeds the device's limits (x < 2^31, y and z <= 65535)", name.c_str(),
             dims(grid[0], grid[1], grid[2]).c_str());
        return CUDA_ERROR_INVALID_VALUE;
    }
    if (shared > f->max_dynamic_shared) {
        note("cuLaunchKernel %s: %u bytes of dynamic shared memory; the function allows %u (more than %u needs "
             "cuFuncSetAttribute(CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES), up to %u)",
             name.c_str(), shared, f->max_dynamic_shared, kDefaultShared, kMaxSharedOptin);
        return CUDA_ERROR_INVALID_VALUE;
    }
    if (extra) {
        note("cuLaunchKernel %s: parameters passed through `extra` are not simulated", name.c_str());
        return CUDA_ERROR_NOT_SUPPORTED;
    }
    if (e->n_params && !params) return CUDA_ERROR_INVALID_VALUE;
    auto op = new_op("kernel " + name + " (grid " + dims(grid[0], grid[1], grid[2]) + ", block " +
                     dims(block[0], block[1], block[2]) + ", " + std::to_string(shared) + " shared bytes)");
    // The values, as cuLaunchKernel copies them before it returns.
    auto values = std::make_shared<std::vector<unsigned char>>(f->param_bytes + 1);
    for (unsigned i = 0; i < e->n_params; ++i) {
        std::memcpy(values->data() + f->offsets[i], params[i], e->param_sizes[i]);
        if (e->param_kinds[i] == alexnet_emu::kValue) continue;
        uint64_t p;
        std::memcpy(&p, values->data() + f->offsets[i], 8);
        if (!p) continue;
        const Allocation* a = find_live(p);
        const uint64_t hi = a ? a->end() : p + 1;
        op->accesses.push_back(Access{p, hi,
                                      e->param_kinds[i] == alexnet_emu::kReadPointer ? AccessKind::Read
                                                                                     : AccessKind::Write,
                                      true});
    }
    const std::array<unsigned, 3> g{grid[0], grid[1], grid[2]}, b{block[0], block[1], block[2]};
    // With the sanitizer on, what the kernel reads and writes is measured as it runs; without
    // compute it does not run, and each pointer's access is taken to reach the end of its
    // allocation.
    op->measured = config().compute && config().sanitize != Sanitize::Off;
    op->run = [f, values, g, b, shared](Op& self) {
        if (!config().compute) return;
        std::vector<void*> args(f->entry->n_params + 1);
        for (unsigned i = 0; i < f->entry->n_params; ++i) args[i] = values->data() + f->offsets[i];
        char err[512] = {0};
        int failed = 0;
        auto execute = [&] {
            failed = alexnet_emu_launch(f->entry->launch, args.data(), g.data(), b.data(), shared, 0, err, sizeof err);
        };
        if (!self.measured) {
            execute();
        } else {
            // The device memory its pointers reach (pinned memory keeps its whole-extent check).
            std::vector<Allocation*> allocs;
            std::set<Allocation*> writable;
            for (unsigned i = 0; i < f->entry->n_params; ++i) {
                if (f->entry->param_kinds[i] == alexnet_emu::kValue) continue;
                uint64_t p;
                std::memcpy(&p, values->data() + f->offsets[i], 8);
                Allocation* a = p ? find_live(p) : nullptr;
                if (!a || a->device < 0) continue;
                if (std::find(allocs.begin(), allocs.end(), a) == allocs.end()) allocs.push_back(a);
                if (f->entry->param_kinds[i] == alexnet_emu::kWritePointer) writable.insert(a);
            }
            for (const Touched& t : watch_run(allocs, execute)) {
                if (t.read) check_access(t.alloc, t.lo, t.hi, AccessKind::Read, self.info, self.clock);
                if (t.written) {
                    if (!writable.count(t.alloc))
                        report("a kernel wrote memory it was handed only as const: " + describe_alloc(t.alloc),
                               "  the kernel\n" + describe_op(self.info, "      "));
                    check_access(t.alloc, t.lo, t.hi, AccessKind::Write, self.info, self.clock);
                }
            }
        }
        if (failed) {
            note("%s on %s failed in the host executor: %s; the context now holds CUDA_ERROR_LAUNCH_FAILED",
                 self.info->what.c_str(), self.info->where.c_str(), err);
            self.stream->ctx->sticky = CUDA_ERROR_LAUNCH_FAILED;
        }
    };
    enqueue(lk, s, std::move(op));
    return CUDA_SUCCESS;
}

}  // namespace sim
