// Helpers for the channel tests, once: a forked Child with a deadline, a
// Latch, message patterns, and chan::Traits<C>, what differs per channel (an
// fd to poll or not, the unit it cuts messages into, what it holds in
// flight, how a peer that exited without closing is reported, how its
// exported handle names fds). Used by tests/channel_suite.hpp and the
// channel-specific tests.
//
// Children made with chan::Child always end with _exit(), never by returning
// into Catch; one that a failed REQUIRE leaves behind is killed and reaped.
#pragma once

#include <crew/ipc/message_queue.hpp>
#include <crew/ipc/pipe.hpp>
#include <crew/ipc/shared_memory.hpp>
#include <crew/ipc/socket.hpp>
#include <crew/sync/mutex.hpp>
#include <crew/sync/semaphore.hpp>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "catch.hpp"

namespace chan {

using crew::ChannelError;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// ---- helpers, once --------------------------------------------------------

/// A forked child running `body` (its return value is the exit code; an
/// exception is 98); killed and reaped on destruction if the test did not
/// wait for it.
class Child {
public:
    template <class F>
    explicit Child(F&& body) {
        pid_ = ::fork();
        if (pid_ == 0) {
            int code = 97;
            try {
                code = body();
            } catch (...) {
                code = 98;
            }
            ::_exit(code);
        }
        REQUIRE(pid_ > 0);
    }
    Child(const Child&) = delete;
    Child& operator=(const Child&) = delete;
    ~Child() {
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            (void)wait();
        }
    }

    [[nodiscard]] pid_t pid() const { return pid_; }

    /// SIGSTOP, then wait (up to `limit`) until the child is stopped. kill()
    /// returns before the stop takes effect, and a child inside a send that
    /// never has to wait for room (the reader drains as fast) notices the
    /// signal only when that call ends, having sent everything.
    bool stop(std::chrono::seconds limit = 30s) {
        if (::kill(pid_, SIGSTOP) != 0) return false;
        const auto until = Clock::now() + limit;
        for (;;) {
            siginfo_t info{};
            const int r = ::waitid(P_PID, static_cast<id_t>(pid_), &info, WSTOPPED | WNOHANG);
            if (r == 0 && info.si_pid == pid_) return true;
            if ((r == -1 && errno != EINTR) || Clock::now() > until) return false;
            std::this_thread::sleep_for(1ms);  // polling the child, not ordering events
        }
    }

    /// Exit code, or 128 + signal number. A child still running after
    /// `limit` is killed (so a deadlocked child fails the test, not CI).
    int wait(std::chrono::seconds limit = 60s) {
        const auto until = Clock::now() + limit;
        int status = 0;
        for (;;) {
            const pid_t r = ::waitpid(pid_, &status, WNOHANG);
            if (r == pid_) break;
            if (r == -1 && errno != EINTR) {
                pid_ = -1;
                return -1;
            }
            if (Clock::now() > until) {
                ::kill(pid_, SIGKILL);
                while (::waitpid(pid_, &status, 0) == -1 && errno == EINTR) {
                }
                pid_ = -1;
                FAIL("a child ran past its deadline and was killed");
            }
            std::this_thread::sleep_for(1ms);  // polling the child, not ordering events
        }
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }

private:
    pid_t pid_ = -1;
};

/// A one-way "I am ready" signal from a child to the parent (bounded wait).
class Latch {
public:
    Latch() { REQUIRE(::pipe2(fds_, O_CLOEXEC) == 0); }
    Latch(const Latch&) = delete;
    Latch& operator=(const Latch&) = delete;
    ~Latch() {
        for (int fd : fds_)
            if (fd >= 0) ::close(fd);
    }
    void open() const {
        char c = 1;
        (void)!::write(fds_[1], &c, 1);
    }
    /// True once opened; false after `limit`.
    [[nodiscard]] bool wait(std::chrono::milliseconds limit = 30s) const {
        pollfd p{fds_[0], POLLIN, 0};
        int r;
        while ((r = ::poll(&p, 1, static_cast<int>(limit.count()))) == -1 && errno == EINTR) {
        }
        if (r != 1) return false;
        char c;
        return ::read(fds_[0], &c, 1) == 1;
    }

private:
    int fds_[2] = {-1, -1};
};

