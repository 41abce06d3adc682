// crew/detail/worker_process.hpp — starting worker processes and learning
// how they ended: a handle over a worker (pidfd, pid and exit status; for a
// fork server's children, a status pipe the server writes), spawning a fresh
// copy of this program with a request handed over a private socket, and the
// fork server behind crew::Start::fork_server.
//
// Why a fork server: fork() in a process that runs threads copies whatever
// locks those threads held, and a child that takes one deadlocks. Spawn
// (fork + exec) avoids that but pays a full program start per worker. A fork
// server is one fresh copy of the program, started once per executor while
// nothing else runs in it; it forks each worker from that clean state, so a
// worker costs a fork of a small single-threaded process.
//
// The bootstrap (spawn and fork server): the parent makes a socketpair,
// writes the request (magic, a 128-bit nonce, length, text) into its end and
// closes it, and starts the copy with that socket's other end as its only
// descriptor besides 0-2 and the channel's own, and CREW_WORKER=<fd>:<nonce>
// in its environment. take_worker_request() in the copy (from crew::Session)
// serves only when that descriptor is a socket made by its own parent, of
// its own user, holding the same nonce, and never in secure-execution mode
// (setuid/setgid/capabilities). An unrelated program that inherited the
// variable gets a one-line warning on stderr and runs normally.
//
// Exit status: spawned workers are started with clone(CLONE_PIDFD) and no
// exit signal, so the program's SIGCHLD disposition (SIG_IGN auto-reaps,
// handlers that waitpid(-1)) never takes their status: it is read through
// the pidfd (waitid(P_PIDFD, __WALL)), and a kill goes through the pidfd too
// (pidfd_send_signal), so a pid the kernel reused is never signalled.
#pragma once

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <climits>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/auxv.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <crew/detail/fd_util.hpp>
#include <crew/detail/random_name.hpp>
#include <crew/errors.hpp>

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif
#ifndef P_PIDFD
#define P_PIDFD 3
#endif

namespace crew::detail {

/// The environment variable that tells a spawned copy of the program where
/// its request waits: "<fd>:<nonce>" (see take_worker_request()).
inline constexpr const char* worker_env = "CREW_WORKER";

/// Held around every fork() crew makes and around the moments when an
/// exported channel end is inheritable in this process, so that no child
/// crew starts inherits another worker's channel.
inline std::mutex& fork_mutex() {
    static std::mutex m;
    return m;
}

// ---------------------------------------------------------------------------
// pidfds
// ---------------------------------------------------------------------------

/// pidfd_open(2), moved above stdio; -1 with errno where unavailable.
inline int open_pidfd(pid_t pid) noexcept {
#if defined(SYS_pidfd_open)
    return above_stdio(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
#else
    (void)pid;
    errno = ENOSYS;
    return -1;
#endif
}

/// Sends `sig` to the process behind `pidfd` (never to a reused pid); falls
/// back to kill(pid) only where the kernel has no pidfd_send_signal.
inline void signal_process(int pidfd, pid_t pid, int sig) noexcept {
#if defined(SYS_pidfd_send_signal)
    if (pidfd >= 0) {
        if (::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0) == 0 || errno != ENOSYS) return;
    }
#endif
    if (pid > 0) ::kill(pid, sig);
}

/// poll() on one fd for up to `timeout_ms` (-1: for ever), retried on EINTR
/// with the time left; true when it polled ready (or hung up).
inline bool poll_one(int fd, short events, int timeout_ms) noexcept {
    using Clock = std::chrono::steady_clock;
    const auto until = Clock::now() + std::chrono::milliseconds(timeout_ms < 0 ? 0 : timeout_ms);
    for (;;) {
        int wait = timeout_ms;
        if (timeout_ms > 0) {
            const auto left = std::chrono::ceil<std::chrono::milliseconds>(until - Clock::now()).count();
            wait = static_cast<int>(std::clamp<long long>(left, 0, INT_MAX));
        }
        pollfd p{fd, events, 0};
        const int n = ::poll(&p, 1, wait);
        if (n > 0) return true;
        if (n == 0) return false;
        if (errno != EINTR) return true;  // let the caller's read report it
    }
}

/// A wait status (as waitpid gives it) from waitid()'s siginfo.
inline int wait_status_from(const siginfo_t& info) noexcept {
    switch (info.si_code) {
        case CLD_EXITED: return (info.si_status & 0xff) << 8;
        case CLD_KILLED: return info.si_status & 0x7f;
        case CLD_DUMPED: return (info.si_status & 0x7f) | 0x80;
        default: return 0;
    }
}

/// A worker process: how to tell it ended and how its exit status comes
/// back, and how to kill it. Move-only; destroying a handle closes its fds
/// but neither kills nor reaps: call reap() first.
///
/// Three kinds: a child of this process with a pidfd (spawn, fork: the
/// status comes from waitid(P_PIDFD)); a child of a fork server (or of a
/// reaper, see fork_worker()) that writes the wait status to `status_fd`, with
/// a pidfd for kill() when one was passed; a bare pid (old kernels: waitpid).
class WorkerProcess {
public:
    WorkerProcess() noexcept = default;
    /// A child of this process known by pid only (status_fd -1), or a
    /// process whose wait status arrives on status_fd.
    explicit WorkerProcess(pid_t pid, int status_fd = -1) noexcept : pid_(pid), status_fd_(status_fd) {}
    /// A child of this process with its pidfd (taken over).
    static WorkerProcess child(pid_t pid, int pidfd) noexcept {
        WorkerProcess w(pid);
        w.pidfd_ = pidfd;
        return w;
    }
    /// A process whose wait status arrives on `status_fd`; `pidfd` (or -1)
    /// is used to kill it. Both taken over.
    static WorkerProcess remote(pid_t pid, int pidfd, int status_fd) noexcept {
        WorkerProcess w(pid, status_fd);
        w.pidfd_ = pidfd;
        return w;
    }
    /// A grandchild whose wait status a reaper child of ours writes to
    /// `status_fd`; the reaper (`reaper_pidfd`) is killed to kill it, and
    /// reaped once the status came.
    static WorkerProcess via_reaper(pid_t pid, int reaper_pidfd, int status_fd) noexcept {
        WorkerProcess w = remote(pid, reaper_pidfd, status_fd);
        w.reap_pidfd_ = true;
        return w;
    }
    WorkerProcess(WorkerProcess&& o) noexcept
        : pid_(std::exchange(o.pid_, -1)),
          pidfd_(std::exchange(o.pidfd_, -1)),
          status_fd_(std::exchange(o.status_fd_, -1)),
          status_known_(std::exchange(o.status_known_, true)),
          reap_pidfd_(std::exchange(o.reap_pidfd_, false)) {}
    WorkerProcess& operator=(WorkerProcess&& o) noexcept {
        if (this != &o) {
            close_fds();
            pid_ = std::exchange(o.pid_, -1);
            pidfd_ = std::exchange(o.pidfd_, -1);
            status_fd_ = std::exchange(o.status_fd_, -1);
            status_known_ = std::exchange(o.status_known_, true);
            reap_pidfd_ = std::exchange(o.reap_pidfd_, false);
        }
        return *this;
    }
    WorkerProcess(const WorkerProcess&) = delete;
    WorkerProcess& operator=(const WorkerProcess&) = delete;
    ~WorkerProcess() { close_fds(); }

