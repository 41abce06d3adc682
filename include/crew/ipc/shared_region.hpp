// crew/ipc/shared_region.hpp — shared memory between a parent and the children
// it forks, or between unrelated processes that open it by name.
//
// What: crew::ipc::SharedRegion, a move-only owner of one MAP_SHARED mapping,
// with a small bump allocator to place objects in it (construct<T>()) and to
// find them from another process (at<T>(offset)).
//
// When: to share a crew::ipc::Mutex, Semaphore, ConditionVariable, a
// LockFreeQueue or plain data between processes. Between a parent and its own
// children, prefer anonymous(): it has no name at all, so nothing can leak or
// be opened by a stranger. Use create()/open() only for unrelated processes.
//
// Cost: one mmap (plus shm_open/ftruncate for a named region) on creation,
// munmap on destruction. construct() is one compare-exchange on a counter in
// the region. Pages are allocated by the kernel on first touch.
//
// Built on plain POSIX (shm_open, fchmod, ftruncate, mmap, shm_unlink) rather
// than Boost.Interprocess: it is smaller, and it lets us set O_EXCL and mode
// 0600 exactly and keep no file descriptor open after mapping.
//
// Rules for what you place in a region:
//   * Objects must be trivially copyable (plain data, std::atomic of a
//     lock-free type) or built for sharing between processes (crew::ipc::Mutex,
//     Semaphore, ConditionVariable). Never store a pointer or a reference: each
//     process maps the region at a different address. Store offsets instead
//     (offset_of() / at()).
//   * No destructor runs when the region goes away. Destroy objects yourself
//     (once, in one process) if their destructor matters.
//   * The first object constructed with alignment <= 64 sits at offset 0, so
//     a peer can find a single root object with at<Root>(0).
//
// Names (create/open): a name is "/something" with no other '/', at most 255
// characters after the '/'. Use unique_name(): it is unguessable. A named
// region is created with mode 0600 (only this user) and O_EXCL (never someone
// else's). The name is the only thing that outlives the processes: the creator
// removes it in unlink() or, failing that, in its destructor. Call unlink() as
// soon as every peer has opened the region; then nothing is left behind even
// if every process crashes.
#pragma once

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <new>
#include <string>
#include <string_view>
#include <utility>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <crew/detail/fd_util.hpp>
#include <crew/detail/random_name.hpp>
#include <crew/errors.hpp>

namespace crew::ipc {

/// Move-only owner of a shared memory mapping; see the rules at the top of
/// this header.
class SharedRegion {
public:
    /// An empty region (no mapping); assign a real one to it.
    SharedRegion() noexcept = default;

    /// `bytes` of zeroed shared memory with no name, shared with the children
    /// this process forks afterwards (mmap MAP_SHARED|MAP_ANONYMOUS). Throws
    /// crew::ChannelError when the system refuses the memory.
    static SharedRegion anonymous(std::size_t bytes);

    /// A new named region of `bytes` zeroed bytes for unrelated processes:
    /// shm_open(O_CREAT|O_EXCL) with mode 0600. Throws crew::InvalidArgument for
    /// a malformed name, crew::ChannelError when the name exists or the
    /// system refuses.
    static SharedRegion create(std::string_view name, std::size_t bytes);

    /// Opens a region another process made with create(); its size comes from
    /// the region itself. Throws crew::InvalidArgument for a malformed name,
    /// crew::ChannelError when there is no such region, it is not ours to open,
    /// or it is not a crew region.
    static SharedRegion open(std::string_view name);

    /// A fresh, unguessable name: "/<prefix>-<pid>-<32 hex digits from
    /// getrandom()>". Throws crew::InvalidArgument when `prefix` contains '/'
    /// or makes the name too long.
    static std::string unique_name(std::string_view prefix = "crew");

