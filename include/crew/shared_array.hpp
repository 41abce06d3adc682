// crew/shared_array.hpp — crew::SharedArray<T>: an array of trivially copyable
// T in memory shared by this process and its workers, passed to a task and
// returned from one with no copy of the elements.
//
// What:
//     crew::SharedArray<float> image(width * height);   // zero-filled
//     ex.submit(blur_rows, image, first, last).get();   // the worker writes...
//     float v = image[42];                               // ...and we read it here
// `size()`, `data()`, `operator[]`, `begin()`/`end()`, `span()`; a copy is
// another handle to the same memory (like std::shared_ptr, not like
// std::vector): in this process by copying, in another process by passing it
// as a task's argument or returning it as a result. A default-constructed or
// moved-from array is empty.
//
// When: large data that workers read or write in place (images, matrices,
// columns). Passing one to a task costs the same whatever its size: a
// 48-byte handle, plus one open() and one mmap() the first time a worker
// sees the array (see docs/benchmarks.md). For small data a std::vector by
// value is as fast and simpler.
//
// Shared means shared: two processes (or threads) writing the same elements
// at the same time race exactly as two threads would. Give each task its own
// elements (disjoint rows), or guard them with a process-shared lock
// (crew::ipc::Mutex); a task's writes are visible to the caller once its
// future is ready (get() returned), as with threads.
//
// How: the memory is a memfd (memfd_create: no name in any filesystem, never
// in /dev/shm), sized once and sealed (F_SEAL_SHRINK | F_SEAL_GROW |
// F_SEAL_SEAL), so no holder can shrink it under another's mapping. Each
// process maps it once: every handle in a process (a copy, or a handle
// received while this process still has the memory mapped, e.g. an array
// handed to a task and returned) shares that mapping and its descriptor, and
// the last handle to go unmaps it and closes the descriptor. A worker also
// keeps what its last task received mapped until the next task has its
// arguments (an array handed to task after task is opened and mapped once),
// or until it has been idle for 20 ms. The kernel frees the memory when the
// last process holding a mapping or descriptor lets go, also when processes
// crash: nothing to clean up. Across processes a SharedArray travels as 48
// bytes (crew::Codec below): the sender's pid and descriptor number, the
// file's st_dev/st_ino, the element count, sizeof(T) and a hash of T's name.
// The receiver opens /proc/<pid>/fd/<fd> (crew/detail/peer_fd.hpp), checks
// that it is the same file, sealed, of the right size, and maps it. Works with
// every channel and start method, and on ThreadExecutor (where no encoding
// happens: a copy is another handle).
//
// The sender must still hold the array when the receiver decodes it.
// ProcessExecutor sees to it for task arguments and results. Over a raw
// channel (crew::ipc::Pipe etc. used on its own), keep the array (a copy) alive
// in the sender until the peer has received it; otherwise decoding throws
// crew::CodecError ("the SharedArray's sender let go of it ...").
//
// Errors: the memory is reserved at construction (posix_fallocate), so a full
// memory cgroup or too little RAM is a crew::ChannelError thrown by the
// constructor (with errno's reason), never a SIGBUS on first touch later.
// Each array holds one descriptor per process that has it; running out of
// descriptors is a crew::ChannelError too. Options::memory_limit (RLIMIT_AS)
// counts every array a worker maps.
//
// Limits: Linux only; the receiving process must be allowed to read the
// sender's /proc/<pid>/fd (the same user, and the sender dumpable: not a
// setuid program or one that called prctl(PR_SET_DUMPABLE, 0)). T's bytes are
// not portable (same build on both sides, as for every crew::Codec type).
//
// Thread safety: copying, moving and destroying different handles to the
// same memory may happen on any threads at once (the mapping is refcounted
// like std::shared_ptr); one handle is a value like any other. Element
// access is the user's to synchronise.
#pragma once

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <utility>

#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <crew/codec.hpp>
#include <crew/detail/fd_util.hpp>
#include <crew/detail/peer_fd.hpp>
#include <crew/errors.hpp>