    [[nodiscard]] pid_t pid() const noexcept { return pid_; }
    [[nodiscard]] bool running() const noexcept { return pid_ > 0; }

    /// An fd that polls readable once the process has ended (its pidfd, or
    /// the status pipe); -1 when there is none (bare pid) or none is running.
    [[nodiscard]] int ended_fd() const noexcept { return status_fd_ >= 0 ? status_fd_ : pidfd_; }

    /// False when the last status returned could not be learnt (a bare-pid
    /// child that something else in the program reaped): it was reported as
    /// exit code 0 for want of better.
    [[nodiscard]] bool status_known() const noexcept { return status_known_; }

    /// Does not block: true, with its wait status, once the process ended
    /// (and was reaped); the handle is then empty.
    bool exited(int& status) { return wait_status(status, 0); }

    /// Waits up to `grace` for the process to end, then SIGKILLs it and
    /// waits for that; returns its wait status. The handle is then empty.
    int reap(std::chrono::milliseconds grace) {
        int status = 0;
        if (!running()) return status;
        if (wait_status(status, static_cast<int>(std::min<long long>(grace.count(), INT_MAX)))) return status;
        kill();
        // A SIGKILLed process ends at once; the bound only guards against a
        // fork server that stopped answering.
        if (!wait_status(status, 10'000)) status = SIGKILL, forget();
        return status;
    }

    /// Empties the handle without waiting: returns the pid, closes the fds.
    /// (A reaper, see via_reaper(), is not waited for here.)
    pid_t release() noexcept {
        const pid_t pid = std::exchange(pid_, -1);
        reap_pidfd_ = false;
        close_fds();
        return pid;
    }

    /// SIGKILL, through the pidfd where there is one (never a reused pid).
    void kill() const noexcept { send_signal(SIGKILL); }
    void send_signal(int sig) const noexcept {
        if (running()) signal_process(pidfd_, pid_, sig);
    }

private:
    // Up to timeout_ms for the status; true when it came.
    bool wait_status(int& status, int timeout_ms) {
        if (!running()) return false;
        status_known_ = true;
        if (status_fd_ >= 0) {
            if (!poll_one(status_fd_, POLLIN, timeout_ms)) return false;
            int got = 0;
            ssize_t r;
            while ((r = ::read(status_fd_, &got, sizeof got)) < 0 && errno == EINTR) {
            }
            // The server wrote the status; or it is gone itself, and took the
            // worker with it (the worker dies with its parent, the server).
            status = r == static_cast<ssize_t>(sizeof got) ? got : SIGKILL;
            forget();
            return true;
        }
        if (pidfd_ >= 0) {
            if (timeout_ms != 0 && !poll_one(pidfd_, POLLIN, timeout_ms)) return false;
            siginfo_t info{};
            int r;
            while ((r = ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd_), &info,
                                 WEXITED | WNOHANG | __WALL)) < 0 &&
                   errno == EINTR) {
            }
            if (r == 0 && info.si_pid == 0) return false;  // not yet
            if (r == 0) {
                status = wait_status_from(info);
            } else {  // ECHILD: reaped by someone else; nothing more to learn
                status = 0;
                status_known_ = false;
            }
            forget();
            return true;
        }
        const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
        for (;;) {
            const pid_t r = ::waitpid(pid_, &status, WNOHANG | __WALL);
            if (r == pid_ || (r < 0 && errno == ECHILD)) {
                if (r < 0) status = 0, status_known_ = false;  // reaped elsewhere
                forget();
                return true;
            }
            if (std::chrono::steady_clock::now() >= until) return false;
            std::this_thread::sleep_for(std::chrono::microseconds(200));
        }
    }
    void forget() noexcept {
        pid_ = -1;
        close_fds();
    }
    void close_fds() noexcept {
        if (status_fd_ >= 0) ::close(status_fd_);
        if (reap_pidfd_ && pidfd_ >= 0) {
            // The reaper exits once its status pipe closed (just now); it is
            // our child: reap it (ECHILD when SIG_IGN already did).
            siginfo_t info{};
            while (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd_), &info, WEXITED | __WALL) < 0 &&
                   errno == EINTR) {
            }
        }
        if (pidfd_ >= 0) ::close(pidfd_);
        status_fd_ = pidfd_ = -1;
        reap_pidfd_ = false;
    }

    pid_t pid_ = -1;
    int pidfd_ = -1;
    int status_fd_ = -1;
    bool status_known_ = true;
    bool reap_pidfd_ = false;  // pidfd_ is a reaper child of ours, to reap after the status
};

// ---------------------------------------------------------------------------
// The bootstrap: spawn_self() and take_worker_request()
// ---------------------------------------------------------------------------

/// The request's frame on the bootstrap socket: magic, nonce, length, text.
inline constexpr char bootstrap_magic[8] = {'c', 'r', 'e', 'w', 'b', 'o', 'o', 't'};
inline constexpr std::size_t bootstrap_nonce_bytes = 16;
inline constexpr std::size_t bootstrap_max_request = 64 << 10;
/// How long a spawned copy waits for its request (it was written before the
/// fork, so it is there at once unless the system is badly overloaded).
inline constexpr int bootstrap_deadline_ms = 10'000;