    SharedRegion(SharedRegion&& other) noexcept;
    SharedRegion& operator=(SharedRegion&& other) noexcept;
    SharedRegion(const SharedRegion&) = delete;
    SharedRegion& operator=(const SharedRegion&) = delete;

    /// Unmaps; the creator also removes the name if unlink() was not called.
    /// A forked child's copy never removes the name (only the creating process
    /// does).
    ~SharedRegion();

    /// Removes the name now; processes that have the region open keep using
    /// it. Idempotent; no-op for an anonymous region; a name already removed by
    /// someone else is fine. Throws crew::ChannelError when removal is refused.
    void unlink();

    /// The usable bytes (after crew's small header), aligned to 64.
    [[nodiscard]] void* data() const noexcept;
    /// The number of usable bytes at data().
    [[nodiscard]] std::size_t size() const noexcept;
    /// The region's name, "" when anonymous or empty.
    [[nodiscard]] const std::string& name() const noexcept { return name_; }

    /// Placement-new a T (from args) at the next suitably aligned free offset
    /// and return it. Processes constructing into the same region never
    /// overlap (the bump offset lives in the region). Throws crew::Error when
    /// the region is full; if T's constructor throws, its space stays used.
    template <class T, class... Args>
    T& construct(Args&&... args);

    /// The T that some process constructed at `offset` (from offset_of()).
    /// Throws crew::InvalidArgument when the offset is misaligned for T or T
    /// would not fit.
    template <class T>
    [[nodiscard]] T& at(std::size_t offset) const;

    /// The offset of `p` from data(), valid in every process. Throws
    /// crew::InvalidArgument when `p` is not inside this region.
    [[nodiscard]] std::size_t offset_of(const void* p) const;

private:
    SharedRegion(std::byte* base, std::size_t mapped, std::string name, bool creator) noexcept;
    void release() noexcept;

    std::byte* base_ = nullptr;  // start of the mapping: header, then data()
    std::size_t mapped_ = 0;     // bytes mapped, header included
    std::string name_;
    pid_t creator_pid_ = 0;  // the process that create()d the name; 0 otherwise
    bool unlinked_ = false;
};

}  // namespace crew::ipc

namespace crew::detail {

/// Lives at offset 0 of every region. `next` is the bump offset from the
/// start of the mapping, shared by every process that constructs into it.
struct RegionHeader {
    static constexpr std::uint64_t magic_value = 0x6372'6577'7265'6731;  // "crewreg1"

    std::atomic<std::uint64_t> magic;  // stored last by the creator (release)
    std::atomic<std::uint64_t> next;
};

/// The header's share of the mapping; data() starts here, cache-line aligned.
inline constexpr std::size_t region_header_bytes = 64;

static_assert(sizeof(RegionHeader) <= region_header_bytes);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free,
              "a region's header must be lock-free to work between processes");

/// Validates a shm name: "/x", no other '/', no NUL, <= 255 after the '/'.
inline void region_check_name(std::string_view name) {
    const bool ok = name.size() >= 2 && name.size() <= 256 && name.front() == '/' &&
                    name.find('/', 1) == std::string_view::npos && name.find('\0') == std::string_view::npos;
    if (!ok)
        throw InvalidArgument("crew::ipc::SharedRegion: \"" + std::string(name) +
                              "\" is not a valid shared memory name; use \"/name\" with no other '/' and at most "
                              "255 characters after the '/', e.g. SharedRegion::unique_name()");
}

[[noreturn]] inline void region_fail(const char* call, std::string_view name, int err) {
    std::string what = std::string("crew::ipc::SharedRegion: ") + call + " \"" + std::string(name) +
                       "\" failed: " + std::strerror(err);
    switch (err) {
        case EEXIST:
            what += "; the name is taken: pick a fresh one with SharedRegion::unique_name(), or remove a stale "
                    "region of yours with shm_unlink";
            break;
        case ENOENT:
            what += "; no region has that name: create() it first, or it was already unlink()ed";
            break;
        case EACCES:
        case EPERM:
            what += "; the region belongs to another user or does not allow this one";
            break;
        case EMFILE:
        case ENFILE:
            what += "; too many open files: close some, or raise the limit (ulimit -n)";
            break;
        case ENOMEM:
        case ENOSPC:
        case EFBIG:
            what += "; not enough memory or space in /dev/shm: ask for fewer bytes or free some";
            break;
        default:
            break;
    }
    throw ChannelError(what);
}