namespace crew {

namespace detail {

/// Which (st_dev, st_ino) names a shared memory file.
struct FileId {
    std::uint64_t dev = 0;
    std::uint64_t ino = 0;
    friend bool operator==(const FileId&, const FileId&) = default;
};
struct FileIdHash {
    std::size_t operator()(const FileId& id) const noexcept {
        return static_cast<std::size_t>(id.ino * 0x9e3779b97f4a7c15ull ^ id.dev);
    }
};

class SharedMapping;

/// The SharedArray memory this process has mapped, by file: decoding a
/// handle to memory already mapped here (an array handed to a task and
/// returned, or received twice) gives another handle to that mapping instead
/// of a second descriptor and mapping of the same memory. Holds no
/// ownership (weak_ptr): the last handle still unmaps at once.
///
/// fork(): the lock is taken around fork (pthread_atfork), so a child never
/// inherits it held; a child starts from an empty table (inherited mappings
/// may have lost their descriptors there).
class MappingRegistry {
public:
    static MappingRegistry& instance() {
        // Never destroyed: a SharedArray in a static object may go after it.
        static MappingRegistry* registry = new MappingRegistry();
        return *registry;
    }

    /// This process's id, kept up to date across fork() by the registry's
    /// fork handler: a handle is described and looked up on every hand-over,
    /// and getpid() is a system call.
    [[nodiscard]] pid_t pid() const noexcept { return pid_.load(std::memory_order_relaxed); }

    /// The live mapping of `id` in this process, or null.
    std::shared_ptr<SharedMapping> find(const FileId& id) {
        std::lock_guard lock(mutex_);
        auto it = map_.find(id);
        return it == map_.end() ? nullptr : it->second.mapping.lock();
    }

    /// Records `m` as the mapping of `id`; when another live one was recorded
    /// meanwhile (two threads decoded the same array at once), returns that
    /// one instead and `m` is let go.
    std::shared_ptr<SharedMapping> add(const FileId& id, std::shared_ptr<SharedMapping> m) {
        std::shared_ptr<SharedMapping> existing;
        {
            std::lock_guard lock(mutex_);
            auto [it, inserted] = map_.try_emplace(id);
            if (!inserted) existing = it->second.mapping.lock();
            if (existing == nullptr) {
                it->second = Entry{m.get(), m};
                return m;
            }
        }
        return existing;  // m unmaps outside the lock
    }

    /// Called by the mapping's destructor: forgets `id` if it still names `m`.
    void remove(const FileId& id, const SharedMapping* m) noexcept {
        std::lock_guard lock(mutex_);
        auto it = map_.find(id);
        if (it != map_.end() && it->second.raw == m) map_.erase(it);
    }

private:
    struct Entry {
        const SharedMapping* raw = nullptr;
        std::weak_ptr<SharedMapping> mapping;
    };

    MappingRegistry() { ::pthread_atfork(&before_fork, &in_parent, &in_child); }

    static void before_fork() noexcept { instance().mutex_.lock(); }
    static void in_parent() noexcept { instance().mutex_.unlock(); }
    // The child's table would name the parent's mappings; its entries are
    // only forgotten, not freed (their owners' destructors see no entry).
    // Only one thread runs in the child here, and it holds the lock.
    static void in_child() noexcept {
        auto& r = instance();
        r.map_.clear();
        r.pid_.store(::getpid(), std::memory_order_relaxed);
        r.mutex_.unlock();
    }

    std::mutex mutex_;
    std::atomic<pid_t> pid_{::getpid()};
    std::unordered_map<FileId, Entry, FileIdHash> map_;
};

/// One sealed memfd and its mapping in this process, shared by every handle
/// (copy) of a SharedArray here. Unmaps and closes on destruction.
class SharedMapping {
public:
    /// A new zero-filled memfd of `bytes` (> 0), reserved and sealed, mapped.
    static std::shared_ptr<SharedMapping> create(std::size_t bytes) {
        int fd = make_memfd();
        auto fail = [&](const char* step, int error) {
            ::close(fd);
            throw ChannelError("crew::SharedArray: cannot reserve " + std::to_string(bytes) +
                               " bytes of shared memory (" + step + ": " + std::strerror(error) +
                               "); the machine's memory or this process's memory cgroup is too small for it: "
                               "use a smaller array or raise the limit");
        };
        if (::ftruncate(fd, static_cast<off_t>(bytes)) != 0) fail("ftruncate", errno);
        // Allocates every page now, so that running out of memory is this
        // error, not a SIGBUS when some process first touches a page.
        int error;
        do {
            error = ::posix_fallocate(fd, 0, static_cast<off_t>(bytes));
        } while (error == EINTR);
        if (error != 0) fail("posix_fallocate", error);
        if (::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) fail("sealing", errno);
        struct stat st {};
        if (::fstat(fd, &st) != 0) fail("fstat", errno);
        const FileId id{static_cast<std::uint64_t>(st.st_dev), static_cast<std::uint64_t>(st.st_ino)};
        return MappingRegistry::instance().add(id, map(fd, id, bytes));
    }

