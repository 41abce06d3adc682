// crew/detail/peer_liveness.hpp — who owns each side of a shared-memory
// channel (crew::ipc::SharedMemory, crew::ipc::MessageQueue), whether that
// process is still alive, and how a blocked call waits for its peer.
//
// Shared memory has no EOF: when a process dies, nothing in the mapping
// changes. So each side of a channel records its process id in the shared
// control block (PeerSide), a closing side sets a flag there, and a blocked
// call sleeps at most `peer_check_interval` at a time and then asks the kernel
// whether the peer is still alive (PeerWatch, through a pidfd, which also sees
// a killed child that nobody has reaped yet, unlike kill(pid, 0)).
#pragma once

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <utility>

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#include <crew/detail/event_count.hpp>
#include <crew/detail/fd_util.hpp>
#include <crew/detail/spin.hpp>

namespace crew::detail {

// ---------------------------------------------------------------------------
// Which process an endpoint object belongs to
// ---------------------------------------------------------------------------

/// Bumped in every child right after fork(): an endpoint compares the value it
/// saw when it claimed its side with the current one, so a copy inherited by
/// fork() notices it changed hands without a getpid() syscall per message.
/// Along a line of forks the value only grows, so "equal" means "the same
/// process" for any two copies of one object.
inline std::atomic<std::uint64_t> fork_generation_value{1};

/// Counts the fork()s this process made (bumped in the parent).
inline std::atomic<std::uint64_t> forks_made_value{0};

inline void note_fork_in_child() noexcept { fork_generation_value.fetch_add(1, std::memory_order_relaxed); }
inline void note_fork_in_parent() noexcept { forks_made_value.fetch_add(1, std::memory_order_relaxed); }

/// Registers the fork handlers once per process (first call).
inline void track_forks() noexcept {
    // pthread_atfork only fails for lack of memory; then a copy inherited by
    // fork() is taken for the parent's own, which only matters for close().
    static const int registered = ::pthread_atfork(nullptr, &note_fork_in_parent, &note_fork_in_child);
    (void)registered;
}

/// The current fork generation (see above).
inline std::uint64_t fork_generation() noexcept {
    track_forks();
    return fork_generation_value.load(std::memory_order_relaxed);
}

/// How many times this process has forked since fork tracking started.
inline std::uint64_t forks_made() noexcept {
    track_forks();
    return forks_made_value.load(std::memory_order_relaxed);
}

/// Decides whether an endpoint object speaks for its side of the channel in
/// the calling process, so that close() in one process does not close the
/// channel for the process that really uses that side.
///
/// Fork copies endpoint objects into the child, and a parent typically closes
/// its copy of the child's end right after fork, as with a pipe. Unlike a
/// pipe, nothing in shared memory counts the copies. So an endpoint speaks for
/// its side (closing it tells the peer) when:
///   * this process claimed the side: used the endpoint (send/receive), or
///     called bind_to_current_process() / import_handle(); or
///   * this process created it, has not forked since, and did not export it:
///     then no other process can hold a copy.
/// Claiming is thread-safe (one thread may send while another receives).
class SideOwner {
public:
    SideOwner() noexcept = default;
    SideOwner(SideOwner&& other) noexcept { *this = std::move(other); }
    SideOwner& operator=(SideOwner&& other) noexcept {
        if (this == &other) return *this;
        claimed_.store(other.claimed_.exchange(0, std::memory_order_relaxed), std::memory_order_relaxed);
        created_ = std::exchange(other.created_, 0);
        forks_at_creation_ = std::exchange(other.forks_at_creation_, 0);
        exported_ = std::exchange(other.exported_, false);
        return *this;
    }
    SideOwner(const SideOwner&) = delete;
    SideOwner& operator=(const SideOwner&) = delete;

