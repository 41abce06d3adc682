// crew/detail/worker_process.hpp — starting worker processes and learning
// how they ended: a handle over a worker's pid and exit status (for the
// executor's own children: waitpid; for a fork server's children: a status
// pipe the server writes), spawning a fresh copy of this program, and the
// fork server behind crew::Start::fork_server.
//
// Why a fork server: fork() in a process that runs threads copies whatever
// locks those threads held, and a child that takes one deadlocks. Spawn
// (fork + exec) avoids that but pays a full program start per worker. A fork
// server is one fresh copy of the program, started once per executor while
// nothing else runs in it; it forks each worker from that clean state, so a
// worker costs a fork of a small single-threaded process.
#pragma once

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <crew/errors.hpp>

namespace crew::detail {

/// The environment variable that turns a spawned copy of the program into a
/// worker or a fork server during static initialisation.
inline constexpr const char* worker_env = "CREW_WORKER";

/// Held around every fork() crew makes and around the moments when an
/// exported channel end is inheritable in this process, so that no child
/// crew starts inherits another worker's channel.
inline std::mutex& fork_mutex() {
    static std::mutex m;
    return m;
}

/// A worker process: its pid, and where its exit status comes from. Move-only;
/// destroying a handle closes the status pipe but neither kills nor reaps:
/// call reap() first.
class WorkerProcess {
public:
    WorkerProcess() noexcept = default;
    /// A child of this process (status_fd -1), or a child of a fork server
    /// that writes its wait status to status_fd.
    explicit WorkerProcess(pid_t pid, int status_fd = -1) noexcept : pid_(pid), status_fd_(status_fd) {}
    WorkerProcess(WorkerProcess&& o) noexcept
        : pid_(std::exchange(o.pid_, -1)), status_fd_(std::exchange(o.status_fd_, -1)) {}
    WorkerProcess& operator=(WorkerProcess&& o) noexcept {
        if (this != &o) {
            close_status();
            pid_ = std::exchange(o.pid_, -1);
            status_fd_ = std::exchange(o.status_fd_, -1);
        }
        return *this;
    }
    WorkerProcess(const WorkerProcess&) = delete;
    WorkerProcess& operator=(const WorkerProcess&) = delete;
    ~WorkerProcess() { close_status(); }

    [[nodiscard]] pid_t pid() const noexcept { return pid_; }
    [[nodiscard]] bool running() const noexcept { return pid_ > 0; }

    /// Does not block: true, with its wait status, once the process ended
    /// (and was reaped); the handle is then empty.
    bool exited(int& status) { return wait_status(status, 0); }