/// Writes all of `bytes` to a socket; false on error (errno set).
inline bool send_all(int fd, const void* bytes, std::size_t n) noexcept {
    const char* p = static_cast<const char*>(bytes);
    while (n > 0) {
        const ssize_t r = ::send(fd, p, n, MSG_NOSIGNAL);
        if (r < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        p += r;
        n -= static_cast<std::size_t>(r);
    }
    return true;
}

/// The fds a request "<what>|<handle>|<config>" hands to the new process:
/// the fork server's control fd, or the channel end's fds.
inline std::vector<int> request_fds(std::string_view request);

/// crew's channels write an exported end's fds as decimal fields of 3 or
/// more after the channel name, fields separated by ':' or ','; their other
/// fields are words or the side, 0 or 1. A fork server receives the fds
/// under new numbers, and rewrites the handle with this.
template <class OnFd>
void for_each_handle_fd(std::string_view handle, OnFd&& on_fd) {
    std::size_t at = handle.find(':');
    while (at != std::string_view::npos && at < handle.size()) {
        const std::size_t begin = at + 1;
        const std::size_t end = std::min(handle.find_first_of(":,", begin), handle.size());
        const std::string_view field = handle.substr(begin, end - begin);
        const bool digits = !field.empty() && field.size() < 10 &&
                            std::all_of(field.begin(), field.end(), [](char c) { return c >= '0' && c <= '9'; });
        if (digits && std::stoi(std::string(field)) >= 3) on_fd(begin, end, std::stoi(std::string(field)));
        at = end;
    }
}

inline std::vector<int> request_fds(std::string_view request) {
    std::vector<int> fds;
    const std::size_t first = request.find('|');
    const std::size_t second = request.rfind('|');
    if (first == std::string_view::npos || second == first) return fds;
    const std::string_view what = request.substr(0, first);
    const std::string_view handle = request.substr(first + 1, second - first - 1);
    if (what == "forkserver") {
        const bool digits = !handle.empty() && handle.size() < 10 &&
                            std::all_of(handle.begin(), handle.end(), [](char c) { return c >= '0' && c <= '9'; });
        if (digits) fds.push_back(std::stoi(std::string(handle)));
    } else {
        for_each_handle_fd(handle, [&](std::size_t, std::size_t, int fd) { fds.push_back(fd); });
    }
    return fds;
}

/// In a child between fork and exec: closes every fd not in `keep` (sorted,
/// unique). Async-signal-safe: raw syscalls only. `open_fds` lists the fds
/// open before the fork, for kernels without close_range (before 5.9).
inline void close_all_but(const std::vector<int>& keep, const std::vector<int>& open_fds) noexcept {
#if defined(SYS_close_range)
    unsigned int low = 0;
    bool ok = true;
    for (const int k : keep) {
        const auto fd = static_cast<unsigned int>(k);
        if (fd > low && ::syscall(SYS_close_range, low, fd - 1, 0) != 0) ok = false;
        low = fd + 1;
    }
    if (ok && ::syscall(SYS_close_range, low, ~0U, 0) == 0) return;
#endif
    for (const int fd : open_fds)
        if (!std::binary_search(keep.begin(), keep.end(), fd)) ::syscall(SYS_close, fd);
}

/// The fds of this process now (for close_all_but()'s fallback).
inline std::vector<int> list_open_fds() {
    std::vector<int> fds;
    if (DIR* dir = ::opendir("/proc/self/fd")) {
        while (const dirent* e = ::readdir(dir)) {
            char* end = nullptr;
            const long fd = std::strtol(e->d_name, &end, 10);
            if (end != e->d_name && *end == '\0') fds.push_back(static_cast<int>(fd));
        }
        ::closedir(dir);
    }
    return fds;
}

/// clone() with CLONE_PIDFD and no exit signal: the child's status is ours
/// alone, whatever the program does with SIGCHLD. Returns the pid (0 in the
/// child), -1 with errno where the kernel (or a seccomp filter) refuses, so
/// the caller can fall back to fork(). The child is a plain copy of the
/// calling thread, not a glibc fork: it may only make raw system calls
/// before it execs.
inline pid_t clone_with_pidfd(int& pidfd) noexcept {
    pidfd = -1;
#if defined(SYS_clone3)
    struct {
        std::uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls;
    } args{};
    args.flags = CLONE_PIDFD;
    args.pidfd = reinterpret_cast<std::uintptr_t>(&pidfd);
    args.exit_signal = 0;
    const long r = ::syscall(SYS_clone3, &args, sizeof args);
    if (r >= 0 || errno != ENOSYS) return static_cast<pid_t>(r);
#endif
#if defined(__x86_64__) || defined(__aarch64__) || defined(__i386__) || defined(__arm__) || defined(__riscv)
    // clone(flags, stack, parent_tid, ...): with CLONE_PIDFD the pidfd is
    // stored through the third argument on these architectures.
    return static_cast<pid_t>(::syscall(SYS_clone, CLONE_PIDFD, nullptr, &pidfd, nullptr, nullptr));
#else
    errno = ENOSYS;
    return -1;
#endif
}

/// Starts a fresh copy of this program (clone, then exec of /proc/self/exe)
/// that finds its request with take_worker_request(), called by crew::Session
/// at the start of main(). `make_spec()` returns the request text
/// ("<what>|<handle>|<config>"); it runs in this process before the clone
/// (it may export fds: clear FD_CLOEXEC), and `after_fork` right after it,
/// both under fork_mutex(), so no other child crew starts inherits what was
/// exported (close it in `after_fork`). The copy keeps fds 0-2, the
/// bootstrap socket and the fds the request names; every other fd is closed
/// before exec (close_range). The child only makes raw system calls before
/// exec: no allocation, whatever allocator (or sanitizer) the program uses.
/// With `die_with_thread`, the child is SIGKILLed when the calling thread
/// ends (PR_SET_PDEATHSIG acts per thread). Returns the worker's handle
/// (with its pidfd, so its exit status is ours whatever the program does
/// with SIGCHLD).
template <class MakeSpec, class AfterFork>
WorkerProcess spawn_worker(MakeSpec&& make_spec, AfterFork&& after_fork, bool die_with_thread = true,
                           bool allow_reaper = true) {
    const pid_t parent = ::getpid();
    auto fail = [](const char* what, int err) {
        throw Error(std::string("crew: cannot start a worker process (") + what + "): " + std::strerror(err));
    };
    int boot[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, boot) != 0 || !above_stdio(boot))
        fail("socketpair", errno);
    struct Closer {
        int& fd;
        ~Closer() {
            if (fd >= 0) ::close(fd);
        }
    } close_ours{boot[0]}, close_theirs{boot[1]};

    unsigned char nonce[bootstrap_nonce_bytes];
    random_bytes(nonce, sizeof nonce, "the spawn bootstrap's nonce");

    std::lock_guard lock(fork_mutex());
    const std::string request = make_spec();
    if (request.size() > bootstrap_max_request) {
        after_fork();
        throw Error("crew: a worker's start request is " + std::to_string(request.size()) + " bytes, more than " +
                    std::to_string(bootstrap_max_request));
    }
    // The whole request goes into the socket now: the copy reads it after
    // exec, and this side needs no more than closing its end.
    {
        std::string frame(bootstrap_magic, sizeof bootstrap_magic);
        frame.append(reinterpret_cast<const char*>(nonce), sizeof nonce);
        const auto length = static_cast<std::uint32_t>(request.size());
        for (int i = 0; i < 4; ++i) frame += static_cast<char>((length >> (8 * i)) & 0xff);
        frame += request;
        if (!send_all(boot[0], frame.data(), frame.size())) {
            const int err = errno;
            after_fork();
            fail("writing the request", err);
        }
        ::close(boot[0]);
        boot[0] = -1;
    }

    // Everything the child needs is built here: it must not allocate.
    const std::string entry =
        std::string(worker_env) + "=" + std::to_string(boot[1]) + ":" + to_hex(nonce, sizeof nonce);
    std::vector<char*> env;
    const std::size_t env_name = std::strlen(worker_env);
    for (char** e = environ; e != nullptr && *e != nullptr; ++e)
        if (std::strncmp(*e, worker_env, env_name) != 0 || (*e)[env_name] != '=') env.push_back(*e);
    env.push_back(const_cast<char*>(entry.c_str()));
    env.push_back(nullptr);
    char arg0[] = "crew-worker";
    char* argv[] = {arg0, nullptr};
    // The program is exec'd through an fd this process opened on
    // /proc/self/exe rather than by that name: the kernel gives the same file,
    // but under valgrind (or another tool that runs the program in a virtual
    // machine, such as qemu-user) /proc/self/exe names the tool, while
    // opening it gives the program. O_CLOEXEC: the path still resolves at
    // exec, and the fd does not outlive it.
    const int exe = above_stdio(::open("/proc/self/exe", O_PATH | O_CLOEXEC));
    char exe_path[32] = "/proc/self/exe";
    if (exe >= 0) std::snprintf(exe_path, sizeof exe_path, "/proc/self/fd/%d", exe);
    std::vector<int> keep = request_fds(request);
    for (int fd : {0, 1, 2, boot[1], exe})
        if (fd >= 0) keep.push_back(fd);
    std::sort(keep.begin(), keep.end());
    keep.erase(std::unique(keep.begin(), keep.end()), keep.end());
    std::vector<int> open_fds;
#if !defined(SYS_close_range)
    open_fds = list_open_fds();
#endif
    const int child_boot = boot[1];
    // The exit status: exec gives the new program SIGCHLD as its exit
    // signal, so where the program ignores SIGCHLD (the kernel discards the
    // status) or handles it (a handler may waitpid(-1)), a reaper child sits
    // in between, as in fork_worker().
    struct sigaction chld {};
    ::sigaction(SIGCHLD, nullptr, &chld);
    const bool reaper = allow_reaper && (chld.sa_handler != SIG_DFL || (chld.sa_flags & SA_NOCLDWAIT) != 0);
    int status[2] = {-1, -1};
    if (reaper && (::pipe2(status, O_CLOEXEC) != 0 || !above_stdio(status))) {
        const int err = errno;
        if (exe >= 0) ::close(exe);
        after_fork();
        fail("pipe", err);
    }

    std::fflush(nullptr);  // else the child could flush our buffered output again
    int pidfd = -1;
    pid_t pid = clone_with_pidfd(pidfd);
    bool cloned = pid >= 0;
    if (!cloned) pid = ::fork();  // no clone with pidfd here: an old kernel or a seccomp filter
    if (pid == 0) {
        // Raw system calls only (see clone_with_pidfd()).
        if (die_with_thread) ::syscall(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
        // The check closes the race with a parent that died before prctl.
        if (::syscall(SYS_getppid) != parent) ::syscall(SYS_exit_group, 0);
        if (reaper) {
            ::syscall(SYS_close, status[0]);
            // SIGCHLD to its default here (an all-zero kernel sigaction is
            // SIG_DFL, no flags, empty mask, on every architecture).
            unsigned long dfl[4] = {0, 0, 0, 0};
            ::syscall(SYS_rt_sigaction, SIGCHLD, dfl, nullptr, sizeof(unsigned long));
            const long self = ::syscall(SYS_getpid);
            const long worker = ::syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);  // a plain fork
            if (worker == 0) {
                ::syscall(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
                if (::syscall(SYS_getppid) != self) ::syscall(SYS_exit_group, 0);
                close_all_but(keep, open_fds);
                ::syscall(SYS_fcntl, child_boot, F_SETFD, 0);
                ::syscall(SYS_execve, exe_path, argv, env.data());
                ::syscall(SYS_exit_group, 127);
            }
            std::int32_t value = worker > 0 ? static_cast<std::int32_t>(worker) : -errno;
            while (::syscall(SYS_write, status[1], &value, sizeof value) < 0 && errno == EINTR) {
            }
            if (worker > 0) {
                int st = 0;
                while (::syscall(SYS_wait4, worker, &st, 0, nullptr) < 0 && errno == EINTR) {
                }
                value = st;
                while (::syscall(SYS_write, status[1], &value, sizeof value) < 0 && errno == EINTR) {
                }
                // Stay until the parent closed its end (POLLERR here), so
                // that our pid, which it signals, is not reused meanwhile.
                pollfd p{status[1], 0, 0};
                while (::syscall(SYS_ppoll, &p, 1, nullptr, nullptr, sizeof(unsigned long)) < 0 && errno == EINTR) {
                }
            }
            ::syscall(SYS_exit_group, 0);
        }
        close_all_but(keep, open_fds);
        ::syscall(SYS_fcntl, child_boot, F_SETFD, 0);  // the one fd this exec adds
        ::syscall(SYS_execve, exe_path, argv, env.data());
        ::syscall(SYS_exit_group, 127);
    }
    const int err = errno;
    if (exe >= 0) ::close(exe);
    after_fork();
    if (pid < 0) {
        if (reaper) ::close(status[0]), ::close(status[1]);
        fail("fork", err);
    }
    if (!cloned) pidfd = open_pidfd(pid);  // safe: our unreaped child
    else pidfd = above_stdio(pidfd);
    if (reaper) {
        ::close(status[1]);
        std::int32_t worker = 0;
        ssize_t r;
        while ((r = ::read(status[0], &worker, sizeof worker)) < 0 && errno == EINTR) {
        }
        if (r != static_cast<ssize_t>(sizeof worker) || worker <= 0) {
            WorkerProcess gone = WorkerProcess::via_reaper(pid, pidfd, status[0]);  // reaps the reaper
            throw Error(std::string("crew: cannot start a worker process (fork in crew's reaper): ") +
                        (worker < 0 ? std::strerror(-worker) : "the reaper is gone"));
        }
        return WorkerProcess::via_reaper(static_cast<pid_t>(worker), pidfd, status[0]);
    }
    if (pidfd < 0) return WorkerProcess(pid);
    return WorkerProcess::child(pid, pidfd);
}

/// As spawn_worker(), returning the bare pid (the pidfd is closed): for
/// callers that wait with waitpid(pid, __WALL). No reaper (the pid must be
/// our child), so where the program ignores SIGCHLD the exit status is
/// lost. Prefer spawn_worker().
template <class MakeSpec, class AfterFork>
pid_t spawn_self(MakeSpec&& make_spec, AfterFork&& after_fork, bool die_with_thread = true) {
    return spawn_worker(std::forward<MakeSpec>(make_spec), std::forward<AfterFork>(after_fork), die_with_thread,
                        false)
        .release();
}

/// The parent of process `pid` (from /proc/<pid>/stat), or -1.
inline pid_t parent_of(pid_t pid) noexcept {
    char path[32];
    std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
    const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    char buf[512];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf - 1)) < 0 && errno == EINTR) {
    }
    ::close(fd);
    if (n <= 0) return -1;
    buf[n] = '\0';
    // "pid (comm) S ppid ...": comm may hold spaces and parentheses.
    const char* close = std::strrchr(buf, ')');
    int ppid = -1;
    if (close == nullptr || std::sscanf(close + 1, " %*c %d", &ppid) != 1) return -1;
    return static_cast<pid_t>(ppid);
}

