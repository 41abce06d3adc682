// crew/detail/peer_fd.hpp — a descriptor one process holds, opened by another
// through /proc/<pid>/fd/<fd>; the "pin sink" that keeps such descriptors
// open until the peer has them, and the "keep sink" that keeps what a worker
// mapped from them for its next task.
//
// What: export_fd(fd) describes an open file of this process as a PeerFd
// (pid, fd number, st_dev, st_ino: 24 bytes, trivially copyable, so it
// travels through crew::Codec as raw bytes). open_peer_fd(p, flags) in
// another process opens the same file: a new open file description of the
// same inode, like a second open() of a named file, but with no name. It works
// between any two processes of the same user that may look at each other's
// /proc (ptrace read access: the default for a user's own processes; not
// when the sender made itself non-dumpable, e.g. a setuid program).
//
// Why not SCM_RIGHTS: only a Unix socket can carry a descriptor, and every
// channel (pipe, message queue, shared memory, socket) and every start method
// (fork, spawn, fork server, whose workers are not the parent's children)
// must work alike. Why not pidfd_getfd(): it needs ptrace *attach* rights,
// which Yama (ptrace_scope 1) refuses between siblings.
//
// Keep-alive: /proc/<pid>/fd/<fd> exists only while the sender holds fd open
// and is alive. The receiver checks st_dev/st_ino, so a number the sender
// closed and reused for another file is told apart (ESTALE), never opened
// in its place. Senders keep the file open until the receiver opened it; the
// executors do it with `current_pins` below.
//
// Thread safety: every function here may be called from any thread.
#pragma once

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <crew/detail/fd_util.hpp>
#include <crew/errors.hpp>

