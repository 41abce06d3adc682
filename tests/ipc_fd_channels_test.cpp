// What only the byte-stream channels have (crew::ipc::Pipe, crew::ipc::Socket):
// raw frames written straight to the fd (a length over the limit, a peer that
// dies in the middle of a header or a message, a message whose parts arrive
// around a timeout), a SIGPIPE the caller had pending, descriptors that are
// close-on-exec and poll readable, and kernel buffers enlarged. What every
// channel does is in tests/channel_suite.hpp.

#include <crew/ipc/pipe.hpp>
#include <crew/ipc/socket.hpp>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "catch.hpp"
#include "channel_helpers.hpp"
#include "largest_allocation.hpp"
#include "test_support.hpp"

namespace {

using chan::Child;
using chan::cloexec;
using chan::contains;
using chan::pattern;
using chan::poll_readable;
using chan::same_bytes;
using chan::sigpipe_blocked;
using chan::sigpipe_pending;
using crew::ChannelError;
using crew::ipc::Pipe;
using crew::ipc::Socket;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

/// The fd an endpoint writes to, for writing raw (possibly broken) frames.
template <class E>
int raw_write_fd(E& end) {
    return chan::FdTraits::handle_fds(end.export_handle()).back();
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

int bytes_waiting(int fd) {
    int n = -1;
    REQUIRE(::ioctl(fd, FIONREAD, &n) == 0);
    return n;
}

}  // namespace

// ---------------------------------------------------------------------------

TEMPLATE_TEST_CASE("fd channels: a raw length over the limit is refused before anything is allocated",
                   "[ipc][fd]", Pipe, Socket) {
    crew_test::LeakCheck leaks;
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
    }
    leaks.check();
}

TEMPLATE_TEST_CASE("fd channels: a peer that dies inside a frame is a ChannelError naming it", "[ipc][fd]", Pipe,
                   Socket) {
    crew_test::LeakCheck leaks;
    {
        auto ends = TestType::pair();
        auto& parent = ends.first;
        std::vector<std::byte> out;

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
    leaks.check();
}

TEMPLATE_TEST_CASE("fd channels: a message whose first part arrived before the timeout is received whole",
                   "[ipc][fd]", Pipe, Socket) {
    crew_test::LeakCheck leaks;
    {
        auto ends = TestType::pair();
        auto& parent = ends.first;

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
                return chan::wait_for_close(ends.second);
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
    leaks.check();
}

TEMPLATE_TEST_CASE("fd channels: endpoints are close-on-exec, poll readable, and have large buffers", "[ipc][fd]",
                   Pipe, Socket) {
    crew_test::LeakCheck leaks;
    {
        auto ends = TestType::pair();
        const int fd = ends.first.readable_fd();
        REQUIRE(fd >= 0);
        CHECK(cloexec(fd));
        CHECK(cloexec(ends.second.readable_fd()));
        CHECK(crew_test::open_fds() == leaks.before().fds + (std::is_same_v<TestType, Pipe> ? 4 : 2));

        SECTION("readable_fd polls readable when a message is waiting") {
            CHECK_FALSE(poll_readable(fd, 0));
            ends.second.send(1);
            CHECK(poll_readable(fd, 5000));
            CHECK(ends.first.template receive<int>() == 1);
            CHECK_FALSE(poll_readable(fd, 0));
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
    leaks.check();
}