/// In a process crew::Session runs, before main() goes on: the request this
/// process's parent wrote for it when it started it as a worker or fork
/// server, or nullopt when it was not started so (run normally).
///
/// CREW_WORKER is removed from the environment first (it is not for this
/// process's own children). Refused with a line on stderr, and nullopt:
/// secure-execution mode (setuid, setgid, file capabilities: an environment
/// variable must never make such a program run code), and a variable whose
/// descriptor is not a socket made by this process's parent for this user
/// (an unrelated program inherited it). A request from the parent that does
/// not check out (nonce, framing, 10 s without it) is a message on stderr
/// and _exit(126). A worker whose parent died before it read the request
/// exits quietly.
inline std::optional<std::string> take_worker_request() {
    const char* value = std::getenv(worker_env);
    if (value == nullptr) return std::nullopt;
    const std::string text(value);
    ::unsetenv(worker_env);
    auto ignore = [&](const char* why) -> std::optional<std::string> {
        std::fprintf(stderr, "crew: ignoring CREW_WORKER=%s: %s; this program runs normally\n", text.c_str(), why);
        return std::nullopt;
    };
    if (::getauxval(AT_SECURE) != 0)
        return ignore("this program runs in secure-execution mode (setuid, setgid or capabilities), where crew "
                      "never starts a worker");

    // "<fd>:<32 hex digits>"
    const std::size_t colon = text.find(':');
    int fd = -1;
    {
        char* end = nullptr;
        errno = 0;
        const long n = std::strtol(text.c_str(), &end, 10);
        if (colon == std::string::npos || colon == 0 || end != text.c_str() + colon || errno != 0 || n < 3 ||
            n > INT_MAX || text.size() != colon + 1 + 2 * bootstrap_nonce_bytes ||
            !std::all_of(text.begin() + static_cast<std::ptrdiff_t>(colon) + 1, text.end(),
                         [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }))
            return ignore("it is not \"<fd>:<nonce>\" as crew's parent process writes it");
        fd = static_cast<int>(n);
    }
    struct stat st {};
    int domain = 0;
    socklen_t len = sizeof domain;
    ucred peer{};
    socklen_t peer_len = sizeof peer;
    if (::fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode) ||
        ::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0 || domain != AF_UNIX ||
        ::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &peer_len) != 0 || peer.uid != ::getuid())
        return ignore("its descriptor is not a socket from a process of this user");
    // The socket's maker: our parent, or (where crew put a reaper in between,
    // see spawn_worker()) our parent's parent.
    const pid_t parent = ::getppid();
    const bool from_parent = peer.pid == parent || (peer.pid > 1 && peer.pid == parent_of(parent));
    // The header was written before we were started: it is there now, or
    // (from our parent) soon. Peeked, so a stranger's socket is left as it is.
    constexpr std::size_t header_bytes = sizeof bootstrap_magic + bootstrap_nonce_bytes + 4;
    char header[header_bytes];
    ssize_t peeked = 0;
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(bootstrap_deadline_ms);
    for (;;) {
        peeked = ::recv(fd, header, sizeof header, MSG_PEEK | MSG_DONTWAIT);
        if (peeked == static_cast<ssize_t>(sizeof header) || peeked == 0) break;
        if (peeked < 0 && errno != EINTR && errno != EAGAIN) break;
        const auto left = std::chrono::ceil<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
        if (!from_parent || left.count() <= 0) break;
        (void)poll_one(fd, POLLIN, static_cast<int>(std::min<long long>(left.count(), 50)));
    }
    const bool ours = peeked == static_cast<ssize_t>(sizeof header) &&
                      std::memcmp(header, bootstrap_magic, sizeof bootstrap_magic) == 0 &&
                      to_hex(reinterpret_cast<const unsigned char*>(header) + sizeof bootstrap_magic,
                             bootstrap_nonce_bytes) == text.substr(colon + 1);
    auto malformed = [&](const std::string& why) {
        std::fprintf(stderr,
                     "crew: this process was started as a crew worker by its parent (pid %d), but its start "
                     "request %s; exiting\n",
                     static_cast<int>(parent), why.c_str());
        ::_exit(126);
    };
    if (!ours) {
        if (!from_parent) return ignore("its descriptor is not a connection from this process's parent");
        if (peeked < static_cast<ssize_t>(sizeof header))
            malformed(peeked < 0 ? std::string("could not be read: ") + std::strerror(errno)
                                 : "did not arrive within " + std::to_string(bootstrap_deadline_ms / 1000) + " s");
        malformed("does not carry crew's magic and the nonce of CREW_WORKER");
    }
    // Ours (the 128-bit nonce matches), but made by a process that is no
    // longer our parent: it died before we started and we were re-parented.
    // A crew worker exits with its parent; it never runs main().
    if (!from_parent) ::_exit(0);

    std::uint32_t length = 0;
    for (std::size_t i = 0; i < 4; ++i)
        length |= std::uint32_t{static_cast<unsigned char>(header[header_bytes - 4 + i])} << (8 * i);
    if (length > bootstrap_max_request) malformed("claims " + std::to_string(length) + " bytes");
    const std::size_t want = header_bytes + length;
    std::string frame;
    while (frame.size() < want) {
        const auto left = std::chrono::ceil<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
        if (left.count() <= 0 || !poll_one(fd, POLLIN, static_cast<int>(left.count())))
            malformed("did not arrive within " + std::to_string(bootstrap_deadline_ms / 1000) + " s");
        char buf[4096];
        const ssize_t n = ::recv(fd, buf, std::min(sizeof buf, want - frame.size()), MSG_DONTWAIT);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (n < 0) malformed(std::string("could not be read: ") + std::strerror(errno));
        if (n == 0) malformed("is cut short (" + std::to_string(frame.size()) + " of " + std::to_string(want) + " bytes)");
        frame.append(buf, static_cast<std::size_t>(n));
    }
    ::close(fd);
    return frame.substr(sizeof bootstrap_magic + bootstrap_nonce_bytes + 4);
}