/// Maps `bytes` shared from `fd` (-1: anonymous); MAP_FAILED is thrown as an error.
inline std::byte* region_map(int fd, std::size_t bytes, std::string_view name) {
    const int flags = fd < 0 ? (MAP_SHARED | MAP_ANONYMOUS) : MAP_SHARED;
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, flags, fd, 0);
    if (p == MAP_FAILED) region_fail("mmap", name.empty() ? "(anonymous)" : name, errno);
    return static_cast<std::byte*>(p);
}

inline std::size_t region_mapped_bytes(std::size_t usable) {
    if (usable > SIZE_MAX / 2)
        throw InvalidArgument("crew::ipc::SharedRegion: " + std::to_string(usable) +
                              " bytes is more than any system can map; ask for fewer");
    return region_header_bytes + usable;
}

inline void region_init_header(std::byte* base) noexcept {
    auto* header = ::new (base) RegionHeader{};
    header->next.store(region_header_bytes, std::memory_order_relaxed);
    header->magic.store(RegionHeader::magic_value, std::memory_order_release);
}

inline RegionHeader& region_header(std::byte* base) noexcept {
    return *std::launder(reinterpret_cast<RegionHeader*>(base));
}

}  // namespace crew::detail

namespace crew::ipc {

inline SharedRegion::SharedRegion(std::byte* base, std::size_t mapped, std::string name, bool creator) noexcept
    : base_(base), mapped_(mapped), name_(std::move(name)), creator_pid_(creator ? ::getpid() : 0) {}

inline SharedRegion SharedRegion::anonymous(std::size_t bytes) {
    const std::size_t mapped = detail::region_mapped_bytes(bytes);
    std::byte* base = detail::region_map(-1, mapped, {});
    detail::region_init_header(base);
    return SharedRegion(base, mapped, std::string(), false);
}

inline SharedRegion SharedRegion::create(std::string_view name, std::size_t bytes) {
    detail::region_check_name(name);
    const std::size_t mapped = detail::region_mapped_bytes(bytes);
    std::string owned(name);
    // O_EXCL: never adopt a region someone else made under this name.
    const int opened = ::shm_open(owned.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (opened < 0) detail::region_fail("shm_open(O_CREAT|O_EXCL)", name, errno);
    // Even for a moment never on 0-2, where a stray write to "stderr" would
    // land in the region: see detail/fd_util.hpp.
    const int fd = detail::above_stdio(opened);
    if (fd < 0) {
        const int err = errno;
        ::shm_unlink(owned.c_str());
        detail::region_fail("fcntl(F_DUPFD_CLOEXEC)", name, err);
    }
    // From here on, failure must remove the name we just made.
    auto fail = [&](const char* call) {
        const int err = errno;
        ::close(fd);
        ::shm_unlink(owned.c_str());
        detail::region_fail(call, name, err);
    };
    // shm_open's mode is filtered by the umask; fchmod makes it exactly 0600.
    if (::fchmod(fd, 0600) != 0) fail("fchmod");
    if (::ftruncate(fd, static_cast<off_t>(mapped)) != 0) fail("ftruncate");
    // Reserved now: tmpfs hands out pages on first touch, and one /dev/shm
    // cannot find then is a SIGBUS in whoever touches it, not an error.
    if (const int rc = ::posix_fallocate(fd, 0, static_cast<off_t>(mapped)); rc != 0) {
        ::close(fd);
        ::shm_unlink(owned.c_str());
        if (rc == ENOSPC || rc == ENOMEM)
            throw ChannelError("crew::ipc::SharedRegion: not enough free space in /dev/shm for \"" + owned + "\" (" +
                               std::to_string(mapped) +
                               " bytes); free some (df /dev/shm), ask for fewer bytes, or mount /dev/shm larger");
        errno = rc;
        fail("posix_fallocate");
    }
    void* p = ::mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) fail("mmap");
    ::close(fd);  // the mapping keeps the memory; no descriptor to leak
    auto* base = static_cast<std::byte*>(p);
    detail::region_init_header(base);
    return SharedRegion(base, mapped, std::move(owned), true);
}

inline SharedRegion SharedRegion::open(std::string_view name) {
    detail::region_check_name(name);
    std::string owned(name);
    // O_NOFOLLOW: /dev/shm is shared by every user; never follow a link
    // someone planted under the agreed name.
    const int fd = detail::above_stdio(::shm_open(owned.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW, 0));
    if (fd < 0) detail::region_fail("shm_open", name, errno);
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
        const int err = errno;
        ::close(fd);
        detail::region_fail("fstat", name, err);
    }
    // Only this user's own, and only if no one else may write it: another
    // user who could truncate the object would kill us with SIGBUS later.
    if (st.st_uid != ::geteuid() || (st.st_mode & (S_IWGRP | S_IWOTH)) != 0 || !S_ISREG(st.st_mode)) {
        ::close(fd);
        char mode[8];
        std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
        throw ChannelError("crew::ipc::SharedRegion: \"" + owned +
                           "\" is not this user's private region (owner uid " + std::to_string(st.st_uid) +
                           ", mode " + mode + "); refusing it: another user made it or may write it. Use a fresh "
                           "name (SharedRegion::unique_name()) created by a process of this user");
    }
    const auto mapped = static_cast<std::size_t>(st.st_size);
    if (mapped < detail::region_header_bytes) {
        ::close(fd);
        throw ChannelError("crew::ipc::SharedRegion: \"" + owned +
                           "\" is not a crew region (too small), or its creator has not finished create(); "
                           "open it after create() returned in the creator");
    }
    void* p = ::mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    const int err = errno;
    ::close(fd);
    if (p == MAP_FAILED) detail::region_fail("mmap", name, err);
    auto* base = static_cast<std::byte*>(p);
    if (detail::region_header(base).magic.load(std::memory_order_acquire) != detail::RegionHeader::magic_value) {
        ::munmap(p, mapped);
        throw ChannelError("crew::ipc::SharedRegion: \"" + owned +
                           "\" is not a crew region, or its creator has not finished create(); open it after "
                           "create() returned in the creator");
    }
    return SharedRegion(base, mapped, std::move(owned), false);
}