    /// Waits up to `grace` for the process to end, then SIGKILLs it and
    /// waits for that; returns its wait status. The handle is then empty.
    int reap(std::chrono::milliseconds grace) {
        int status = 0;
        if (!running()) return status;
        const auto until = std::chrono::steady_clock::now() + grace;
        while (std::chrono::steady_clock::now() < until) {
            if (wait_status(status, 1)) return status;
        }
        kill();
        // A SIGKILLed process ends at once; the bound only guards against a
        // fork server that stopped answering.
        if (!wait_status(status, 10'000)) status = SIGKILL, forget();
        return status;
    }

    void kill() const noexcept {
        if (running()) ::kill(pid_, SIGKILL);
    }

private:
    // Up to timeout_ms for the status; true when it came.
    bool wait_status(int& status, int timeout_ms) {
        if (!running()) return false;
        if (status_fd_ < 0) {
            const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
            for (;;) {
                const pid_t r = ::waitpid(pid_, &status, WNOHANG);
                if (r == pid_ || (r < 0 && errno == ECHILD)) {
                    if (r < 0) status = 0;  // reaped elsewhere: nothing more to learn
                    forget();
                    return true;
                }
                if (std::chrono::steady_clock::now() >= until) return false;
                std::this_thread::sleep_for(std::chrono::microseconds(200));
            }
        }
        pollfd p{status_fd_, POLLIN, 0};
        int n = ::poll(&p, 1, timeout_ms);
        if (n == 0 || (n < 0 && errno == EINTR)) return false;
        int got = 0;
        const ssize_t r = n > 0 ? ::read(status_fd_, &got, sizeof got) : -1;
        // The server wrote the status; or it is gone itself, and took the
        // worker with it (the worker dies with its parent, the server).
        status = r == static_cast<ssize_t>(sizeof got) ? got : SIGKILL;
        forget();
        return true;
    }
    void forget() noexcept {
        pid_ = -1;
        close_status();
    }
    void close_status() noexcept {
        if (status_fd_ >= 0) ::close(status_fd_);
        status_fd_ = -1;
    }

    pid_t pid_ = -1;
    int status_fd_ = -1;
};

/// Starts a fresh copy of this program (fork, then exec of /proc/self/exe)
/// with CREW_WORKER set to what `make_spec()` returns; the copy turns into a
/// worker or fork server before its main() runs. `make_spec` runs in this
/// process before the fork (it may export fds: clear FD_CLOEXEC), and
/// `after_fork` right after it, both under fork_mutex(), so no other child
/// crew starts inherits what was exported (close it in `after_fork`). The
/// child only calls async-signal-safe functions before exec: no allocation,
/// whatever allocator (or sanitizer) the program uses. With
/// `die_with_thread`, the child is SIGKILLed when the calling thread ends
/// (PR_SET_PDEATHSIG acts per thread).
template <class MakeSpec, class AfterFork>
pid_t spawn_self(MakeSpec&& make_spec, AfterFork&& after_fork, bool die_with_thread = true) {
    const pid_t parent = ::getpid();
    std::lock_guard lock(fork_mutex());
    const std::string entry = std::string(worker_env) + "=" + make_spec();
    std::vector<char*> env;
    for (char** e = environ; e != nullptr && *e != nullptr; ++e)
        if (std::strncmp(*e, worker_env, std::strlen(worker_env)) != 0 || (*e)[std::strlen(worker_env)] != '=')
            env.push_back(*e);
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
    const int exe = ::open("/proc/self/exe", O_PATH | O_CLOEXEC);
    char exe_path[32] = "/proc/self/exe";
    if (exe >= 0) std::snprintf(exe_path, sizeof exe_path, "/proc/self/fd/%d", exe);
    std::fflush(nullptr);  // else the child could flush our buffered output again
    const pid_t pid = ::fork();
    if (pid == 0) {
        // The check closes the race with a parent that died before prctl.
        if (die_with_thread) ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (::getppid() != parent) ::_exit(0);
        ::execve(exe_path, argv, env.data());
        ::_exit(127);
    }
    const int err = errno;
    if (exe >= 0) ::close(exe);
    after_fork();
    if (pid < 0) throw Error(std::string("crew: fork() failed: ") + std::strerror(err));
    return pid;
}

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

/// Most fds one request to the fork server carries: the status pipe and a
/// channel end's fds.
inline constexpr std::size_t fork_server_max_fds = 8;
inline constexpr std::size_t fork_server_max_handle = 4096;

/// The fork server's loop, in the server process (a fresh copy of the
/// program, single-threaded). Each request on `control` carries an exported
/// channel end and a status pipe; the server forks a worker that calls
/// `become_worker(handle)` (which must not return), replies with its pid, and
/// writes its wait status to the pipe when it ends. When `control` closes
/// (the executor is done, or its process died) the server kills what is left
/// of its workers and exits.
template <class BecomeWorker>
[[noreturn]] void run_fork_server(int control, BecomeWorker&& become_worker) noexcept {
    const pid_t self = ::getpid();
    sigset_t chld, old;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    ::sigprocmask(SIG_BLOCK, &chld, &old);
    const int children_fd = ::signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
    if (children_fd < 0) ::_exit(126);
    std::vector<std::pair<pid_t, int>> workers;  // pid, status pipe

    auto reap_ended = [&] {
        int status = 0;
        for (pid_t pid; (pid = ::waitpid(-1, &status, WNOHANG)) > 0;) {
            auto it = std::find_if(workers.begin(), workers.end(), [&](auto& w) { return w.first == pid; });
            if (it == workers.end()) continue;
            (void)!::write(it->second, &status, sizeof status);
            ::close(it->second);
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
            while (::read(children_fd, info, sizeof info) > 0) {
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
        if (n < 0 && errno == EINTR) continue;
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
        // Rewrite the handle with the fds as numbered here, in order.
        std::string handle(text, static_cast<std::size_t>(n));
        std::string rewritten;
        std::size_t copied = 0, next_fd = 1;  // fds[0] is the status pipe
        bool well_formed = !fds.empty() && (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) == 0;
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
        if (well_formed) {
            const pid_t pid = ::fork();
            if (pid == 0) {
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
            if (pid > 0) workers.emplace_back(pid, fds[0]);
        }
        for (std::size_t i = (reply > 0 ? 1 : 0); i < fds.size(); ++i) ::close(fds[i]);
        (void)!::write(control, &reply, sizeof reply);
    }
    for (auto& w : workers) ::kill(w.first, SIGKILL);
    while (!workers.empty()) {
        int status = 0;
        const pid_t pid = ::waitpid(-1, &status, 0);
        if (pid < 0 && errno != EINTR) break;
        auto it = std::find_if(workers.begin(), workers.end(), [&](auto& w) { return w.first == pid; });
        if (it == workers.end()) continue;
        (void)!::write(it->second, &status, sizeof status);
        ::close(it->second);
        workers.erase(it);
    }
    ::_exit(0);
}

/// The executor's side of a fork server: starts it, asks it for workers,
/// and stops it. Thread-safe.
class ForkServer {
public:
    /// Starts the server: CREW_WORKER="forkserver|<fd>|<config_text>" in a
    /// fresh copy of the program.
    explicit ForkServer(const std::string& config_text) {
        int ends[2];
        if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ends) != 0)
            throw Error(std::string("crew: cannot start the fork server (socketpair): ") + std::strerror(errno));
        control_ = ends[0];
        const int theirs = ends[1];
        try {
            // Not tied to this thread: the server outlives the thread that
            // made the executor, and ends when the control socket closes.
            server_ = WorkerProcess(spawn_self(
                [&] {
                    ::fcntl(theirs, F_SETFD, 0);  // inherited across exec by the server
                    return std::string(name) + "|" + std::to_string(theirs) + "|" + config_text;
                },
                [&] { ::close(theirs); }, false));
        } catch (...) {
            ::close(control_);
            throw;
        }
    }
    ForkServer(const ForkServer&) = delete;
    ForkServer& operator=(const ForkServer&) = delete;

    /// Closing the control socket tells the server to end (it kills any
    /// worker still running); then it is reaped.
    ~ForkServer() {
        ::close(control_);
        (void)server_.reap(std::chrono::seconds(2));
    }

    /// Has the server fork a worker serving `end` (a channel endpoint, which
    /// is exported and closed here: the worker owns it now).
    template <class Endpoint>
    WorkerProcess start(Endpoint& end) {
        int status[2];
        if (::pipe2(status, O_CLOEXEC) != 0)
            throw Error(std::string("crew: cannot start a worker (pipe): ") + std::strerror(errno));
        std::int32_t reply = 0;
        {
            std::lock_guard lock(fork_mutex());  // while `end` is inheritable
            const std::string handle = [&] {
                try {
                    return end.export_handle();
                } catch (...) {
                    ::close(status[0]);
                    ::close(status[1]);
                    throw;
                }
            }();
            std::vector<int> fds{status[1]};
            for_each_handle_fd(handle, [&](std::size_t, std::size_t, int fd) { fds.push_back(fd); });
            const bool sent = fds.size() <= fork_server_max_fds && handle.size() <= fork_server_max_handle &&
                              send(handle, fds);
            const int err = errno;
            end.close();
            ::close(status[1]);
            if (!sent || ::recv(control_, &reply, sizeof reply, 0) != static_cast<ssize_t>(sizeof reply)) {
                ::close(status[0]);
                throw Error(std::string("crew: the fork server did not start a worker: ") +
                            (sent ? "it is gone" : std::strerror(err)));
            }
        }
        if (reply <= 0) {
            ::close(status[0]);
            throw Error(std::string("crew: the fork server could not fork a worker: ") + std::strerror(-reply));
        }
        return WorkerProcess(static_cast<pid_t>(reply), status[0]);
    }

    static constexpr std::string_view name = "forkserver";

private:
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

    int control_ = -1;
    WorkerProcess server_;
};

}  // namespace crew::detail