    /// The memfd another process described by `peer`, expected to hold
    /// exactly `bytes`, mapped here (or the mapping this process already
    /// has of it). Throws crew::CodecError.
    static std::shared_ptr<SharedMapping> open(const PeerFd& peer, std::size_t bytes) {
        const FileId id{peer.dev, peer.ino};
        if (auto known = MappingRegistry::instance().find(id)) {
            known->check_size(bytes);
            return known;
        }
        struct stat st {};
        const int fd = open_peer_fd(peer, O_RDWR, &st);
        if (fd == -ENOENT || fd == -ESTALE)
            throw CodecError("crew::SharedArray: the SharedArray's sender let go of it before this process "
                             "received it (process " + std::to_string(peer.pid) +
                             " no longer holds it); keep the array, or a copy, alive in the sender until the "
                             "receiver has decoded it");
        if (fd < 0)
            throw CodecError("crew::SharedArray: cannot open the shared memory of process " +
                             std::to_string(peer.pid) + " through /proc/" + std::to_string(peer.pid) + "/fd/" +
                             std::to_string(peer.fd) + ": " + std::strerror(-fd) +
                             (fd == -EACCES || fd == -EPERM
                                  ? " (both processes must run as the same user, and the sender must be dumpable)"
                                  : ""));
        // Sealed against shrinking, so no holder can cut the file under our
        // mapping (which would turn reads into SIGBUS).
        const int seals = ::fcntl(fd, F_GET_SEALS);
        const int needed = F_SEAL_SHRINK | F_SEAL_SEAL;
        if (!S_ISREG(st.st_mode) || seals < 0 || (seals & needed) != needed ||
            static_cast<std::uint64_t>(st.st_size) != bytes) {
            ::close(fd);
            throw CodecError("crew::SharedArray: the shared memory received is not a sealed array of " +
                             std::to_string(bytes) + " bytes; the input is corrupt or encodes another type");
        }
        return MappingRegistry::instance().add(id, map(fd, id, bytes));
    }

    SharedMapping(const SharedMapping&) = delete;
    SharedMapping& operator=(const SharedMapping&) = delete;
    ~SharedMapping() {
        MappingRegistry::instance().remove(id_, this);
        ::munmap(data_, bytes_);
        ::close(fd_);
    }

    [[nodiscard]] void* data() const noexcept { return data_; }

    /// This mapping's descriptor, described for another process.
    [[nodiscard]] PeerFd describe() const noexcept {
        return PeerFd{static_cast<std::int32_t>(MappingRegistry::instance().pid()), static_cast<std::int32_t>(fd_),
                      id_.dev, id_.ino};
    }

private:
    SharedMapping(int fd, FileId id, void* data, std::size_t bytes) noexcept
        : fd_(fd), id_(id), data_(data), bytes_(bytes) {}

    void check_size(std::size_t bytes) const {
        if (bytes != bytes_)
            throw CodecError("crew::SharedArray: a handle of " + std::to_string(bytes) +
                             " bytes names shared memory of " + std::to_string(bytes_) +
                             " bytes; the input is corrupt or encodes another type");
    }