inline std::string SharedRegion::unique_name(std::string_view prefix) {
    std::string name = "/" + detail::unique_name(std::string(prefix) + "-", "a SharedRegion name");
    detail::region_check_name(name);  // prefix with '/', NUL, or too long
    return name;
}

inline SharedRegion::SharedRegion(SharedRegion&& other) noexcept
    : base_(std::exchange(other.base_, nullptr)),
      mapped_(std::exchange(other.mapped_, 0)),
      name_(std::move(other.name_)),
      creator_pid_(std::exchange(other.creator_pid_, 0)),
      unlinked_(std::exchange(other.unlinked_, false)) {
    other.name_.clear();
}

inline SharedRegion& SharedRegion::operator=(SharedRegion&& other) noexcept {
    if (this != &other) {
        release();
        base_ = std::exchange(other.base_, nullptr);
        mapped_ = std::exchange(other.mapped_, 0);
        name_ = std::move(other.name_);
        other.name_.clear();
        creator_pid_ = std::exchange(other.creator_pid_, 0);
        unlinked_ = std::exchange(other.unlinked_, false);
    }
    return *this;
}

inline SharedRegion::~SharedRegion() { release(); }

inline void SharedRegion::release() noexcept {
    // Only the creating process removes the name: a forked child that
    // destroys its copy of the object must not pull the name from under the
    // parent.
    if (!name_.empty() && !unlinked_ && creator_pid_ != 0 && creator_pid_ == ::getpid())
        ::shm_unlink(name_.c_str());  // errors: nothing better to do in a destructor
    if (base_ != nullptr) ::munmap(base_, mapped_);
    base_ = nullptr;
    mapped_ = 0;
    name_.clear();
    creator_pid_ = 0;
    unlinked_ = false;
}