namespace crew::detail {

/// A list of owners that keeps what they own alive (descriptors, mappings).
using Keepers = std::vector<std::shared_ptr<const void>>;

/// The pin sink. While non-null on a thread, whatever encodes a reference to
/// a descriptor of this process (crew::Codec<crew::SharedArray<T>>) pushes an
/// owner of that descriptor here, so the descriptor stays open for as long
/// as whoever set the sink keeps the vector: until the receiving process has
/// opened it. ProcessExecutor sets it around encoding a task's call (pins
/// kept until the task finished) and, in a worker, around encoding a result
/// (kept until the next batch arrives, by when the parent has decoded every
/// result of the batch before). Null (the default): nothing is pinned, and
/// the sender must keep the value alive itself until the peer received it.
inline thread_local Keepers* current_pins = nullptr;

/// What decoding SharedArrays mapped for a worker's tasks, kept mapped from
/// one task to the next: a task handed an array the task before it had
/// finds it mapped (no open, mmap, page faults, munmap per task).
class KeptMappings {
public:
    /// A task starts decoding its arguments: what the last task received
    /// stays mapped until let_go_of_last().
    void start_task() {
        last_.swap(current_);
        current_.clear();
    }
    void add(std::shared_ptr<const void> owner) { current_.push_back(std::move(owner)); }
    /// Unmaps what the last task received and this one was not handed
    /// again: once the task has its arguments (before it runs), or sooner
    /// when an mmap for it found the address space full
    /// (Options::memory_limit). False if nothing was kept.
    bool let_go_of_last() noexcept {
        if (last_.empty()) return false;
        last_.clear();
        return true;
    }
    /// The worker is idle: nothing needs to stay mapped.
    void clear() noexcept {
        current_.clear();
        last_.clear();
    }
    [[nodiscard]] bool empty() const noexcept { return current_.empty() && last_.empty(); }

private:
    Keepers current_;  // what this task (or the last one, between tasks) received
    Keepers last_;     // what the task before received, while this one decodes
};

/// The keep sink. While non-null on a thread, whatever decodes a reference
/// to another process's descriptor (crew::Codec<crew::SharedArray<T>>) adds
/// the mapping it made here. A worker sets it around each task and clears it
/// after `keep_buffer_idle` of idleness (detail/worker_main.hpp).
inline thread_local KeptMappings* current_keeps = nullptr;

/// Keeps `owner` alive through the current pin sink, if one is set.
inline void pin(std::shared_ptr<const void> owner) {
    if (current_pins != nullptr && owner != nullptr) current_pins->push_back(std::move(owner));
}

/// Keeps `owner` mapped through the current keep sink, if one is set.
inline void keep(std::shared_ptr<const void> owner) {
    if (current_keeps != nullptr && owner != nullptr) current_keeps->add(std::move(owner));
}

/// Points a sink (`current_pins`, `current_keeps`) at `into` (null: off)
/// for its lifetime, then restores the sink's previous target (scopes nest).
template <class Sink>
class SinkScope {
public:
    SinkScope(Sink*& sink, Sink* into) noexcept : sink_(sink), previous_(sink) { sink = into; }
    SinkScope(const SinkScope&) = delete;
    SinkScope& operator=(const SinkScope&) = delete;
    ~SinkScope() { sink_ = previous_; }

private:
    Sink*& sink_;
    Sink* previous_;
};

/// Sets `current_pins` to `sink` for its lifetime (scopes nest).
class PinScope : public SinkScope<Keepers> {
public:
    explicit PinScope(Keepers& sink) noexcept : SinkScope(current_pins, &sink) {}
};

/// Sets `current_keeps` to `sink` for its lifetime (scopes nest).
class KeepScope : public SinkScope<KeptMappings> {
public:
    explicit KeepScope(KeptMappings& sink) noexcept : SinkScope(current_keeps, &sink) {}
};

/// An open file of process `pid`, as descriptor `fd` there; dev/ino name the
/// file itself (fstat), so a reused descriptor number is detected.
struct PeerFd {
    std::int32_t pid = 0;
    std::int32_t fd = -1;
    std::uint64_t dev = 0;
    std::uint64_t ino = 0;
};
static_assert(std::is_trivially_copyable_v<PeerFd> && sizeof(PeerFd) == 24,
              "PeerFd travels as raw bytes: no padding");

/// Describes `fd` of this process for another process. Throws
/// crew::ChannelError when fd is not open.
inline PeerFd export_fd(int fd) {
    struct stat st {};
    if (::fstat(fd, &st) != 0)
        throw ChannelError(std::string("crew: cannot describe descriptor ") + std::to_string(fd) +
                           " for another process: fstat failed: " + std::strerror(errno));
    return PeerFd{static_cast<std::int32_t>(::getpid()), static_cast<std::int32_t>(fd),
                  static_cast<std::uint64_t>(st.st_dev), static_cast<std::uint64_t>(st.st_ino)};
}

/// Opens the regular file `p` describes, with `flags` (O_RDWR, O_RDONLY;
/// O_CLOEXEC and O_NOCTTY are always added). Returns the new descriptor, or a
/// negative errno:
///   -ENOENT  the process has exited or no longer holds that descriptor;
///   -ESTALE  the descriptor number now names another file;
///   -EINVAL  it names something other than a regular file (never opened);
///   -EACCES / -EPERM  this process may not look into the other's /proc;
///   others   as open(2).
/// When `st` is given, it receives the opened file's fstat.
inline int open_peer_fd(const PeerFd& p, int flags, struct stat* st = nullptr) noexcept {
    if (p.pid <= 0 || p.fd < 0) return -EINVAL;
    // "/proc/" + two int32 + "/fd/" fits easily.
    char path[64];
    const int len = std::snprintf(path, sizeof path, "/proc/%d/fd/%d", static_cast<int>(p.pid), static_cast<int>(p.fd));
    if (len <= 0 || static_cast<std::size_t>(len) >= sizeof path) return -EINVAL;
    // stat() first: it follows the link without opening, so a peer that names
    // a pipe, socket or device of its own (or one of ours) is refused before
    // anything is opened. The fstat after open() closes the race with a
    // descriptor swapped in between.
    struct stat before {};
    if (::stat(path, &before) != 0) return errno == ENOENT || errno == ESRCH ? -ENOENT : -errno;
    if (static_cast<std::uint64_t>(before.st_dev) != p.dev || static_cast<std::uint64_t>(before.st_ino) != p.ino)
        return -ESTALE;
    if (!S_ISREG(before.st_mode)) return -EINVAL;
    int fd;
    do {
        fd = ::open(path, flags | O_CLOEXEC | O_NOCTTY);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) return errno == ENOENT || errno == ESRCH ? -ENOENT : -errno;
    fd = above_stdio(fd);
    if (fd < 0) return -errno;
    struct stat own {};
    if (st == nullptr) st = &own;
    if (::fstat(fd, st) != 0) {
        const int error = errno;
        ::close(fd);
        return -error;
    }
    if (static_cast<std::uint64_t>(st->st_dev) != p.dev || static_cast<std::uint64_t>(st->st_ino) != p.ino) {
        ::close(fd);
        return -ESTALE;
    }
    return fd;
}

}  // namespace crew::detail
