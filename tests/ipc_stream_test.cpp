// Byte-stream channels (crew::ipc::Pipe, crew::ipc::Socket): framing, message
// sizes, peer death, timed receives that resume a partial message, handles
// across fork and exec, and no leaked fds or zombies. Every test runs over
// both channels.
//
// Children created here always end with _exit(), never by returning into
// Catch; a Child that a failed REQUIRE leaves behind is killed and reaped.

#include <crew/ipc/pipe.hpp>
#include <crew/ipc/socket.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "catch.hpp"

#include "largest_allocation.hpp"
#include "test_support.hpp"

namespace {

using crew::ChannelError;
using crew::ipc::Pipe;
using crew::ipc::Socket;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

static_assert(crew::ipc::channel<Pipe>);
static_assert(crew::ipc::channel<Socket>);
static_assert(crew::ipc::endpoint<Pipe::Endpoint>);
static_assert(!std::is_copy_constructible_v<Pipe::Endpoint>);
static_assert(!std::is_copy_assignable_v<Socket::Endpoint>);
static_assert(std::is_nothrow_move_constructible_v<Socket::Endpoint>);

bool no_unreaped_children() { return ::waitpid(-1, nullptr, WNOHANG) == -1 && errno == ECHILD; }

/// A forked child running `body` (its return value is the exit code); killed
/// and reaped on destruction if the test did not wait for it.
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

    /// Exit code, or 128 + signal number.
    int wait() {
        int status = 0;
        while (::waitpid(pid_, &status, 0) == -1 && errno == EINTR) {
        }
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }

private:
    pid_t pid_ = -1;
};

/// Echo every message back until the parent closes its end.
template <class E>
int echo(E& end) {
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

/// Block until the parent closes its end: 0, or 1 if a message came instead.
template <class E>
int wait_for_eof(E& end) {
    std::vector<std::byte> buf;
    try {
        end.receive_bytes(buf);
    } catch (const ChannelError&) {
        return 0;
    }
    return 1;
}

/// Bytes that differ between messages and between 4 KiB blocks of one message
/// (so a dropped, repeated or reordered block shows), cheap to make at 256 MiB.
std::vector<std::byte> pattern(std::size_t n, std::uint64_t seed) {
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
    return v;
}

bool same_bytes(const std::vector<std::byte>& a, const std::vector<std::byte>& b) {
    return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size()) == 0);
}

/// The fds named in an exported handle ("pipe:3,4" -> {3, 4}).
std::vector<int> handle_fds(std::string_view text) {
    std::vector<int> fds;
    text.remove_prefix(text.find(':') + 1);
    while (!text.empty()) {
        int fd = -1;
        auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), fd);
        REQUIRE(ec == std::errc{});
        fds.push_back(fd);
        text.remove_prefix(static_cast<std::size_t>(end - text.data()));
        if (!text.empty()) text.remove_prefix(1);
    }
    return fds;
}

/// The fd an endpoint writes to, for writing raw (possibly broken) frames.
template <class E>
int raw_write_fd(E& end) {
    return handle_fds(end.export_handle()).back();
}

void write_all(int fd, const void* data, std::size_t n) {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
        ssize_t w = ::write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) throw std::runtime_error("raw write failed");
        p += w;
        n -= static_cast<std::size_t>(w);
    }
}

std::array<unsigned char, 8> le_header(std::uint64_t length) {
    std::array<unsigned char, 8> h{};
    for (std::size_t i = 0; i < 8; ++i) h[i] = static_cast<unsigned char>(length >> (8 * i));
    return h;
}

bool cloexec(int fd) { return (::fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0; }

bool poll_readable(int fd, int timeout_ms) {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, timeout_ms) == 1;
}

int bytes_waiting(int fd) {
    int n = -1;
    REQUIRE(::ioctl(fd, FIONREAD, &n) == 0);
    return n;
}

bool sigpipe_pending() {
    sigset_t s;
    sigemptyset(&s);
    sigpending(&s);
    return sigismember(&s, SIGPIPE) == 1;
}