inline void SharedRegion::unlink() {
    if (name_.empty() || unlinked_) return;
    if (::shm_unlink(name_.c_str()) != 0 && errno != ENOENT) detail::region_fail("shm_unlink", name_, errno);
    unlinked_ = true;
}

inline void* SharedRegion::data() const noexcept {
    return base_ == nullptr ? nullptr : base_ + detail::region_header_bytes;
}

inline std::size_t SharedRegion::size() const noexcept {
    return base_ == nullptr ? 0 : mapped_ - detail::region_header_bytes;
}

template <class T, class... Args>
T& SharedRegion::construct(Args&&... args) {
    // Offsets are aligned relative to the mapping's start, which is
    // page-aligned, so any alignment up to a page holds in every process.
    static_assert(alignof(T) <= 4096, "crew::ipc::SharedRegion::construct: alignment above a page is not supported");
    if (base_ == nullptr)
        throw InvalidArgument("crew::ipc::SharedRegion::construct on an empty (moved-from) region");
    auto& header = detail::region_header(base_);
    std::uint64_t current = header.next.load(std::memory_order_relaxed);
    std::uint64_t start = 0;
    for (;;) {
        start = (current + alignof(T) - 1) / alignof(T) * alignof(T);
        if (start > mapped_ || sizeof(T) > mapped_ - start)
            throw Error("crew::ipc::SharedRegion is full: an object of " + std::to_string(sizeof(T)) +
                        " bytes (alignment " + std::to_string(alignof(T)) + ") does not fit in the " +
                        std::to_string(mapped_ - current) + " of " +
                        std::to_string(size()) + " bytes left; create the region larger");
        if (header.next.compare_exchange_weak(current, start + sizeof(T), std::memory_order_acq_rel,
                                              std::memory_order_relaxed))
            break;
    }
    return *::new (static_cast<void*>(base_ + start)) T(std::forward<Args>(args)...);
}

template <class T>
T& SharedRegion::at(std::size_t offset) const {
    const std::size_t usable = size();
    // Alignment counts from the (page-aligned) mapping start, as in construct().
    if (offset > usable || sizeof(T) > usable - offset || (detail::region_header_bytes + offset) % alignof(T) != 0)
        throw InvalidArgument("crew::ipc::SharedRegion::at(" + std::to_string(offset) + "): an object of " +
                              std::to_string(sizeof(T)) + " bytes (alignment " + std::to_string(alignof(T)) +
                              ") does not fit there in " + std::to_string(usable) +
                              " usable bytes; pass an offset from offset_of()");
    return *std::launder(reinterpret_cast<T*>(base_ + detail::region_header_bytes + offset));
}

inline std::size_t SharedRegion::offset_of(const void* p) const {
    // Compare as integers: `p` may point anywhere, and ordering unrelated
    // pointers is unspecified.
    const auto address = reinterpret_cast<std::uintptr_t>(p);
    const auto first = reinterpret_cast<std::uintptr_t>(data());
    if (first == 0 || address < first || address - first > size())
        throw InvalidArgument("crew::ipc::SharedRegion::offset_of: the pointer is not inside this region");
    return static_cast<std::size_t>(address - first);
}

}  // namespace crew::ipc