    static int make_memfd() {
        // MFD_NOEXEC_SEAL (Linux 6.3; not in older headers) says the memory is
        // never executed, which newer kernels ask for; older ones refuse the
        // flag (EINVAL) and get the plain form.
        constexpr unsigned noexec_seal = 0x0008U;
        int fd = ::memfd_create("crew-shared-array", MFD_CLOEXEC | MFD_ALLOW_SEALING | noexec_seal);
        if (fd < 0 && errno == EINVAL) fd = ::memfd_create("crew-shared-array", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        fd = above_stdio(fd);
        if (fd < 0)
            throw ChannelError(std::string("crew::SharedArray: cannot create shared memory (memfd_create: ") +
                               std::strerror(errno) +
                               (errno == EMFILE || errno == ENFILE
                                    ? "); each SharedArray holds a descriptor: free some, or raise the limit "
                                      "(ulimit -n)"
                                    : ")"));
        return fd;
    }

    static std::shared_ptr<SharedMapping> map(int fd, FileId id, std::size_t bytes) {
        void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        // A worker under Options::memory_limit: the arrays its last task had
        // (kept in case this one is handed them again) go first.
        if (p == MAP_FAILED && errno == ENOMEM && current_keeps != nullptr && current_keeps->let_go_of_last())
            p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) {
            const int error = errno;
            ::close(fd);
            throw ChannelError("crew::SharedArray: cannot map " + std::to_string(bytes) +
                               " bytes of shared memory (mmap: " + std::strerror(error) +
                               "); the address space is too small for it (see Options::memory_limit)");
        }
        try {
            return std::shared_ptr<SharedMapping>(new SharedMapping(fd, id, p, bytes));
        } catch (...) {
            ::munmap(p, bytes);
            ::close(fd);
            throw;
        }
    }

    int fd_;
    FileId id_;
    void* data_;
    std::size_t bytes_;
};

/// FNV-1a of T's name as the compiler spells it: the same in every process
/// of one build, so SharedArray<int> sent is not decoded as SharedArray<float>.
template <class T>
constexpr std::uint64_t type_hash() noexcept {
    constexpr std::string_view name = __PRETTY_FUNCTION__;
    std::uint64_t h = 14695981039346656037ull;
    for (char c : name) {
        h ^= static_cast<unsigned char>(c);
        h *= 1099511628211ull;
    }
    return h;
}

}  // namespace detail

/// A fixed-size array of T in shared memory; copies share the elements.
/// See the top of this header.
template <class T>
class SharedArray {
    static_assert(std::is_object_v<T> && !std::is_const_v<T> && !std::is_volatile_v<T> &&
                      std::is_trivially_copyable_v<T>,
                  "crew::SharedArray<T>: T must be a trivially copyable, non-const object type (its bytes are "
                  "shared between processes as they are)");
    static_assert(!std::is_pointer_v<T> && !std::is_member_pointer_v<T>,
                  "crew::SharedArray<T>: T must not be a pointer: an address means nothing in another process; "
                  "store indices instead");
    static_assert(alignof(T) <= 4096, "crew::SharedArray<T>: T's alignment exceeds a page");

public:
    using value_type = T;
    using size_type = std::size_t;
    using difference_type = std::ptrdiff_t;
    using reference = T&;
    using const_reference = const T&;
    using pointer = T*;
    using const_pointer = const T*;
    using iterator = T*;
    using const_iterator = const T*;

    /// Empty: size() 0, data() null; holds no memory and no descriptor.
    SharedArray() noexcept = default;

    /// `n` zero-filled elements in new shared memory, reserved now.
    /// Throws crew::ChannelError when the memory cannot be had (see the top
    /// of this header), crew::InvalidArgument when n * sizeof(T) overflows.
    explicit SharedArray(std::size_t n) {
        if (n == 0) return;
        if (n > std::numeric_limits<std::size_t>::max() / sizeof(T) ||
            n * sizeof(T) > static_cast<std::size_t>(std::numeric_limits<off_t>::max()))
            throw InvalidArgument("crew::SharedArray: " + std::to_string(n) + " elements of " +
                                  std::to_string(sizeof(T)) + " bytes do not fit in memory");
        mapping_ = detail::SharedMapping::create(n * sizeof(T));
        data_ = static_cast<T*>(mapping_->data());
        size_ = n;
    }

    /// Another handle to the same memory.
    SharedArray(const SharedArray&) noexcept = default;
    SharedArray& operator=(const SharedArray&) noexcept = default;
    /// Takes the handle; `other` is left empty.
    SharedArray(SharedArray&& other) noexcept
        : mapping_(std::move(other.mapping_)),
          data_(std::exchange(other.data_, nullptr)),
          size_(std::exchange(other.size_, 0)) {}
    SharedArray& operator=(SharedArray&& other) noexcept {
        if (this != &other) {
            mapping_ = std::move(other.mapping_);
            data_ = std::exchange(other.data_, nullptr);
            size_ = std::exchange(other.size_, 0);
        }
        return *this;
    }
    /// Lets go of this handle; the last handle in this process unmaps the
    /// memory, the last process frees it.
    ~SharedArray() = default;