/// Bytes that differ between messages and between 4 KiB blocks of one message
/// (so a dropped, repeated or reordered block shows), cheap to make at 256 MiB.
inline std::vector<std::byte> pattern(std::size_t n, std::uint64_t seed) {
    std::vector<std::byte> v(n);
    std::array<std::uint64_t, 8192> block{};  // 64 KiB
    std::uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    for (auto& w : block) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        w = x;
    }
    for (std::size_t off = 0; off < n; off += sizeof block)
        std::memcpy(v.data() + off, block.data(), std::min(sizeof block, n - off));
    for (std::size_t off = 0; off + 8 <= n; off += 4096) {
        std::uint64_t stamp = off ^ seed;
        std::memcpy(v.data() + off, &stamp, 8);
    }
    if (n > 0 && n % 4096 != 0) v[n - 1] = static_cast<std::byte>(seed);  // the tail differs too
    return v;
}

inline bool same_bytes(const std::vector<std::byte>& a, const std::vector<std::byte>& b) {
    return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size()) == 0);
}

inline bool contains(const std::string& haystack, std::string_view needle) {
    return haystack.find(needle) != std::string::npos;
}

inline bool cloexec(int fd) { return (::fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0; }

inline bool poll_readable(int fd, int timeout_ms) {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, timeout_ms) == 1;
}

inline bool sigpipe_pending() {
    sigset_t s;
    sigemptyset(&s);
    sigpending(&s);
    return sigismember(&s, SIGPIPE) == 1;
}

inline bool sigpipe_blocked() {
    sigset_t s;
    pthread_sigmask(SIG_BLOCK, nullptr, &s);
    return sigismember(&s, SIGPIPE) == 1;
}

/// The numbers in "a,b,c" (the fd list of a pipe or socket handle).
inline std::vector<int> numbers(std::string_view text) {
    std::vector<int> out;
    while (!text.empty()) {
        int n = -1;
        auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
        REQUIRE(ec == std::errc{});
        out.push_back(n);
        text.remove_prefix(static_cast<std::size_t>(end - text.data()));
        if (!text.empty()) text.remove_prefix(1);
    }
    return out;
}

// ---- what differs per channel ----------------------------------------------

/// Channels with no fd underneath (SharedMemory's forms, MessageQueue): no
/// EOF, so a peer process that is gone is noticed by the channel itself.
struct MemoryTraits {
    static constexpr bool has_fd = false;
    /// What a receive or send says when the peer exited without closing.
    static constexpr std::string_view gone = "peer process is gone";
    template <class E>
    static void bind(E& end) {
        end.bind_to_current_process();
    }
};

/// Byte-stream channels (Pipe, Socket): the kernel tells (EOF, EPIPE).
struct FdTraits {
    static constexpr bool has_fd = true;
    static constexpr std::string_view gone = "peer closed";
    template <class E>
    static void bind(E&) {}
    /// "pipe:3,4" -> {3, 4}.
    static std::vector<int> handle_fds(std::string_view text) { return numbers(text.substr(text.find(':') + 1)); }
    /// The same handle over duplicates of its fds (import takes ownership).
    static std::string duplicate(std::string_view text) {
        std::string out(text.substr(0, text.find(':') + 1));
        const auto fds = handle_fds(text);
        for (std::size_t i = 0; i < fds.size(); ++i) {
            const int fd = ::fcntl(fds[i], F_DUPFD_CLOEXEC, 0);
            REQUIRE(fd >= 0);
            out += (i > 0 ? "," : "") + std::to_string(fd);
        }
        return out;
    }
};

template <class C>
struct Traits;