bool sigpipe_blocked() {
    sigset_t s;
    pthread_sigmask(SIG_BLOCK, nullptr, &s);
    return sigismember(&s, SIGPIPE) == 1;
}

bool contains(const std::string& haystack, std::string_view needle) {
    return haystack.find(needle) != std::string::npos;
}

}  // namespace

// ---------------------------------------------------------------------------

TEMPLATE_TEST_CASE("stream channels carry typed values to a forked echo and back", "[ipc][stream]", Pipe, Socket) {
    const std::size_t fds_before = crew_test::open_fds();
    {
        auto ends = TestType::pair();
        auto& parent = ends.first;
        Child child([&] {
            ends.first.close();
            return echo(ends.second);
        });
        ends.second.close();

        parent.send(42);
        CHECK(parent.template receive<int>() == 42);

        crew::ipc::send(parent, std::string("hello, child"));
        CHECK(crew::ipc::receive<std::string>(parent) == "hello, child");

        crew::ipc::send(parent, std::string());
        CHECK(crew::ipc::receive<std::string>(parent).empty());

        const std::vector<int> numbers{1, -2, 3, 1 << 30};
        parent.send(numbers);
        CHECK(parent.template receive<std::vector<int>>() == numbers);

        // Wrong type on the way back: the codec says so, the channel stays usable.
        parent.send(std::string("not an int"));
        CHECK_THROWS_AS(parent.template receive<int>(), crew::CodecError);
        parent.send(7);
        CHECK(parent.template receive<int>() == 7);

        parent.close();
        CHECK(child.wait() == 0);
    }
    CHECK(crew_test::open_fds() == fds_before);
    CHECK(no_unreaped_children());
}

TEMPLATE_TEST_CASE("stream channels carry messages of any size whole", "[ipc][stream]", Pipe, Socket) {
    const std::size_t fds_before = crew_test::open_fds();
    {
        auto ends = TestType::pair();
        auto& parent = ends.first;
        Child child([&] {
            ends.first.close();
            return echo(ends.second);
        });
        ends.second.close();

        const std::size_t sizes[] = {0, 1, 64 << 10, (64 << 10) + 1, 1 << 20, 256 << 20};
        std::uint64_t seed = 1;
        std::vector<std::byte> back;
        for (std::size_t size : sizes) {
            INFO("message of " << size << " bytes");
            const auto sent = pattern(size, seed++);
            parent.send_bytes(sent);
            parent.receive_bytes(back);
            REQUIRE(back.size() == size);
            REQUIRE(same_bytes(back, sent));
        }

        parent.close();
        CHECK(child.wait() == 0);
    }
    CHECK(crew_test::open_fds() == fds_before);
    CHECK(no_unreaped_children());
}