    /// Call in the process that makes the endpoint with pair().
    void created() noexcept {
        created_ = fork_generation();
        forks_at_creation_ = forks_made();
    }
    /// True until claim() was called in this process.
    [[nodiscard]] bool needs_claim() const noexcept {
        return claimed_.load(std::memory_order_relaxed) != fork_generation();
    }
    void claim() noexcept { claimed_.store(fork_generation(), std::memory_order_relaxed); }
    void exported() noexcept { exported_ = true; }
    /// This object lives in the process that created it with pair().
    [[nodiscard]] bool in_creator() const noexcept { return created_ != 0 && created_ == fork_generation(); }
    /// See the class comment.
    [[nodiscard]] bool speaks_for_side() const noexcept {
        if (!needs_claim()) return true;
        return in_creator() && forks_made() == forks_at_creation_ && !exported_;
    }
    void reset() noexcept { *this = SideOwner(); }

private:
    std::atomic<std::uint64_t> claimed_{0};  // fork generation of the claim; 0: never
    std::uint64_t created_ = 0;              // fork generation at pair(); 0: imported
    std::uint64_t forks_at_creation_ = 0;
    bool exported_ = false;
};

/// One side of a channel, in memory both processes map: the process using it
/// and whether it closed. Written by its own side, read by the peer.
struct alignas(64) PeerSide {
    std::atomic<std::int32_t> pid{0};     // 0: nobody yet
    std::atomic<std::uint32_t> closed{0};  // 1: the side called close()
};

static_assert(std::atomic<std::int32_t>::is_always_lock_free && std::atomic<std::uint64_t>::is_always_lock_free,
              "shared-memory channels need lock-free atomics that work between processes");

/// How often a blocked call wakes up to check that its peer process still
/// exists. Bounds how long a send or receive hangs after the peer died
/// (SIGKILL, crash); each check is one poll() on a pidfd, so an idle endpoint
/// costs ~10 wake-ups of a few microseconds per second.
inline constexpr std::chrono::milliseconds peer_check_interval{100};

/// Watches one peer process through a pidfd (Linux 5.3): readable once the
/// process has exited, zombie or not. Falls back to kill(pid, 0) plus a look
/// at /proc/<pid>/stat where pidfd_open is unavailable. Not thread-safe: use
/// one per thread of use (an endpoint keeps one for sending, one for
/// receiving).
class PeerWatch {
public:
    PeerWatch() noexcept = default;
    PeerWatch(PeerWatch&& other) noexcept
        : pid_(std::exchange(other.pid_, 0)), pidfd_(std::exchange(other.pidfd_, -1)) {}
    PeerWatch& operator=(PeerWatch&& other) noexcept {
        if (this != &other) {
            reset();
            pid_ = std::exchange(other.pid_, 0);
            pidfd_ = std::exchange(other.pidfd_, -1);
        }
        return *this;
    }
    PeerWatch(const PeerWatch&) = delete;
    PeerWatch& operator=(const PeerWatch&) = delete;
    ~PeerWatch() { reset(); }