// ---------------------------------------------------------------------------
// Start::fork: fork_worker()
// ---------------------------------------------------------------------------

/// Forks a worker that runs `child_main()` (which must not return) in a
/// copy of this process, and returns its handle. The child dies with the
/// calling thread (PR_SET_PDEATHSIG). Under fork_mutex().
///
/// Exit status whatever the program does with SIGCHLD: fork() gives the
/// child SIGCHLD as its exit signal, so SIG_IGN (or SA_NOCLDWAIT) makes the
/// kernel discard its status, and a handler that calls waitpid(-1) takes it.
/// With SIGCHLD at its default the child is watched through a pidfd. Else a
/// small reaper process is forked in between: it sets SIGCHLD to default,
/// forks the worker, and writes the worker's pid and then its wait status to
/// a pipe (as a fork server does); the worker gets the program's SIGCHLD
/// disposition back. The reaper stays until this process closed the pipe, so
/// its pid (signalled through a pidfd) is never reused while we hold it.
template <class ChildMain>
WorkerProcess fork_worker(ChildMain&& child_main) {
    const pid_t parent = ::getpid();
    struct sigaction chld {};
    ::sigaction(SIGCHLD, nullptr, &chld);
    const bool status_at_risk = chld.sa_handler != SIG_DFL || (chld.sa_flags & SA_NOCLDWAIT) != 0;
    std::lock_guard lock(fork_mutex());
    if (!status_at_risk) {
        std::fflush(nullptr);  // else the child could flush our buffered output again
        const pid_t pid = ::fork();
        if (pid < 0) throw Error(std::string("crew: fork() failed: ") + std::strerror(errno));
        if (pid == 0) {
            ::prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (::getppid() != parent) ::_exit(0);  // the parent died before prctl
            child_main();
            ::_exit(126);
        }
        const int pidfd = open_pidfd(pid);  // safe: our unreaped child
        return pidfd < 0 ? WorkerProcess(pid) : WorkerProcess::child(pid, pidfd);
    }
    int status[2];
    if (::pipe2(status, O_CLOEXEC) != 0 || !above_stdio(status))
        throw Error(std::string("crew: cannot start a worker (pipe): ") + std::strerror(errno));
    std::fflush(nullptr);
    const pid_t reaper = ::fork();
    if (reaper < 0) {
        const int err = errno;
        ::close(status[0]);
        ::close(status[1]);
        throw Error(std::string("crew: fork() failed: ") + std::strerror(err));
    }
    if (reaper == 0) {
        ::close(status[0]);
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (::getppid() != parent) ::_exit(0);
        struct sigaction dfl {};
        dfl.sa_handler = SIG_DFL;
        ::sigaction(SIGCHLD, &dfl, nullptr);
        const pid_t self = ::getpid();
        const pid_t worker = ::fork();
        if (worker == 0) {
            ::sigaction(SIGCHLD, &chld, nullptr);
            ::prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (::getppid() != self) ::_exit(0);
            ::close(status[1]);
            child_main();
            ::_exit(126);
        }
        auto put = [&](std::int32_t v) {
            while (::write(status[1], &v, sizeof v) < 0 && errno == EINTR) {
            }
        };
        put(worker > 0 ? static_cast<std::int32_t>(worker) : -errno);
        int st = 0;
        if (worker > 0) {
            while (::waitpid(worker, &st, 0) < 0 && errno == EINTR) {
            }
            put(static_cast<std::int32_t>(st));
            // Until the parent closed its end (POLLERR on ours): our pid must
            // not be reused while it may signal it.
            pollfd p{status[1], 0, 0};
            while (::poll(&p, 1, -1) < 0 && errno == EINTR) {
            }
        }
        ::_exit(0);
    }
    ::close(status[1]);
    const int reaper_fd = open_pidfd(reaper);
    std::int32_t worker = 0;
    ssize_t r;
    while ((r = ::read(status[0], &worker, sizeof worker)) < 0 && errno == EINTR) {
    }
    if (r != static_cast<ssize_t>(sizeof worker) || worker <= 0) {
        ::close(status[0]);
        if (reaper_fd >= 0) ::close(reaper_fd);
        throw Error(std::string("crew: fork() failed in crew's reaper process: ") +
                    (worker < 0 ? std::strerror(-worker) : "it is gone"));
    }
    return WorkerProcess::via_reaper(static_cast<pid_t>(worker), reaper_fd, status[0]);
}