    [[nodiscard]] std::size_t size() const noexcept { return size_; }
    [[nodiscard]] bool empty() const noexcept { return size_ == 0; }

    [[nodiscard]] T* data() noexcept { return data_; }
    [[nodiscard]] const T* data() const noexcept { return data_; }

    /// Element i; i < size() (unchecked, as std::vector's).
    [[nodiscard]] T& operator[](std::size_t i) noexcept { return data_[i]; }
    [[nodiscard]] const T& operator[](std::size_t i) const noexcept { return data_[i]; }

    [[nodiscard]] T* begin() noexcept { return data_; }
    [[nodiscard]] T* end() noexcept { return data_ + size_; }
    [[nodiscard]] const T* begin() const noexcept { return data_; }
    [[nodiscard]] const T* end() const noexcept { return data_ + size_; }
    [[nodiscard]] const T* cbegin() const noexcept { return data_; }
    [[nodiscard]] const T* cend() const noexcept { return data_ + size_; }

    /// The elements as a std::span (valid while this handle lives).
    [[nodiscard]] std::span<T> span() noexcept { return {data_, size_}; }
    [[nodiscard]] std::span<const T> span() const noexcept { return {data_, size_}; }

private:
    friend struct Codec<SharedArray<T>>;

    SharedArray(std::shared_ptr<detail::SharedMapping> mapping, std::size_t n) noexcept
        : mapping_(std::move(mapping)), data_(static_cast<T*>(mapping_->data())), size_(n) {}

    std::shared_ptr<detail::SharedMapping> mapping_;
    T* data_ = nullptr;
    std::size_t size_ = 0;
};

/// SharedArray<T> crosses processes as a 48-byte handle, not its elements:
/// u32 magic, u32 sizeof(T), u64 hash of T's name, u64 element count, then
/// the sender's descriptor (detail::PeerFd: pid, fd, st_dev, st_ino). An empty
/// array sends count 0 and no descriptor. Encoding pins the memory through
/// detail::current_pins when a sink is set; decoding opens and maps it (and
/// hands the mapping to detail::current_keeps when that sink is set), and
/// throws crew::CodecError when the sender no longer holds it, or when the
/// bytes are not such a handle.
template <class T>
struct Codec<SharedArray<T>> {
    static constexpr std::size_t min_encoded_size = 4 + 4 + 8 + 8 + sizeof(detail::PeerFd);
    static constexpr std::uint32_t magic = 0x41535243;  // "CRSA"
    static constexpr std::uint64_t type_id = detail::type_hash<T>();

    static void encode(Writer& w, const SharedArray<T>& a) {
        detail::PeerFd peer{};
        if (!a.empty()) {
            peer = a.mapping_->describe();
            detail::pin(a.mapping_);
        }
        const std::uint32_t head[2] = {magic, static_cast<std::uint32_t>(sizeof(T))};
        const std::uint64_t body[2] = {type_id, static_cast<std::uint64_t>(a.size())};
        w.write(head, sizeof head);
        w.write(body, sizeof body);
        w.write(&peer, sizeof peer);
    }

    static SharedArray<T> decode(Reader& r) {
        std::uint32_t head[2];
        std::uint64_t body[2];
        detail::PeerFd peer{};
        r.read(head, sizeof head);
        r.read(body, sizeof body);
        r.read(&peer, sizeof peer);
        if (head[0] != magic || head[1] != sizeof(T) || body[0] != type_id)
            throw CodecError("crew::Codec: the bytes are not a crew::SharedArray of this element type; "
                             "encode and decode must name the same SharedArray<T>");
        const std::uint64_t n = body[1];
        if (n == 0) return SharedArray<T>();
        if (n > std::numeric_limits<std::size_t>::max() / sizeof(T))
            throw CodecError("crew::Codec: a SharedArray of " + std::to_string(n) +
                             " elements cannot exist; the input is corrupt");
        const auto count = static_cast<std::size_t>(n);
        auto mapping = detail::SharedMapping::open(peer, count * sizeof(T));
        detail::keep(mapping);
        return SharedArray<T>(std::move(mapping), count);
    }
};

}  // namespace crew