    /// True when process `pid` has exited. A pid of 0 or of this process (a
    /// side nobody has claimed yet: pair() records its creator on both sides)
    /// tells nothing and counts as alive.
    ///
    /// A pidfd that code in this process closed behind our back (a task that
    /// ran close_range(3, ~0U)) is noticed, not taken for a death: a
    /// "readable" answer is believed only when /proc/self/fdinfo says the fd
    /// still is a pidfd of `pid`; else the pidfd is opened again.
    bool gone(pid_t pid) {
        if (pid <= 0 || pid == ::getpid()) return false;
        for (int attempt = 0; attempt < 2; ++attempt) {
            if (pid != pid_) {
                reset();
                pid_ = pid;
#if defined(SYS_pidfd_open)
                // Always close-on-exec; never on 0-2 (detail/fd_util.hpp).
                pidfd_ = above_stdio(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
                if (pidfd_ < 0 && errno == ESRCH) return true;
#endif
            }
            if (pidfd_ < 0) break;
            pollfd p{pidfd_, POLLIN, 0};
            int r;
            while ((r = ::poll(&p, 1, 0)) == -1 && errno == EINTR) {
            }
            if (r != 1) return false;
            if ((p.revents & POLLNVAL) == 0 && is_pidfd_of(pidfd_, pid)) return true;
            // Not our pidfd any more: forget the number without closing it
            // (it may be someone else's fd now) and open a new one.
            pidfd_ = -1;
            pid_ = 0;
        }
        if (::kill(pid, 0) == -1 && errno == ESRCH) return true;
        return is_zombie(pid);
    }

    /// Close the pidfd; idempotent.
    void reset() noexcept {
        if (pidfd_ >= 0) ::close(pidfd_);
        pidfd_ = -1;
        pid_ = 0;
    }

private:
    // /proc/self/fdinfo/<fd> of a pidfd has "Pid:\t<pid>" (-1 or 0 once the
    // process was reaped, on newer kernels).
    static bool is_pidfd_of(int fd, pid_t pid) noexcept {
        char path[48];
        std::snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
        std::FILE* f = std::fopen(path, "re");
        if (f == nullptr) return true;  // no /proc: believe the poll
        char line[128];
        bool found = false, match = false;
        while (std::fgets(line, sizeof line, f) != nullptr) {
            long value = 0;
            if (std::sscanf(line, "Pid: %ld", &value) == 1) {
                found = true;
                match = value == pid || value <= 0;
                break;
            }
        }
        std::fclose(f);
        return found && match;
    }

    static bool is_zombie(pid_t pid) noexcept {
        char path[32];
        std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
        std::FILE* f = std::fopen(path, "re");
        if (f == nullptr) return errno == ENOENT;
        char state = '?';
        // "pid (comm) S ...": comm may contain spaces and parentheses, so
        // take the state after the last ')'.
        char buf[512];
        const std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
        std::fclose(f);
        buf[n] = '\0';
        if (const char* close = std::strrchr(buf, ')'); close != nullptr && close[1] == ' ') state = close[2];
        return state == 'Z' || state == 'X';
    }

    pid_t pid_ = 0;
    int pidfd_ = -1;
};

// ---------------------------------------------------------------------------
// Waiting for the peer
// ---------------------------------------------------------------------------

enum class PeerWait {
    ready,        ///< the condition holds
    timeout,      ///< the deadline passed first
    peer_closed,  ///< the peer closed its side; the condition does not hold
    peer_gone,    ///< the peer process exited; the condition does not hold
};

/// Waits until `ready()` (a check of shared state that the peer makes true
/// and then announces with `signal.notify_*()`), the deadline, or the peer's
/// end. Spins for crew::detail::spin_budget first (a reply a few microseconds
/// away is caught without a sleep), then sleeps on the process-shared
/// `signal` (a wait_signal: an EventCount, or a signal of
/// crew/detail/shm_signal.hpp), waking every peer_check_interval to look at
/// the peer. A peer that
/// closed or died may still have made `ready()` true before it went, so that
/// is checked first: data it sent is never lost.
///
/// `ready()` may have side effects (e.g. take a message): it is called until
/// it first returns true, never after.
template <class Ready, wait_signal Signal>
PeerWait wait_for_peer(Ready&& ready, Signal& signal, const PeerSide& peer, PeerWatch& watch,
                       const std::chrono::steady_clock::time_point* deadline) {
    using Clock = std::chrono::steady_clock;
    if (ready()) return PeerWait::ready;
    auto ended = [&]() -> PeerWait {
        // Called with ready() false. Re-check: the peer may have written its
        // last bytes and then closed or died between our two looks.
        if (peer.closed.load(std::memory_order_acquire) != 0)
            return ready() ? PeerWait::ready : PeerWait::peer_closed;
        if (watch.gone(static_cast<pid_t>(peer.pid.load(std::memory_order_acquire))))
            return ready() ? PeerWait::ready : PeerWait::peer_gone;
        return PeerWait::timeout;  // still there
    };

    auto now = Clock::now();
    if (deadline != nullptr && *deadline <= now) {
        // A deadline in the past is a look, not a wait; it still reports a
        // peer that has ended, as a read on a pipe would report EOF.
        return ended();
    }
    std::chrono::nanoseconds budget = spin_budget;
    if (deadline != nullptr && *deadline - now < budget) budget = *deadline - now;
    if (peer.closed.load(std::memory_order_acquire) == 0 && spin_until(ready, budget, pauses_before_yield()))
        return PeerWait::ready;

    // Sleep in ticks of peer_check_interval (shorter at the deadline): a peer
    // that closes wakes us through `signal`, one that dies only shows when
    // we look.
    bool closed = false;
    auto ready_or_closed = [&] {
        if (ready()) return true;
        closed = peer.closed.load(std::memory_order_acquire) != 0;
        return closed;
    };
    for (;;) {
        auto tick = Clock::now() + peer_check_interval;
        if (deadline != nullptr && *deadline < tick) tick = *deadline;
        if (await(signal, ready_or_closed, &tick)) {
            if (!closed) return PeerWait::ready;
            return ready() ? PeerWait::ready : PeerWait::peer_closed;
        }
        const PeerWait end = ended();
        if (end != PeerWait::timeout) return end;
        if (deadline != nullptr && Clock::now() >= *deadline) return PeerWait::timeout;
    }
}

}  // namespace crew::detail