// ---------------------------------------------------------------------------
// The fork server
// ---------------------------------------------------------------------------

/// Most fds one request to the fork server carries: the status pipe and a
/// channel end's fds.
inline constexpr std::size_t fork_server_max_fds = 8;
inline constexpr std::size_t fork_server_max_handle = 4096;

/// The fork server's loop, in the server process (a fresh copy of the
/// program, single-threaded). Each request on `control` carries an exported
/// channel end and a status pipe; the server forks a worker that calls
/// `become_worker(handle)` (which must not return), replies with its pid and
/// a pidfd (SCM_RIGHTS), and writes its wait status to the pipe when it
/// ends. When `control` closes (the executor is done, or its process died)
/// the server kills what is left of its workers and exits.
///
/// Signals: the server ignores SIGINT (Ctrl-C reaches the whole process
/// group; the program decides what its executors do, as with CPython's
/// forkserver) and sets SIGCHLD to its default (an inherited SIG_IGN would
/// auto-reap its workers and lose their status); each worker gets the
/// program's dispositions back. Every call is retried on EINTR.
template <class BecomeWorker>
[[noreturn]] void run_fork_server(int control, BecomeWorker&& become_worker) noexcept {
    const pid_t self = ::getpid();
    struct sigaction ignore {}, dfl {}, old_int {}, old_chld {};
    ignore.sa_handler = SIG_IGN;
    dfl.sa_handler = SIG_DFL;
    ::sigaction(SIGINT, &ignore, &old_int);
    ::sigaction(SIGCHLD, &dfl, &old_chld);
    sigset_t chld, old;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    ::sigprocmask(SIG_BLOCK, &chld, &old);
    const int children_fd = above_stdio(::signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK));
    if (children_fd < 0) {
        std::fprintf(stderr, "crew: the fork server cannot watch its workers (signalfd: %s)\n", std::strerror(errno));
        ::_exit(126);
    }
    std::vector<std::pair<pid_t, int>> workers;  // pid, status pipe

    auto put_status = [](int fd, int status) {
        while (::write(fd, &status, sizeof status) < 0 && errno == EINTR) {
        }
        ::close(fd);
    };
    auto reap_ended = [&] {
        int status = 0;
        for (pid_t pid; (pid = ::waitpid(-1, &status, WNOHANG)) > 0;) {
            auto it = std::find_if(workers.begin(), workers.end(), [&](auto& w) { return w.first == pid; });
            if (it == workers.end()) continue;
            put_status(it->second, status);
            workers.erase(it);
        }
    };

    for (;;) {
        pollfd polled[2] = {{control, POLLIN, 0}, {children_fd, POLLIN, 0}};
        if (::poll(polled, 2, -1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (polled[1].revents != 0) {
            signalfd_siginfo info[8];
            while (::read(children_fd, info, sizeof info) > 0 || errno == EINTR) {
            }
            reap_ended();
        }
        if (polled[0].revents == 0) continue;

        char text[fork_server_max_handle];
        alignas(cmsghdr) char ancillary[CMSG_SPACE(sizeof(int) * fork_server_max_fds)];
        iovec io{text, sizeof text};
        msghdr msg{};
        msg.msg_iov = &io;
        msg.msg_iovlen = 1;
        msg.msg_control = ancillary;
        msg.msg_controllen = sizeof ancillary;
        const ssize_t n = ::recvmsg(control, &msg, MSG_CMSG_CLOEXEC);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (n <= 0) break;  // the executor is gone
        std::vector<int> fds;
        for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
            const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (std::size_t i = 0; i < count; ++i) {
                int fd;
                std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
                fds.push_back(fd);
            }
        }
        // Received fds land on the lowest free numbers: never leave a
        // channel on 0-2 (a program started with them closed).
        for (int& fd : fds) fd = above_stdio(fd);
        // Rewrite the handle with the fds as numbered here, in order.
        std::string handle(text, static_cast<std::size_t>(n));
        std::string rewritten;
        std::size_t copied = 0, next_fd = 1;  // fds[0] is the status pipe
        bool well_formed = !fds.empty() && (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) == 0 &&
                           std::find(fds.begin(), fds.end(), -1) == fds.end();
        for_each_handle_fd(handle, [&](std::size_t begin, std::size_t end, int) {
            if (next_fd >= fds.size()) {
                well_formed = false;
                return;
            }
            rewritten.append(handle, copied, begin - copied);
            rewritten += std::to_string(fds[next_fd++]);
            copied = end;
        });
        rewritten.append(handle, copied);
        well_formed = well_formed && next_fd == fds.size();

        std::int32_t reply = -EINVAL;
        int pidfd = -1;
        if (well_formed) {
            const pid_t pid = ::fork();
            if (pid == 0) {
                ::sigaction(SIGINT, &old_int, nullptr);
                ::sigaction(SIGCHLD, &old_chld, nullptr);
                ::sigprocmask(SIG_SETMASK, &old, nullptr);
                ::close(children_fd);
                ::close(control);
                ::close(fds[0]);
                for (auto& w : workers) ::close(w.second);
                ::prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (::getppid() != self) ::_exit(0);
                become_worker(std::string_view(rewritten));
                ::_exit(126);
            }
            reply = pid > 0 ? static_cast<std::int32_t>(pid) : -errno;
            if (pid > 0) {
                workers.emplace_back(pid, fds[0]);
                pidfd = open_pidfd(pid);  // safe: our unreaped child
            }
        }
        for (std::size_t i = (reply > 0 ? 1 : 0); i < fds.size(); ++i)
            if (fds[i] >= 0) ::close(fds[i]);
        // The reply: the pid, and the worker's pidfd when the kernel has them.
        iovec out{&reply, sizeof reply};
        alignas(cmsghdr) char reply_ancillary[CMSG_SPACE(sizeof(int))] = {};
        msghdr rmsg{};
        rmsg.msg_iov = &out;
        rmsg.msg_iovlen = 1;
        if (pidfd >= 0) {
            rmsg.msg_control = reply_ancillary;
            rmsg.msg_controllen = sizeof reply_ancillary;
            cmsghdr* c = CMSG_FIRSTHDR(&rmsg);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(sizeof(int));
            std::memcpy(CMSG_DATA(c), &pidfd, sizeof pidfd);
        }
        while (::sendmsg(control, &rmsg, MSG_NOSIGNAL) < 0 && errno == EINTR) {
        }
        if (pidfd >= 0) ::close(pidfd);
    }
    for (auto& w : workers) ::kill(w.first, SIGKILL);  // our unreaped children: no reuse
    while (!workers.empty()) {
        int status = 0;
        const pid_t pid = ::waitpid(-1, &status, 0);
        if (pid < 0 && errno != EINTR) break;
        auto it = std::find_if(workers.begin(), workers.end(), [&](auto& w) { return w.first == pid; });
        if (it == workers.end()) continue;
        put_status(it->second, status);
        workers.erase(it);
    }
    ::_exit(0);
}

