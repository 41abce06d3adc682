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
#include <algorithm>
#include <cstring>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

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

    /// resolve() for a function pointer that travelled as data: the address
    /// must also be where a function of that module begins (its ELF symbol
    /// table says so), not any executable byte. A module whose file has no
    /// symbol table to read (stripped of .symtab and .dynsym, or unreadable)
    /// is checked by its executable segments only.
    static const void* resolve_function(CodeRef ref) {
        const void* address = resolve(ref);
        auto& table = instance();
        std::lock_guard lock(table.mutex_);
        for (auto& m : table.modules_) {
            if (m.id != ref.module) continue;
            if (!m.functions_read) {
                m.functions = read_function_starts(m.id == 0 ? std::string("/proc/self/exe") : m.path, m.base);
                m.functions_read = true;
            }
            if (!m.functions.empty() &&
                !std::binary_search(m.functions.begin(), m.functions.end(), reinterpret_cast<std::uintptr_t>(address)))
                throw CodecError("crew: a task names an address that is not the start of a function of this "
                                 "program; the message is corrupt or comes from another build");
        }
        return address;
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
        std::string path;          // as the loader reports it (empty for the main program)
        std::uintptr_t base = 0;   // the loader's load bias (dlpi_addr)
        bool functions_read = false;
        std::vector<std::uintptr_t> functions;  // sorted run-time addresses of function symbols
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

    // Function symbols (STT_FUNC, STT_GNU_IFUNC) of the ELF file at `path`,
    // as run-time addresses: .symtab when present, else .dynsym. Empty when
    // the file cannot be read or has neither.
    static std::vector<std::uintptr_t> read_function_starts(const std::string& path, std::uintptr_t base) {
        std::vector<std::uintptr_t> starts;
        const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) return starts;
        struct stat st {};
        void* map = MAP_FAILED;
        if (::fstat(fd, &st) == 0 && st.st_size > static_cast<off_t>(sizeof(ElfW(Ehdr))))
            map = ::mmap(nullptr, static_cast<std::size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
        ::close(fd);
        if (map == MAP_FAILED) return starts;
        const auto size = static_cast<std::size_t>(st.st_size);
        const auto* bytes = static_cast<const unsigned char*>(map);
        auto in_file = [&](std::size_t offset, std::size_t length) { return offset <= size && length <= size - offset; };
        ElfW(Ehdr) eh;
        std::memcpy(&eh, bytes, sizeof eh);
        const bool elf = std::memcmp(eh.e_ident, ELFMAG, SELFMAG) == 0 && eh.e_shentsize == sizeof(ElfW(Shdr)) &&
                         in_file(eh.e_shoff, std::size_t{eh.e_shnum} * sizeof(ElfW(Shdr)));
        for (const unsigned type : {unsigned{SHT_SYMTAB}, unsigned{SHT_DYNSYM}}) {
            if (!elf || !starts.empty()) break;
            for (std::size_t i = 0; i < eh.e_shnum; ++i) {
                ElfW(Shdr) sh;
                std::memcpy(&sh, bytes + eh.e_shoff + i * sizeof sh, sizeof sh);
                if (sh.sh_type != type || sh.sh_entsize != sizeof(ElfW(Sym)) || !in_file(sh.sh_offset, sh.sh_size))
                    continue;
                for (std::size_t j = 0; j < sh.sh_size / sizeof(ElfW(Sym)); ++j) {
                    ElfW(Sym) sym;
                    std::memcpy(&sym, bytes + sh.sh_offset + j * sizeof sym, sizeof sym);
                    const unsigned kind = ELF64_ST_TYPE(sym.st_info);
                    if ((kind == STT_FUNC || kind == STT_GNU_IFUNC) && sym.st_shndx != SHN_UNDEF && sym.st_value != 0)
                        starts.push_back(base + sym.st_value);
                }
            }
        }
        ::munmap(map, size);
        std::sort(starts.begin(), starts.end());
        return starts;
    }

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
                m.path = info->dlpi_name != nullptr ? info->dlpi_name : "";
                m.base = info->dlpi_addr;
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