template <class Sync>
struct Traits<crew::ipc::BasicSharedMemory<Sync>> : MemoryTraits {
    using C = crew::ipc::BasicSharedMemory<Sync>;
    /// The unit a channel cuts messages into.
    static constexpr std::size_t unit = C::ring_bytes;
    /// How many bytes are in flight at most (a larger message makes the
    /// sender wait for the receiver).
    template <class E>
    static std::size_t capacity(const E&) {
        return C::ring_bytes;
    }
    /// "shm:<fd>:<side>" -> {fd}.
    static std::vector<int> handle_fds(std::string_view text) {
        const auto first = text.find(':') + 1;
        return numbers(text.substr(first, text.rfind(':') - first));
    }
    static std::string duplicate(std::string_view text) {
        const int fd = ::fcntl(handle_fds(text).at(0), F_DUPFD_CLOEXEC, 0);
        REQUIRE(fd >= 0);
        return std::string(text.substr(0, text.find(':') + 1)) + std::to_string(fd) +
               std::string(text.substr(text.rfind(':')));
    }
};

template <>
struct Traits<crew::ipc::MessageQueue> : MemoryTraits {
    using C = crew::ipc::MessageQueue;
    static constexpr std::size_t unit = C::slot_bytes;
    template <class E>
    static std::size_t capacity(const E&) {
        return C::slot_bytes * C::slot_count;
    }
    static std::vector<int> handle_fds(std::string_view) { return {}; }  // names, not fds
    static std::string duplicate(std::string_view text) { return std::string(text); }
};

template <>
struct Traits<crew::ipc::Pipe> : FdTraits {
    static constexpr std::size_t unit = std::size_t{64} << 10;  // a pipe's default buffer
    template <class E>
    static std::size_t capacity(const E& end) {
        const int size = ::fcntl(end.readable_fd(), F_GETPIPE_SZ);  // both directions are enlarged alike
        REQUIRE(size > 0);
        return static_cast<std::size_t>(size);
    }
};

template <>
struct Traits<crew::ipc::Socket> : FdTraits {
    static constexpr std::size_t unit = std::size_t{64} << 10;
    template <class E>
    static std::size_t capacity(const E& end) {
        int snd = 0, rcv = 0;
        socklen_t len = sizeof snd;
        REQUIRE(::getsockopt(end.readable_fd(), SOL_SOCKET, SO_SNDBUF, &snd, &len) == 0);
        len = sizeof rcv;
        REQUIRE(::getsockopt(end.readable_fd(), SOL_SOCKET, SO_RCVBUF, &rcv, &len) == 0);
        return static_cast<std::size_t>(snd) + static_cast<std::size_t>(rcv);  // the sender's and the receiver's
    }
};

/// Echo every message back until the peer closes its end.
template <class C, class E>
int echo(E& end) {
    Traits<C>::bind(end);
    std::vector<std::byte> buf;
    for (;;) {
        try {
            end.receive_bytes(buf);
        } catch (const ChannelError&) {
            return 0;
        }
        end.send_bytes(buf);
    }
}

/// Block until the peer closes its end: 0, or 1 if a message came instead.
template <class E>
int wait_for_close(E& end) {
    std::vector<std::byte> buf;
    try {
        end.receive_bytes(buf);
    } catch (const ChannelError&) {
        return 0;
    }
    return 1;
}

/// A pair with a forked echo on the second end; the parent keeps the first.
template <class C>
struct EchoPair {
    std::pair<typename C::Endpoint, typename C::Endpoint> ends = C::pair();
    Child child{[this] {
        ends.first.close();
        return echo<C>(ends.second);
    }};
    EchoPair() { ends.second.close(); }  // the parent's copy only: the child's end stays open
    typename C::Endpoint& parent() { return ends.first; }
    /// Closes the parent's end; the echo's exit code.
    int finish() {
        ends.first.close();
        return child.wait();
    }
};

/// The exec'd child (test case "ipc channel exec child"): the handle in the
/// environment names its channel; echo on it.
constexpr const char* exec_handle_variable = "CREW_IPC_CHANNEL_TEST_HANDLE";

template <class... Cs>
[[noreturn]] void exec_child_echo(std::string_view text) {
    try {
        const std::string_view kind = text.substr(0, text.find(':'));
        ((kind == Cs::name ? [&] {
            auto end = Cs::Endpoint::import_handle(text, std::size_t{1} << 30);
            ::_exit(echo<Cs>(end));
        }()
                           : void()),
         ...);
        ::_exit(93);  // no channel of that name in the list
    } catch (...) {
        ::_exit(94);
    }
}

template <class... Cs>
struct List {};

}  // namespace chan