/// The executor's side of a fork server: starts it, asks it for workers,
/// and stops it. Thread-safe. A server that is gone (killed, crashed) is
/// replaced by a new one at the next start(), transparently.
class ForkServer {
public:
    /// Starts the server: a fresh copy of the program whose request is
    /// "forkserver|<fd>|<config_text>".
    explicit ForkServer(std::string config_text) : config_(std::move(config_text)) { launch(); }
    ForkServer(const ForkServer&) = delete;
    ForkServer& operator=(const ForkServer&) = delete;

    /// Closing the control socket tells the server to end (it kills any
    /// worker still running); then it is reaped.
    ~ForkServer() { stop(std::chrono::seconds(2)); }

    /// True while the server process runs and its control socket is open.
    [[nodiscard]] bool alive() {
        std::lock_guard lock(mutex_);
        return !gone();
    }

    /// Has the server fork a worker serving `end` (a channel endpoint, which
    /// is exported and closed here: the worker owns it now). Starts a new
    /// server first when the old one is gone, and once more when it goes
    /// during the request.
    template <class Endpoint>
    WorkerProcess start(Endpoint& end) {
        std::lock_guard serve(mutex_);
        int status[2];
        if (::pipe2(status, O_CLOEXEC) != 0 || !above_stdio(status))
            throw Error(std::string("crew: cannot start a worker (pipe): ") + std::strerror(errno));
        struct Closer {
            int (&fds)[2];
            ~Closer() {
                for (int fd : fds)
                    if (fd >= 0) ::close(fd);
            }
        } closer{status};
        for (int attempt = 0;; ++attempt) {
            if (gone()) {
                stop(std::chrono::milliseconds(0));
                launch();
            }
            std::int32_t reply = 0;
            int pidfd = -1;
            bool answered = false;
            int err = 0;
            {
                std::lock_guard lock(fork_mutex());  // while `end` is inheritable
                const std::string handle = end.export_handle();
                std::vector<int> fds{status[1]};
                for_each_handle_fd(handle, [&](std::size_t, std::size_t, int fd) { fds.push_back(fd); });
                if (fds.size() > fork_server_max_fds || handle.size() > fork_server_max_handle)
                    throw Error("crew: a channel end names too many descriptors for the fork server");
                answered = send(handle, fds) && receive(reply, pidfd);
                err = errno;
                if (answered) end.close();
            }
            if (!answered) {
                // The server went (killed, crashed): it took nothing of ours
                // with it; start a new one and ask again, once.
                if (attempt == 0) {
                    stop(std::chrono::milliseconds(0));
                    continue;
                }
                throw Error(std::string("crew: the fork server did not start a worker: it is gone (") +
                            std::strerror(err) + "), and so was a new one; see stderr");
            }
            if (reply <= 0) {
                if (pidfd >= 0) ::close(pidfd);
                throw Error(std::string("crew: the fork server could not fork a worker: ") + std::strerror(-reply));
            }
            ::close(status[1]);
            status[1] = -1;
            const int read_end = std::exchange(status[0], -1);
            return WorkerProcess::remote(static_cast<pid_t>(reply), pidfd, read_end);
        }
    }