TEMPLATE_TEST_CASE("one thread sends while another receives on the same endpoint", "[ipc][stream]", Pipe, Socket) {
    const std::size_t fds_before = crew_test::open_fds();
    {
        auto ends = TestType::pair();
        auto& parent = ends.first;
        Child child([&] {
            ends.first.close();
            return echo(ends.second);
        });
        ends.second.close();

        // Far more than the kernel buffers hold: without a concurrent reader
        // the echo would stall on its replies and this sender on its requests.
        constexpr std::size_t count = 400;
        auto size_of = [](std::size_t i) { return (i * 7919) % 150'000; };
        std::thread sender([&] {
            for (std::size_t i = 0; i < count; ++i) parent.send_bytes(pattern(size_of(i), i));
        });
        std::vector<std::byte> back;
        std::size_t wrong = 0;
        for (std::size_t i = 0; i < count; ++i) {
            parent.receive_bytes(back);
            if (!same_bytes(back, pattern(size_of(i), i))) ++wrong;
        }
        sender.join();
        CHECK(wrong == 0);

        parent.close();
        CHECK(child.wait() == 0);
    }
    CHECK(crew_test::open_fds() == fds_before);
    CHECK(no_unreaped_children());
}

TEMPLATE_TEST_CASE("a length over the limit is refused before anything is allocated", "[ipc][stream]", Pipe,
                   Socket) {
    const std::size_t fds_before = crew_test::open_fds();
    {
        constexpr std::size_t limit = 1 << 20;
        auto ends = TestType::pair(limit);
        auto& receiver = ends.first;
        const int raw = raw_write_fd(ends.second);
        std::vector<std::byte> out;

        SECTION("a header claiming 1 TiB") {
            const auto header = le_header(std::uint64_t{1} << 40);
            write_all(raw, header.data(), header.size());
            crew_test::largest_allocation = 0;
            try {
                receiver.receive_bytes(out);
                FAIL("no exception");
            } catch (const ChannelError& e) {
                CHECK(contains(e.what(), "1099511627776"));
                CHECK(contains(e.what(), "1048576"));
            }
            CHECK(crew_test::largest_allocation.load() < limit);
            // The stream position is lost: later receives keep refusing.
            CHECK_THROWS_AS(receiver.receive_bytes(out), ChannelError);
            CHECK_THROWS_AS(receiver.receive_bytes_until(out, Clock::now()), ChannelError);
        }
        SECTION("one byte over the limit, through a timed receive") {
            const auto header = le_header(limit + 1);
            write_all(raw, header.data(), header.size());
            CHECK_THROWS_AS(receiver.receive_bytes_until(out, Clock::now() + 5s), ChannelError);
        }
        SECTION("exactly the limit is fine") {
            const auto payload = pattern(limit, 9);
            std::thread sender([&] { ends.second.send_bytes(payload); });  // more than a pipe holds
            receiver.receive_bytes(out);
            sender.join();
            CHECK(same_bytes(out, payload));
        }
        SECTION("the sender refuses an oversized message and the channel stays usable") {
            CHECK_THROWS_AS(ends.second.send_bytes(pattern(limit + 1, 3)), ChannelError);
            ends.second.send(std::string("still fine"));
            CHECK(receiver.template receive<std::string>() == "still fine");
        }
    }
    CHECK(crew_test::open_fds() == fds_before);
    CHECK(no_unreaped_children());
}

TEMPLATE_TEST_CASE("a peer that is gone is a ChannelError, never a signal", "[ipc][stream]", Pipe, Socket) {
    const std::size_t fds_before = crew_test::open_fds();
    {
        auto ends = TestType::pair();
        auto& parent = ends.first;
        std::vector<std::byte> out;

        SECTION("receive after the peer exited at a message boundary") {
            Child child([&] {
                ends.first.close();
                ends.second.send(7);
                return 0;
            });
            ends.second.close();
            CHECK(parent.template receive<int>() == 7);
            try {
                parent.receive_bytes(out);
                FAIL("no exception");
            } catch (const ChannelError& e) {
                CHECK(contains(e.what(), "peer closed"));
                CHECK_FALSE(contains(e.what(), "middle"));
            }
            CHECK(child.wait() == 0);
        }
        SECTION("the peer dies in the middle of a message") {
            Child child([&] {
                ends.first.close();
                const int raw = raw_write_fd(ends.second);
                const auto header = le_header(100);
                write_all(raw, header.data(), header.size());
                write_all(raw, "0123456789", 10);
                return 0;
            });
            ends.second.close();
            try {
                parent.receive_bytes(out);
                FAIL("no exception");
            } catch (const ChannelError& e) {
                CHECK(contains(e.what(), "peer closed the channel in the middle of a message"));
            }
            CHECK(child.wait() == 0);
        }
        SECTION("the peer dies in the middle of a header") {
            Child child([&] {
                ends.first.close();
                write_all(raw_write_fd(ends.second), "\x05\x00\x00", 3);
                return 0;
            });
            ends.second.close();
            try {
                (void)parent.receive_bytes_until(out, Clock::now() + 10s);
                FAIL("no exception");
            } catch (const ChannelError& e) {
                CHECK(contains(e.what(), "peer closed the channel in the middle of a message"));
            }
            CHECK(child.wait() == 0);
        }
        SECTION("a blocked receive wakes when the peer is killed") {
            Child child([&] {
                ends.first.close();
                ::usleep(50'000);
                ::raise(SIGKILL);
                return 0;
            });
            ends.second.close();
            CHECK_THROWS_AS(parent.receive_bytes(out), ChannelError);
            CHECK(child.wait() == 128 + SIGKILL);
        }
        SECTION("send to a dead peer") {
            Child child([] { return 0; });
            CHECK(child.wait() == 0);
            ends.second.close();  // the last reader is gone now
            const bool was_blocked = sigpipe_blocked();
            try {
                parent.send(1);
                FAIL("no exception");
            } catch (const ChannelError& e) {
                CHECK(contains(e.what(), "peer closed"));
            }
            CHECK_THROWS_AS(parent.send_bytes(pattern(2 << 20, 1)), ChannelError);
            // Still alive, and nothing about signals changed for the caller.
            CHECK_FALSE(sigpipe_pending());
            CHECK(sigpipe_blocked() == was_blocked);
            struct sigaction sa {};
            ::sigaction(SIGPIPE, nullptr, &sa);
            CHECK(sa.sa_handler == SIG_DFL);
        }
        SECTION("send after the peer died with messages unread") {
            parent.send(1);
            parent.send(2);
            parent.send(3);
            Child child([&] {
                ends.first.close();
                (void)ends.second.template receive<int>();  // then exits with two more waiting
                return 0;
            });
            ends.second.close();
            CHECK(child.wait() == 0);
            CHECK_THROWS_AS(parent.send(4), ChannelError);
        }
        SECTION("a SIGPIPE that was already pending is left to its owner") {
            ends.second.close();
            sigset_t sigpipe, old;
            sigemptyset(&sigpipe);
            sigaddset(&sigpipe, SIGPIPE);
            REQUIRE(pthread_sigmask(SIG_BLOCK, &sigpipe, &old) == 0);
            REQUIRE(pthread_kill(pthread_self(), SIGPIPE) == 0);
            REQUIRE(sigpipe_pending());
            CHECK_THROWS_AS(parent.send(1), ChannelError);
            CHECK(sigpipe_blocked());
            CHECK(sigpipe_pending());
            timespec zero{};
            CHECK(sigtimedwait(&sigpipe, nullptr, &zero) == SIGPIPE);
            CHECK_FALSE(sigpipe_pending());
            REQUIRE(pthread_sigmask(SIG_SETMASK, &old, nullptr) == 0);
        }
    }
    CHECK(crew_test::open_fds() == fds_before);
    CHECK(no_unreaped_children());
}

TEMPLATE_TEST_CASE("a timed receive gives up on time and loses nothing", "[ipc][stream]", Pipe, Socket) {
    const std::size_t fds_before = crew_test::open_fds();
    {
        auto ends = TestType::pair();
        auto& parent = ends.first;
        std::vector<std::byte> out;

        SECTION("nothing arrives, then a message arrives later") {
            Child child([&] {
                ends.first.close();
                (void)ends.second.template receive<int>();  // "go"
                ends.second.send(std::string("late"));
                return wait_for_eof(ends.second);
            });
            ends.second.close();

            auto start = Clock::now();
            CHECK_FALSE(parent.receive_bytes_until(out, start + 100ms));
            auto waited = Clock::now() - start;
            CHECK(waited >= 100ms);
            CHECK(waited < 5s);
            CHECK_FALSE(parent.receive_bytes_until(out, Clock::now() - 1s));  // past deadline: just a look

            parent.send(1);
            REQUIRE(parent.receive_bytes_until(out, Clock::now() + 10s));
            CHECK(crew::decode<std::string>(out) == "late");

            parent.close();
            CHECK(child.wait() == 0);
        }
        SECTION("a deadline in the past still takes a waiting message; extreme deadlines work") {
            out.resize(3);
            CHECK_FALSE(parent.receive_bytes_until(out, Clock::time_point::min()));
            CHECK(out.empty());  // false leaves `out` empty
            ends.second.send(5);
            REQUIRE(poll_readable(parent.readable_fd(), 5000));
            REQUIRE(parent.receive_bytes_until(out, Clock::now() - 1h));
            CHECK(crew::decode<int>(out) == 5);
            ends.second.send(6);
            REQUIRE(parent.receive_bytes_until(out, Clock::time_point::max()));
            CHECK(crew::decode<int>(out) == 6);
        }
        SECTION("a message whose first part arrived before the timeout is received whole") {
            // More than a pipe holds, so the parent must read while the child
            // writes; a side pipe tells the parent when a stage is all written.
            constexpr std::size_t size = (3 << 20) + 17;
            const auto first = pattern(size, 11);
            const auto second = pattern(size, 12);
            int side[2];
            REQUIRE(::pipe2(side, O_CLOEXEC) == 0);
            Child child([&] {
                ends.first.close();
                const int raw = raw_write_fd(ends.second);
                for (const auto* msg : {&first, &second}) {
                    const auto header = le_header(msg->size());
                    (void)ends.second.template receive<int>();
                    write_all(raw, header.data(), 3);  // part of the header
                    write_all(side[1], "1", 1);
                    (void)ends.second.template receive<int>();
                    write_all(raw, header.data() + 3, 5);  // rest of it, half the payload
                    write_all(raw, msg->data(), size / 2);
                    write_all(side[1], "2", 1);
                    (void)ends.second.template receive<int>();
                    write_all(raw, msg->data() + size / 2, size - size / 2);
                }
                return wait_for_eof(ends.second);
            });
            ends.second.close();
            ::close(side[1]);

            // Timed receives that all give up, until the child wrote a stage
            // and we took all of it: then nothing is left in the kernel.
            auto time_out_through_stage = [&](std::vector<std::byte>& buf) {
                for (;;) {
                    const bool stage_written = poll_readable(side[0], 0);
                    CHECK_FALSE(parent.receive_bytes_until(buf, Clock::now() + 20ms));
                    if (stage_written) break;
                }
                char c;
                REQUIRE(::read(side[0], &c, 1) == 1);
                CHECK(bytes_waiting(parent.readable_fd()) == 0);
            };
            for (int round = 0; round < 2; ++round) {
                INFO("round " << round);
                std::vector<std::byte> a, b, c;  // a different vector each call
                parent.send(1);
                time_out_through_stage(a);  // three header bytes are inside the endpoint
                parent.send(2);
                time_out_through_stage(b);  // and now half the payload
                parent.send(3);
                if (round == 0) {
                    REQUIRE(parent.receive_bytes_until(c, Clock::now() + 30s));
                } else {
                    parent.receive_bytes(c);  // a blocking receive continues just as well
                }
                CHECK(same_bytes(c, round == 0 ? first : second));
            }
            parent.close();
            CHECK(child.wait() == 0);
            ::close(side[0]);
        }
    }
    CHECK(crew_test::open_fds() == fds_before);
    CHECK(no_unreaped_children());
}

TEMPLATE_TEST_CASE("endpoints are RAII, close-on-exec, and closed ones refuse politely", "[ipc][stream]", Pipe,
                   Socket) {
    const std::size_t fds_before = crew_test::open_fds();
    {
        auto ends = TestType::pair();
        const int fd = ends.first.readable_fd();
        REQUIRE(fd >= 0);
        CHECK(cloexec(fd));
        CHECK(cloexec(ends.second.readable_fd()));
        CHECK(crew_test::open_fds() == fds_before + (std::is_same_v<TestType, Pipe> ? 4 : 2));

        SECTION("readable_fd polls readable when a message is waiting") {
            CHECK_FALSE(poll_readable(fd, 0));
            ends.second.send(1);
            CHECK(poll_readable(fd, 5000));
            CHECK(ends.first.template receive<int>() == 1);
            CHECK_FALSE(poll_readable(fd, 0));
        }
        SECTION("moving transfers ownership; close is idempotent") {
            typename TestType::Endpoint moved = std::move(ends.first);
            CHECK(ends.first.readable_fd() == -1);
            CHECK(moved.readable_fd() == fd);
            ends.second.send(2);
            CHECK(moved.template receive<int>() == 2);
            moved.close();
            moved.close();
            CHECK(moved.readable_fd() == -1);
            CHECK_THROWS_AS(moved.send(1), ChannelError);
            std::vector<std::byte> out;
            CHECK_THROWS_AS(moved.receive_bytes(out), ChannelError);
            CHECK_THROWS_AS(moved.export_handle(), ChannelError);
            typename TestType::Endpoint empty;
            CHECK(empty.readable_fd() == -1);
            CHECK_THROWS_AS(empty.send(1), ChannelError);
            empty = std::move(ends.second);  // move-assign into an empty one
            CHECK(empty.readable_fd() >= 0);
        }
        if (std::is_same_v<TestType, Pipe>) {
            SECTION("pipes are enlarged as far as the system allows") {
                long max_size = 0;
                if (FILE* f = std::fopen("/proc/sys/fs/pipe-max-size", "r")) {
                    if (std::fscanf(f, "%ld", &max_size) != 1) max_size = 0;
                    std::fclose(f);
                }
                const int size = ::fcntl(fd, F_GETPIPE_SZ);
                CHECK(size >= std::min<long>(max_size, 1 << 20));
            }
        } else {
            SECTION("socket buffers are enlarged as far as the system allows") {
                int size = 0;
                socklen_t len = sizeof size;
                REQUIRE(::getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, &len) == 0);
                long max_size = 0;
                if (FILE* f = std::fopen("/proc/sys/net/core/wmem_max", "r")) {
                    if (std::fscanf(f, "%ld", &max_size) != 1) max_size = 0;
                    std::fclose(f);
                }
                CHECK(size >= std::min<long>(max_size, 4 << 20));  // the kernel reports twice what it keeps
            }
        }
    }
    CHECK(crew_test::open_fds() == fds_before);
}

TEMPLATE_TEST_CASE("export_handle and import_handle rebuild an endpoint", "[ipc][stream]", Pipe, Socket) {
    const std::size_t fds_before = crew_test::open_fds();
    const std::string prefix = std::string(TestType::name) + ":";
    {
        auto ends = TestType::pair();
        auto& parent = ends.first;

        SECTION("the text round-trips in one process") {
            const std::string text = ends.second.export_handle();
            CHECK(text.rfind(prefix, 0) == 0);
            const auto fds = handle_fds(text);
            REQUIRE(fds.size() == (std::is_same_v<TestType, Pipe> ? 2u : 1u));
            for (int fd : fds) CHECK_FALSE(cloexec(fd));  // it must survive exec

            // Import duplicates, so that two owners never close the same fd.
            std::string dup_text = prefix;
            for (std::size_t i = 0; i < fds.size(); ++i)
                dup_text += (i > 0 ? "," : "") + std::to_string(::dup(fds[i]));
            auto imported = TestType::Endpoint::import_handle(dup_text, 4096);
            for (int fd : handle_fds(dup_text)) CHECK(cloexec(fd));  // and close-on-exec again after import
            CHECK(imported.export_handle() == dup_text);

            parent.send(5);
            CHECK(imported.template receive<int>() == 5);
            imported.send(std::string("back"));
            CHECK(parent.template receive<std::string>() == "back");
            // The import's own limit applies to what it receives.
            parent.send_bytes(pattern(5000, 1));
            std::vector<std::byte> out;
            CHECK_THROWS_AS(imported.receive_bytes(out), ChannelError);
        }
        SECTION("garbage is refused and nothing is taken over") {
            int pipe_fds[2];
            REQUIRE(::pipe2(pipe_fds, O_CLOEXEC) == 0);
            int sock_fds[2];
            REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sock_fds) == 0);
            int dgram_fds[2];
            REQUIRE(::socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, dgram_fds) == 0);
            const auto r = std::to_string(pipe_fds[0]);
            const auto w = std::to_string(pipe_fds[1]);
            const auto s = std::to_string(sock_fds[0]);
            std::vector<std::string> garbage = {
                "", ":", prefix, prefix + "x", prefix + "-1", prefix + "+3", prefix + " 3",
                prefix + "99999999999999999999", prefix + "1000000", "queue:" + r,
                std::string(TestType::name) + r,  // no colon
            };
            if (std::is_same_v<TestType, Pipe>) {
                garbage.insert(garbage.end(), {
                    "pipe:" + r, "pipe:" + r + ",", "pipe:" + r + "," + w + ",", "pipe:" + r + "," + w + " ",
                    "pipe:" + w + "," + r,  // read and write end swapped
                    "pipe:" + r + "," + r, "pipe:" + s + "," + std::to_string(sock_fds[1]), "socket:" + r,
                });
            } else {
                garbage.insert(garbage.end(), {
                    "socket:" + s + ",", "socket:" + s + "," + s, "socket:" + r,
                    "socket:" + std::to_string(dgram_fds[0]), "pipe:" + r + "," + w,
                });
            }
            for (const auto& text : garbage) {
                INFO("handle text: \"" << text << "\"");
                CHECK_THROWS_AS(TestType::Endpoint::import_handle(text, 1 << 20), ChannelError);
            }
            for (int fd : {pipe_fds[0], pipe_fds[1], sock_fds[0], sock_fds[1], dgram_fds[0], dgram_fds[1]}) {
                CHECK(cloexec(fd));  // untouched
                CHECK(::close(fd) == 0);  // and still ours
            }
        }
        SECTION("a forked child re-imports its end from the text") {
            const std::string text = ends.second.export_handle();
            Child child([&] {
                ends.first.close();
                auto mine = TestType::Endpoint::import_handle(text, 1 << 20);
                return echo(mine);  // _exit follows: `ends.second` never closes the same fds
            });
            ends.second.close();
            parent.send(std::vector<int>{4, 5, 6});
            CHECK(parent.template receive<std::vector<int>>() == std::vector<int>{4, 5, 6});
            parent.close();
            CHECK(child.wait() == 0);
        }
        SECTION("an exec'd copy of this program imports its end and echoes") {
            const std::string text = ends.second.export_handle();
            Child child([&] {
                ends.first.close();
                const int devnull = ::open("/dev/null", O_WRONLY);
                if (devnull < 0 || ::dup2(devnull, STDOUT_FILENO) < 0) return 96;
                ::setenv("CREW_IPC_STREAM_TEST_HANDLE", text.c_str(), 1);
                char self[] = "ipc_stream_test";
                char test_name[] = "ipc stream exec child";
                char* argv[] = {self, test_name, nullptr};
                ::execv("/proc/self/exe", argv);
                return 95;
            });
            ends.second.close();
            for (int i = 0; i < 3; ++i) {
                parent.send(i);
                CHECK(parent.template receive<int>() == i);
            }
            parent.close();
            CHECK(child.wait() == 0);
        }
    }
    CHECK(crew_test::open_fds() == fds_before);
    CHECK(no_unreaped_children());
}

// Runs only in the exec'd child of the test above (hidden from a normal run).
TEST_CASE("ipc stream exec child", "[.]") {
    const char* text = std::getenv("CREW_IPC_STREAM_TEST_HANDLE");
    if (text == nullptr) return;  // run by hand: nothing to do
    try {
        if (std::string_view(text).rfind("pipe:", 0) == 0) {
            auto end = Pipe::Endpoint::import_handle(text, 1 << 20);
            ::_exit(echo(end));
        }
        auto end = Socket::Endpoint::import_handle(text, 1 << 20);
        ::_exit(echo(end));
    } catch (...) {
        ::_exit(94);
    }
}
