// crew/detail/code_ref.hpp — naming a function so that another process
// running the same binary can find it: a forked child, or a fresh exec of the
// same program (where ASLR loads every module at another address).
//
// A CodeRef is (module, offset): module 0 is the main program, any other is
// identified by a hash of its path as the dynamic loader reports it; the
// offset is from the module's ELF header. Resolving checks that the address
// falls in an executable segment of that module, so a corrupted message cannot
// make a worker jump into data.
#pragma once

#include <cstdint>
#include <mutex>
#include <string_view>
#include <vector>

#include <dlfcn.h>
#include <link.h>

#include <crew/errors.hpp>

namespace crew::detail {

struct CodeRef {
    std::uint64_t module = 0;  ///< 0: the main program; else a hash of the module's path
    std::uint64_t offset = 0;  ///< from the module's ELF header
};

class ModuleTable {
public:
    static CodeRef ref(const void* address) {
        const auto addr = reinterpret_cast<std::uintptr_t>(address);
        auto& table = instance();
        std::lock_guard lock(table.mutex_);
        for (int attempt = 0; attempt < 2; ++attempt) {
            for (const auto& m : table.modules_)
                if (m.contains(addr)) return {m.id, addr - m.header};
            table.reload();  // a library loaded since
        }
        throw InvalidArgument("crew: this function is not in any loaded module; process tasks must be functions "
                              "of the program or of a shared library it loaded");
    }

    static const void* resolve(CodeRef ref) {
        auto& table = instance();
        std::lock_guard lock(table.mutex_);
        for (int attempt = 0; attempt < 2; ++attempt) {
            for (const auto& m : table.modules_) {
                if (m.id != ref.module) continue;
                std::uintptr_t addr = m.header + ref.offset;
                if (m.executable(addr)) return reinterpret_cast<const void*>(addr);
                throw CodecError("crew: a task names code outside any executable segment; the message is corrupt "
                                 "or comes from another build of the program");
            }
            table.reload();
        }
        throw CodecError("crew: a task names a library this worker has not loaded; load it before starting the "
                         "executor, or use Start::fork");
    }

private:
    struct Segment {
        std::uintptr_t begin, end;
        bool executable;
    };
    struct Module {
        std::uint64_t id;
        std::uintptr_t header;
        std::vector<Segment> segments;
        bool contains(std::uintptr_t a) const {
            for (auto& s : segments)
                if (a >= s.begin && a < s.end) return true;
            return false;
        }
        bool executable(std::uintptr_t a) const {
            for (auto& s : segments)
                if (s.executable && a >= s.begin && a < s.end) return true;
            return false;
        }
    };

    static ModuleTable& instance() {
        static ModuleTable table;
        return table;
    }

    ModuleTable() { reload(); }

    static std::uint64_t hash(std::string_view s) {
        std::uint64_t h = 1469598103934665603ull;  // FNV-1a
        for (char c : s) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
        return h | 1;  // never 0, which names the main program
    }

    void reload() {
        modules_.clear();
        dl_iterate_phdr(
            [](dl_phdr_info* info, std::size_t, void* self) -> int {
                auto& modules = static_cast<ModuleTable*>(self)->modules_;
                Module m{};
                // The loader lists the main program first, with an empty name.
                m.id = modules.empty() ? 0 : hash(info->dlpi_name != nullptr ? info->dlpi_name : "");
                bool header_found = false;
                for (int i = 0; i < info->dlpi_phnum; ++i) {
                    const auto& ph = info->dlpi_phdr[i];
                    if (ph.p_type != PT_LOAD) continue;
                    std::uintptr_t begin = info->dlpi_addr + ph.p_vaddr;
                    if (!header_found) {
                        m.header = begin - ph.p_offset;
                        header_found = true;
                    }
                    m.segments.push_back({begin, begin + ph.p_memsz, (ph.p_flags & PF_X) != 0});
                }
                modules.push_back(std::move(m));
                return 0;
            },
            this);
    }

    std::mutex mutex_;
    std::vector<Module> modules_;
};

}  // namespace crew::detail