    static constexpr std::string_view name = "forkserver";

private:
    // Under mutex_ (or in the constructor).
    void launch() {
        int ends[2];
        if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ends) != 0 || !above_stdio(ends))
            throw Error(std::string("crew: cannot start the fork server (socketpair): ") + std::strerror(errno));
        control_ = ends[0];
        const int theirs = ends[1];
        try {
            // Not tied to this thread: the server outlives the thread that
            // made the executor, and ends when the control socket closes.
            server_ = spawn_worker(
                [&] {
                    ::fcntl(theirs, F_SETFD, 0);  // inherited across exec by the server
                    return std::string(name) + "|" + std::to_string(theirs) + "|" + config_;
                },
                [&] { ::close(theirs); }, false);
        } catch (...) {
            ::close(control_);
            control_ = -1;
            throw;
        }
    }

    void stop(std::chrono::milliseconds grace) noexcept {
        if (control_ >= 0) ::close(control_);
        control_ = -1;
        (void)server_.reap(grace);
    }

    [[nodiscard]] bool gone() const noexcept {
        if (control_ < 0 || !server_.running()) return true;
        pollfd p[2] = {{control_, 0, 0}, {server_.ended_fd(), POLLIN, 0}};
        const int n = server_.ended_fd() >= 0 ? 2 : 1;
        int r;
        while ((r = ::poll(p, static_cast<nfds_t>(n), 0)) < 0 && errno == EINTR) {
        }
        return r > 0 && ((p[0].revents & (POLLHUP | POLLERR)) != 0 || (n == 2 && p[1].revents != 0));
    }

    bool send(const std::string& handle, const std::vector<int>& fds) {
        iovec io{const_cast<char*>(handle.data()), handle.size()};
        alignas(cmsghdr) char ancillary[CMSG_SPACE(sizeof(int) * fork_server_max_fds)] = {};
        msghdr msg{};
        msg.msg_iov = &io;
        msg.msg_iovlen = 1;
        msg.msg_control = ancillary;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
        cmsghdr* c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
        std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
        for (;;) {
            if (::sendmsg(control_, &msg, MSG_NOSIGNAL) >= 0) return true;
            if (errno != EINTR) return false;
        }
    }

    // The reply: a pid (or -errno), and the worker's pidfd when it came.
    bool receive(std::int32_t& reply, int& pidfd) {
        iovec io{&reply, sizeof reply};
        alignas(cmsghdr) char ancillary[CMSG_SPACE(sizeof(int))] = {};
        msghdr msg{};
        msg.msg_iov = &io;
        msg.msg_iovlen = 1;
        msg.msg_control = ancillary;
        msg.msg_controllen = sizeof ancillary;
        ssize_t n;
        while ((n = ::recvmsg(control_, &msg, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR) {
        }
        if (n != static_cast<ssize_t>(sizeof reply)) {
            if (n >= 0) errno = EPIPE;
            return false;
        }
        for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c))
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS && c->cmsg_len >= CMSG_LEN(sizeof(int)))
                std::memcpy(&pidfd, CMSG_DATA(c), sizeof pidfd);
        pidfd = above_stdio(pidfd);
        return true;
    }

    std::mutex mutex_;
    std::string config_;
    int control_ = -1;
    WorkerProcess server_;
};

}  // namespace crew::detail
