// Channels without a byte stream underneath (crew::ipc::SharedMemory,
// crew::ipc::MessageQueue): typed values and messages of every size through
// a forked echo, peers that close, exit or are killed while we wait (there is
// no EOF: the channels must notice by themselves), timed receives that resume
// a partial message, handles across fork and exec, the life of MessageQueue's
// names, and nothing left behind: no name in /dev/shm or /dev/mqueue, no fd,
// no zombie. Every test runs over both channels.
//
// Children created here always end with _exit(), never by returning into
// Catch; a Child that a failed REQUIRE leaves behind is killed and reaped.

#include <crew/detail/shm_signal.hpp>
#include <crew/ipc/message_queue.hpp>
#include <crew/ipc/shared_memory.hpp>
#include <crew/sync/mutex.hpp>
#include <crew/sync/semaphore.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <new>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <vector>

#include <fcntl.h>
#include <sys/mman.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "catch.hpp"
#include "test_support.hpp"

#include "largest_allocation.hpp"

namespace {

using crew::ChannelError;
using crew::ipc::MessageQueue;
using crew::ipc::SharedMemory;
// The same rings, a blocked side asleep on the Mutex / Semaphore policy's
// process-shared primitive instead of a futex.
using ShmMutex = crew::ipc::BasicSharedMemory<crew::sync::Mutex>;
using ShmSemaphore = crew::ipc::BasicSharedMemory<crew::sync::Semaphore>;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

static_assert(crew::ipc::channel<SharedMemory>);
static_assert(crew::ipc::channel<MessageQueue>);
static_assert(crew::ipc::channel<ShmMutex> && crew::ipc::channel<ShmSemaphore>);
static_assert(std::is_same_v<crew::ipc::with_sync_t<SharedMemory, crew::sync::Mutex>, ShmMutex>);
static_assert(std::is_same_v<crew::ipc::with_sync_t<MessageQueue, crew::sync::Mutex>, MessageQueue>);

template <class C>
constexpr bool is_shm = !std::is_same_v<C, MessageQueue>;
static_assert(!std::is_copy_constructible_v<SharedMemory::Endpoint>);
static_assert(!std::is_copy_assignable_v<MessageQueue::Endpoint>);
static_assert(std::is_nothrow_move_constructible_v<SharedMemory::Endpoint>);
static_assert(std::is_nothrow_move_constructible_v<MessageQueue::Endpoint>);

/// The unit a channel cuts messages into: the ring, or a queue slot.
template <class C>
constexpr std::size_t unit_bytes() {
    if constexpr (is_shm<C>) {
        return SharedMemory::ring_bytes;
    } else {
        return MessageQueue::slot_bytes;
    }
}

/// How many bytes the channel holds in flight (so a larger message makes the
/// sender wait for the receiver).
template <class C>
constexpr std::size_t capacity_bytes() {
    if constexpr (is_shm<C>) {
        return SharedMemory::ring_bytes;
    } else {
        return MessageQueue::slot_bytes * MessageQueue::slot_count;
    }
}

/// This process's MessageQueue names in /dev/shm.
std::vector<std::string> my_mq_names(pid_t creator = ::getpid()) {
    std::vector<std::string> names;
    const std::string prefix = "crew-mq-" + std::to_string(creator) + "-";
    for (const auto& entry : std::filesystem::directory_iterator("/dev/shm")) {
        const std::string name = entry.path().filename().string();
        if (name.rfind(prefix, 0) == 0) names.push_back(entry.path().string());
    }
    return names;
}

bool no_unreaped_children() { return ::waitpid(-1, nullptr, WNOHANG) == -1 && errno == ECHILD; }

/// What must be the same before and after each test: names, fds, children.
struct Leaks {
    std::set<std::string> names = crew_test::ipc_names();
    std::size_t fds = crew_test::open_fds();
};

#define CHECK_NOTHING_LEFT(before)                        \
    do {                                                  \
        CHECK(crew_test::ipc_names() == (before).names);             \
        CHECK(crew_test::open_fds() == (before).fds);     \
        CHECK(no_unreaped_children());                    \
    } while (false)

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

    [[nodiscard]] pid_t pid() const { return pid_; }

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
    end.bind_to_current_process();
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
int wait_for_close(E& end) {
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
    if (n > 0 && n % 4096 != 0) v[n - 1] = static_cast<std::byte>(seed);  // the tail differs too
    return v;
}

bool same_bytes(const std::vector<std::byte>& a, const std::vector<std::byte>& b) {
    return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size()) == 0);
}

bool contains(const std::string& haystack, std::string_view needle) {
    return haystack.find(needle) != std::string::npos;
}

/// A one-way "I am ready" signal from a child to the parent.
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
    void wait() const {
        char c;
        while (::read(fds_[0], &c, 1) == -1 && errno == EINTR) {
        }
    }

private:
    int fds_[2] = {-1, -1};
};

}  // namespace

// ---------------------------------------------------------------------------

TEMPLATE_TEST_CASE("shm/mq channels carry typed values to a forked echo and back", "[ipc][shm_mq]", SharedMemory, ShmMutex, ShmSemaphore,
                   MessageQueue) {
    const Leaks before;
    {
        auto ends = TestType::pair();
        auto& parent = ends.first;
        Child child([&] {
            ends.first.close();
            return echo(ends.second);
        });
        ends.second.close();  // the parent's copy only: the child's end stays open
        CHECK(parent.readable_fd() == -1);

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
    CHECK_NOTHING_LEFT(before);
}

TEMPLATE_TEST_CASE("shm/mq channels carry messages of any size whole", "[ipc][shm_mq]", SharedMemory, ShmMutex, ShmSemaphore,
                   MessageQueue) {
    const Leaks before;
    {
        auto ends = TestType::pair();
        auto& parent = ends.first;
        Child child([&] {
            ends.first.close();
            return echo(ends.second);
        });
        ends.second.close();

        constexpr std::size_t unit = unit_bytes<TestType>();
        const std::size_t sizes[] = {0, 1, unit - 8, unit - 7, unit, unit + 1, 1 << 20, (1 << 20) + 1, 256 << 20};
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
    CHECK_NOTHING_LEFT(before);
}

TEMPLATE_TEST_CASE("shm/mq: one thread sends while another receives on the same endpoint", "[ipc][shm_mq]",
                   SharedMemory, ShmMutex, ShmSemaphore, MessageQueue) {
    const Leaks before;
    {
        auto ends = TestType::pair();
        auto& parent = ends.first;
        Child child([&] {
            ends.first.close();
            return echo(ends.second);
        });
        ends.second.close();

        // Far more than the channel holds: without a concurrent reader the
        // echo would stall on its replies and this sender on its requests.
        const std::size_t count = crew_test::sanitized() ? 100 : 400;
        auto size_of = [](std::size_t i) { return (i * 7919) % 150'000 + (i % 10 == 0 ? 2'000'000 : 0); };
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
    CHECK_NOTHING_LEFT(before);
}

TEMPLATE_TEST_CASE("shm/mq: a length over the limit is refused before anything is allocated", "[ipc][shm_mq]",
                   SharedMemory, ShmMutex, ShmSemaphore, MessageQueue) {
    const Leaks before;
    {
        constexpr std::size_t limit = 1 << 20;
        auto ends = TestType::pair(limit);
        std::vector<std::byte> out;

        SECTION("the sender refuses, naming both numbers, and the channel stays usable") {
            try {
                ends.second.send_bytes(pattern(limit + 1, 3));
                FAIL("no exception");
            } catch (const ChannelError& e) {
                CHECK(contains(e.what(), std::to_string(limit + 1)));
                CHECK(contains(e.what(), std::to_string(limit)));
            }
            ends.second.send(std::string("still fine"));
            CHECK(ends.first.template receive<std::string>() == "still fine");
        }
        SECTION("the receiver checks the length against its own limit first") {
            // An end imported with a smaller limit than its peer's.
            const std::string text = ends.second.export_handle();
            std::string own = text;
            if constexpr (is_shm<TestType>) {
                // Import takes ownership of the fd: give it a duplicate.
                const std::string prefix = std::string(TestType::name) + ":";
                const int fd = ::fcntl(std::stoi(text.substr(prefix.size())), F_DUPFD_CLOEXEC, 0);
                own = prefix + std::to_string(fd) + text.substr(text.rfind(':'));
            }
            auto small = TestType::Endpoint::import_handle(own, 4096);
            ends.first.send_bytes(pattern(500'000, 1));
            crew_test::largest_allocation = 0;
            try {
                small.receive_bytes(out);
                FAIL("no exception");
            } catch (const ChannelError& e) {
                CHECK(contains(e.what(), "500000"));
                CHECK(contains(e.what(), "4096"));
            }
            CHECK(crew_test::largest_allocation.load() < 200'000);
            // The position in the stream is lost: later receives keep refusing.
            CHECK_THROWS_AS(small.receive_bytes(out), ChannelError);
            CHECK_THROWS_AS(small.receive_bytes_until(out, Clock::now()), ChannelError);
        }
        SECTION("exactly the limit is fine") {
            const auto payload = pattern(limit, 9);
            std::thread sender([&] { ends.second.send_bytes(payload); });  // more than the channel holds
            ends.first.receive_bytes(out);
            sender.join();
            CHECK(same_bytes(out, payload));
        }
    }
    CHECK_NOTHING_LEFT(before);
}

TEMPLATE_TEST_CASE("shm/mq: a peer that closes or ends is a ChannelError, never a hang", "[ipc][shm_mq]",
                   SharedMemory, ShmMutex, ShmSemaphore, MessageQueue) {
    const Leaks before;
    {
        auto ends = TestType::pair();
        auto& parent = ends.first;
        std::vector<std::byte> out;

        SECTION("the peer closes: what it sent arrives, then receive throws") {
            Child child([&] {
                ends.first.close();
                ends.second.send(7);
                ends.second.send_bytes(pattern(3 << 20, 5));  // waits for the parent to read
                ends.second.close();
                return 0;
            });
            ends.second.close();
            CHECK(parent.template receive<int>() == 7);
            parent.receive_bytes(out);
            CHECK(same_bytes(out, pattern(3 << 20, 5)));
            try {
                parent.receive_bytes(out);
                FAIL("no exception");
            } catch (const ChannelError& e) {
                CHECK(contains(e.what(), "peer closed"));
            }
            CHECK_THROWS_AS(parent.receive_bytes_until(out, Clock::now() + 1s), ChannelError);
            CHECK_THROWS_AS(parent.send(1), ChannelError);
            CHECK(child.wait() == 0);
        }
        SECTION("the peer closes while we block in receive") {
            Child child([&] {
                ends.first.close();
                ends.second.bind_to_current_process();
                ::usleep(100'000);
                ends.second.close();
                ::pause();  // alive, but closed: only the flag can tell
                return 0;
            });
            ends.second.close();
            const auto start = Clock::now();
            CHECK_THROWS_AS(parent.receive_bytes(out), ChannelError);
            CHECK(Clock::now() - start < 2s);
        }
        SECTION("the peer exits without closing: what it sent arrives, then receive throws") {
            Child child([&] {
                ends.first.close();
                ends.second.send(std::string("last words"));
                return 0;  // _exit: no destructor closes the channel
            });
            ends.second.close();
            CHECK(parent.template receive<std::string>() == "last words");
            try {
                parent.receive_bytes(out);
                FAIL("no exception");
            } catch (const ChannelError& e) {
                CHECK(contains(e.what(), "peer process is gone"));
            }
            CHECK(child.wait() == 0);
        }
        SECTION("the peer is killed while we block in receive") {
            Child child([&] {
                ends.first.close();
                ends.second.bind_to_current_process();
                ::usleep(50'000);
                ::raise(SIGKILL);
                return 0;
            });
            ends.second.close();
            const auto start = Clock::now();
            try {
                parent.receive_bytes(out);
                FAIL("no exception");
            } catch (const ChannelError& e) {
                CHECK(contains(e.what(), "peer process is gone"));
            }
            CHECK(Clock::now() - start < 1s);
            // A zombie is gone too: the child was not reaped while we waited.
            CHECK(child.wait() == 128 + SIGKILL);
        }
        SECTION("the peer is killed while we block in send") {
            Latch bound;
            Child child([&] {
                ends.first.close();
                ends.second.bind_to_current_process();
                bound.open();
                ::pause();  // never reads
                return 0;
            });
            ends.second.close();
            bound.wait();
            std::thread killer([&] {
                std::this_thread::sleep_for(100ms);
                ::kill(child.pid(), SIGKILL);
            });
            const auto start = Clock::now();
            CHECK_THROWS_AS(parent.send_bytes(pattern(2 * capacity_bytes<TestType>(), 1)), ChannelError);
            CHECK(Clock::now() - start < 1500ms);
            killer.join();
            CHECK(child.wait() == 128 + SIGKILL);
        }
        SECTION("send to a peer that is gone") {
            Child child([&] {
                ends.first.close();
                ends.second.bind_to_current_process();
                return 0;
            });
            ends.second.close();
            CHECK(child.wait() == 0);
            try {
                parent.send(1);
                FAIL("no exception");
            } catch (const ChannelError& e) {
                CHECK(contains(e.what(), "peer process is gone"));
            }
            CHECK_THROWS_AS(parent.send(2), ChannelError);
        }
        SECTION("in one process, closing the other end is seen at once") {
            ends.second.close();  // no fork since pair(): this was the only copy
            CHECK_THROWS_AS(parent.receive_bytes_until(out, Clock::now() + 10s), ChannelError);
            CHECK_THROWS_AS(parent.send(1), ChannelError);
        }
    }
    CHECK_NOTHING_LEFT(before);
}

TEMPLATE_TEST_CASE("shm/mq: a timed receive gives up on time and loses nothing", "[ipc][shm_mq]", SharedMemory, ShmMutex, ShmSemaphore,
                   MessageQueue) {
    const Leaks before;
    {
        auto ends = TestType::pair();
        auto& parent = ends.first;
        std::vector<std::byte> out;

        SECTION("nothing arrives, then a message arrives later") {
            Child child([&] {
                ends.first.close();
                ends.second.bind_to_current_process();
                (void)ends.second.template receive<int>();  // "go"
                ends.second.send(std::string("late"));
                return wait_for_close(ends.second);
            });
            ends.second.close();

            const auto start = Clock::now();
            out.resize(3);
            CHECK_FALSE(parent.receive_bytes_until(out, start + 100ms));
            CHECK(out.empty());  // false leaves `out` empty
            const auto waited = Clock::now() - start;
            CHECK(waited >= 100ms);
            CHECK(waited < 5s);
            CHECK_FALSE(parent.receive_bytes_until(out, Clock::now() - 1s));  // past deadline: just a look
            CHECK_FALSE(parent.receive_bytes_until(out, Clock::time_point::min()));

            parent.send(1);
            REQUIRE(parent.receive_bytes_until(out, Clock::now() + 10s));
            CHECK(crew::decode<std::string>(out) == "late");

            parent.close();
            CHECK(child.wait() == 0);
        }
        SECTION("a deadline in the past still takes a waiting message; extreme deadlines work") {
            ends.second.send(5);
            REQUIRE(parent.receive_bytes_until(out, Clock::now() - 1h));
            CHECK(crew::decode<int>(out) == 5);
            ends.second.send(6);
            REQUIRE(parent.receive_bytes_until(out, Clock::time_point::max()));
            CHECK(crew::decode<int>(out) == 6);
        }
        SECTION("a message that stops halfway is kept and finished by the next receive") {
            {
                // (MessageQueue: a peer stopped inside a queue operation holds
                // the direction's guard; the timed receive gives up at its
                // deadline all the same.)
                // More than the channel holds: the child blocks in send once it is
                // full; stopped there, it leaves the parent a partial message.
                const std::size_t size = 2 * capacity_bytes<TestType>() + 12345;
                const auto first = pattern(size, 11);
                const auto second = pattern(size, 12);
                Child child([&] {
                    ends.first.close();
                    ends.second.bind_to_current_process();
                    ends.second.send_bytes(first);
                    ends.second.send_bytes(second);
                    return wait_for_close(ends.second);
                });
                ends.second.close();
                for (int round = 0; round < 2; ++round) {
                    INFO("round " << round);
                    std::this_thread::sleep_for(100ms);  // the channel fills up
                    REQUIRE(::kill(child.pid(), SIGSTOP) == 0);
                    std::vector<std::byte> a, b;  // a different vector each call
                    CHECK_FALSE(parent.receive_bytes_until(a, Clock::now() + 200ms));
                    CHECK(a.empty());
                    CHECK_FALSE(parent.receive_bytes_until(a, Clock::now() + 50ms));  // still stopped: nothing new
                    REQUIRE(::kill(child.pid(), SIGCONT) == 0);
                    if (round == 0) {
                        REQUIRE(parent.receive_bytes_until(b, Clock::now() + 30s));
                    } else {
                        parent.receive_bytes(b);  // a blocking receive continues just as well
                    }
                    CHECK(same_bytes(b, round == 0 ? first : second));
                }
                parent.close();
                CHECK(child.wait() == 0);
            }
        }
    }
    CHECK_NOTHING_LEFT(before);
}

TEMPLATE_TEST_CASE("shm/mq: an idle endpoint sleeps", "[ipc][shm_mq]", SharedMemory, ShmMutex, ShmSemaphore, MessageQueue) {
    const Leaks before;
    {
        auto ends = TestType::pair();
        Child child([&] {
            ends.first.close();
            return wait_for_close(ends.second);
        });
        ends.second.close();
        std::vector<std::byte> out;
        const auto cpu_before = crew_test::process_cpu_time();
        CHECK_FALSE(ends.first.receive_bytes_until(out, Clock::now() + 1s));
        const auto used = crew_test::process_cpu_time() - cpu_before;
        const double used_ms = std::chrono::duration<double, std::milli>(used).count();
        INFO("CPU used while idle for 1 s: " << used_ms << " ms");
        CHECK(used < crew_test::idle_cpu_limit());
        ends.first.close();
        CHECK(child.wait() == 0);
    }
    CHECK_NOTHING_LEFT(before);
}

TEMPLATE_TEST_CASE("shm/mq endpoints are RAII and closed ones refuse politely", "[ipc][shm_mq]", SharedMemory, ShmMutex, ShmSemaphore,
                   MessageQueue) {
    const Leaks before;
    {
        auto ends = TestType::pair();
        typename TestType::Endpoint moved = std::move(ends.first);
        ends.second.send(2);
        CHECK(moved.template receive<int>() == 2);
        CHECK_THROWS_AS(ends.first.send(1), ChannelError);  // moved from
        moved.close();
        moved.close();
        CHECK_THROWS_AS(moved.send(1), ChannelError);
        std::vector<std::byte> out;
        CHECK_THROWS_AS(moved.receive_bytes(out), ChannelError);
        CHECK_THROWS_AS(moved.export_handle(), ChannelError);
        CHECK_THROWS_AS(moved.bind_to_current_process(), ChannelError);
        typename TestType::Endpoint empty;
        CHECK(empty.readable_fd() == -1);
        CHECK_THROWS_AS(empty.send(1), ChannelError);
        empty = std::move(ends.second);  // move-assign into an empty one
        CHECK_THROWS_AS(empty.send(1), ChannelError);  // its peer is closed
    }
    CHECK_NOTHING_LEFT(before);
}

TEST_CASE("SharedMemory has no name and its fd is close-on-exec until exported", "[ipc][shm_mq]") {
    const Leaks before;
    {
        auto ends = SharedMemory::pair();
        CHECK(crew_test::ipc_names() == before.names);
        CHECK(crew_test::open_fds() == before.fds + 2);  // one memfd per endpoint
        const std::string text = ends.second.export_handle();
        CHECK(text.rfind("shm:", 0) == 0);
        CHECK(text.substr(text.size() - 2) == ":1");
        const int fd = std::stoi(text.substr(4));
        CHECK((::fcntl(fd, F_GETFD) & FD_CLOEXEC) == 0);
        CHECK((::fcntl(fd, F_GET_SEALS) & F_SEAL_SHRINK) != 0);  // the other side cannot pull memory away
    }
    CHECK_NOTHING_LEFT(before);
}

TEST_CASE("MessageQueue's names are private and gone once both sides have the queues", "[ipc][shm_mq]") {
    const Leaks before;
    {
        SECTION("0600, unguessable, and removed when the forked child binds") {
            auto ends = MessageQueue::pair();
            const auto names = my_mq_names();
            REQUIRE(names.size() == 3);  // two queues and the control block, all in /dev/shm
            for (const auto& name : names) {
                struct stat st {};
                REQUIRE(::stat(name.c_str(), &st) == 0);
                CHECK((st.st_mode & 0777) == 0600);
                CHECK(st.st_uid == ::geteuid());
                INFO(name);
                CHECK(name.size() >= std::string("/dev/shm/crew-mq-1-").size() + 32);
            }
            Latch bound;
            Child child([&] {
                ends.first.close();
                ends.second.bind_to_current_process();
                bound.open();
                return echo(ends.second);
            });
            ends.second.close();
            bound.wait();
            CHECK(my_mq_names().empty());
            ends.first.send(3);
            CHECK(ends.first.template receive<int>() == 3);
            ends.first.close();
            CHECK(child.wait() == 0);
        }
        SECTION("removed when the first message arrives") {
            auto ends = MessageQueue::pair();
            ends.second.send(1);
            CHECK(my_mq_names().size() == 3);
            CHECK(ends.first.template receive<int>() == 1);
            CHECK(my_mq_names().empty());
            CHECK_THROWS_AS(ends.second.export_handle(), ChannelError);  // nothing left to open by name
        }
        SECTION("removed when the parent's end closes, even if the child never came") {
            auto ends = MessageQueue::pair();
            const std::string text = ends.second.export_handle();
            ends.first.close();
            CHECK(my_mq_names().empty());
            CHECK_THROWS_AS(MessageQueue::Endpoint::import_handle(text), ChannelError);
        }
        SECTION("removed when an unused pair is destroyed") {
            { auto ends = MessageQueue::pair(); }
            CHECK(my_mq_names().empty());
        }
        SECTION("left by a creator killed before its child came: removed by a later pair(), not before") {
            // A creator that stays alive keeps its names, however old.
            Latch made, done;
            Child alive([&] {
                auto ends = MessageQueue::pair();
                made.open();
                done.wait();
                return 0;
            });
            made.wait();
            const pid_t alive_pid = alive.pid();
            // Another creator is SIGKILLed between pair() and any use.
            Child killed([] {
                auto ends = MessageQueue::pair();
                ::raise(SIGKILL);
                return 0;
            });
            const pid_t killed_pid = killed.pid();
            CHECK(killed.wait() == 128 + SIGKILL);
            CHECK(my_mq_names(killed_pid).size() == 3);
            { auto young = MessageQueue::pair(); }  // within the grace: left alone
            CHECK(my_mq_names(killed_pid).size() == 3);
            std::this_thread::sleep_for(crew::detail::mq_orphan_grace + 100ms);
            { auto later = MessageQueue::pair(); }
            CHECK(my_mq_names(killed_pid).empty());
            CHECK(my_mq_names(alive_pid).size() == 3);
            done.open();
            CHECK(alive.wait() == 0);
            CHECK(my_mq_names(alive_pid).empty());
        }
    }
    CHECK_NOTHING_LEFT(before);
}

TEMPLATE_TEST_CASE("shm/mq: export_handle and import_handle rebuild an endpoint", "[ipc][shm_mq]", SharedMemory, ShmMutex, ShmSemaphore,
                   MessageQueue) {
    const Leaks before;
    const std::string prefix = std::string(TestType::name) + ":";
    {
        auto ends = TestType::pair();
        auto& parent = ends.first;

        SECTION("garbage is refused and nothing is taken over") {
            int pipe_fds[2];
            REQUIRE(::pipe2(pipe_fds, O_CLOEXEC) == 0);
            const int file = ::open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
            REQUIRE(file >= 0);
            const int plain_memfd = ::memfd_create("not-crew", MFD_CLOEXEC);
            REQUIRE(plain_memfd >= 0);
            REQUIRE(::ftruncate(plain_memfd, static_cast<off_t>(crew::detail::shm_block_bytes)) == 0);  // right size, no seals
            const auto r = std::to_string(pipe_fds[0]);
            const std::string hex32(32, 'a');
            const std::string pid = std::to_string(::getpid());
            const std::vector<std::string> garbage = {
                "", ":", "shm:", "mq:", "shm:x:0", "shm:-1:0", "shm:" + r, "shm:" + r + ":2", "shm:" + r + ":0 ",
                "shm:" + r + ":0", "shm:" + std::to_string(file) + ":0", "shm:" + std::to_string(plain_memfd) + ":1",
                "shm:99999999999999999999:0", "shm:1000000:0", "pipe:" + r + "," + r, "mq:crew-mq-" + pid,
                "mq:crew-mq-" + pid + "-" + hex32, "mq:crew-mq-" + pid + "-" + hex32 + ":0",
                "mq:crew-mq-" + pid + "-" + hex32 + ":2", "mq:crew-mq--" + hex32 + ":0",
                "mq:crew-mq-" + pid + "-" + std::string(32, 'A') + ":0", "mq:../../etc/passwd:0",
                "mq:crew-mq-" + pid + "-" + hex32 + "/x:0",
            };
            for (const auto& text : garbage) {
                INFO("handle text: \"" << text << "\"");
                CHECK_THROWS_AS(TestType::Endpoint::import_handle(text, 1 << 20), ChannelError);
            }
            for (int fd : {pipe_fds[0], pipe_fds[1], file, plain_memfd}) {
                CHECK((::fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0);  // untouched
                CHECK(::close(fd) == 0);                           // and still ours
            }
        }
        SECTION("a forked child re-imports its end from the text") {
            const std::string text = ends.second.export_handle();
            CHECK(text.rfind(prefix, 0) == 0);
            Child child([&] {
                ends.first.close();
                auto mine = TestType::Endpoint::import_handle(text, 1 << 20);
                return echo(mine);  // _exit follows: `ends.second` is never used here
            });
            ends.second.close();
            parent.send(std::vector<int>{4, 5, 6});
            CHECK(parent.template receive<std::vector<int>>() == std::vector<int>{4, 5, 6});
            parent.close();
            CHECK(child.wait() == 0);
        }
        SECTION("an exec'd copy of this program imports its end and echoes") {
            Child child([&] {
                ends.first.close();
                const std::string text = ends.second.export_handle();  // in the child, before exec
                const int devnull = ::open("/dev/null", O_WRONLY);
                if (devnull < 0 || ::dup2(devnull, STDOUT_FILENO) < 0) return 96;
                ::setenv("CREW_IPC_SHM_MQ_TEST_HANDLE", text.c_str(), 1);
                char self[] = "ipc_shm_mq_test";
                char test_name[] = "ipc shm mq exec child";
                char* argv[] = {self, test_name, nullptr};
                ::execv("/proc/self/exe", argv);
                return 95;
            });
            ends.second.close();
            for (int i = 0; i < 3; ++i) {
                parent.send(i);
                CHECK(parent.template receive<int>() == i);
            }
            parent.send_bytes(pattern(3 << 20, 4));
            std::vector<std::byte> back;
            parent.receive_bytes(back);
            CHECK(same_bytes(back, pattern(3 << 20, 4)));
            parent.close();
            CHECK(child.wait() == 0);
        }
    }
    CHECK_NOTHING_LEFT(before);
}

TEST_CASE("MessageQueue: a peer that dies inside a queue operation is a ChannelError, never a hang",
          "[ipc][shm_mq]") {
    // Boost's queue mutex is not robust; crew runs every Boost call under a
    // robust guard per direction. The child takes the guard as a send would
    // and is killed there, as if it died inside Boost holding Boost's lock.
    const Leaks before;
    {
        auto ends = MessageQueue::pair();
        const std::string text = ends.second.export_handle();  // "mq:<base>:1"
        const std::string control_name = "/" + text.substr(3, text.rfind(':') - 3) + "-c";
        Child child([&] {
            ends.first.close();
            const int fd = ::shm_open(control_name.c_str(), O_RDWR, 0);
            if (fd < 0) return 90;
            void* p = ::mmap(nullptr, crew::detail::mq_control_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
            if (p == MAP_FAILED) return 91;
            ends.second.bind_to_current_process();
            static_cast<crew::detail::MqControl*>(p)->dir[1].guard.lock();  // side 1 sends on dir[1]
            ::raise(SIGKILL);
            return 92;
        });
        ends.second.close();
        REQUIRE(child.wait() == 128 + SIGKILL);
        std::vector<std::byte> out;
        const auto start = Clock::now();
        try {
            (void)ends.first.receive_bytes_until(out, Clock::now() + 10s);
            FAIL("no exception");
        } catch (const ChannelError& e) {
            CHECK(contains(e.what(), "died in the middle"));
        }
        CHECK(Clock::now() - start < 5s);
        CHECK_THROWS_AS(ends.first.receive_bytes(out), ChannelError);  // and stays so
    }
    CHECK_NOTHING_LEFT(before);
}

TEST_CASE("ShmMutex: a peer stopped inside the monitor never holds a timed wait past its deadline", "[ipc][shm_mq]") {
    // The Mutex policy's signal takes a process-shared mutex to notify. A
    // peer stopped (SIGSTOP, a debugger) while it holds that mutex used to
    // block the other side's timed receive until it was continued; CI hung
    // once so (the parent, which was to send SIGCONT, waited for ever). Here
    // the child notifies without pause, so it is often stopped holding it.
    void* memory = ::mmap(nullptr, sizeof(crew::detail::MonitorSignal), PROT_READ | PROT_WRITE,
                          MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    REQUIRE(memory != MAP_FAILED);
    auto* signal = new (memory) crew::detail::MonitorSignal();
    (void)signal->prepare_wait();  // a waiter announced: every notify takes the mutex
    Child child([&] {
        for (;;) signal->notify_all();
        return 0;
    });
    const int rounds = crew_test::sanitized() ? 100 : 300;
    auto slowest = Clock::duration::zero();
    for (int round = 0; round < rounds; ++round) {
        std::this_thread::sleep_for(std::chrono::microseconds(200 + 37 * (round % 11)));
        REQUIRE(::kill(child.pid(), SIGSTOP) == 0);
        int status = 0;
        REQUIRE(::waitpid(child.pid(), &status, WUNTRACED) == child.pid());  // stopped for sure
        const auto start = Clock::now();
        const auto deadline = start + 20ms;
        const std::uint32_t key = signal->prepare_wait();
        (void)signal->wait(key, &deadline);
        slowest = std::max(slowest, Clock::now() - start);
        REQUIRE(::kill(child.pid(), SIGCONT) == 0);
    }
    const double slowest_ms = std::chrono::duration<double, std::milli>(slowest).count();
    INFO("slowest timed wait: " << slowest_ms << " ms");
    CHECK(slowest < 2s);
    ::kill(child.pid(), SIGKILL);
    (void)child.wait();
    ::munmap(memory, sizeof(crew::detail::MonitorSignal));
}

TEST_CASE("SharedMemory: an end of one Sync policy's channel is refused by another's", "[ipc][shm_mq]") {
    const Leaks before;
    {
        auto ends = ShmMutex::pair();
        const std::string text = ends.second.export_handle();  // "shm-mutex:<fd>:1"
        CHECK_THROWS_AS(SharedMemory::Endpoint::import_handle(text), ChannelError);
        CHECK_THROWS_AS(ShmSemaphore::Endpoint::import_handle(text), ChannelError);
        // The right prefix on the wrong memory: the block's magic tells.
        const std::string as_plain = "shm" + text.substr(text.find(':'));
        try {
            (void)SharedMemory::Endpoint::import_handle(as_plain);
            FAIL("no exception");
        } catch (const ChannelError& e) {
            CHECK(contains(e.what(), "Sync policy"));
        }
        // The right kind takes it (a duplicate fd: import takes ownership).
        const int fd = ::fcntl(std::stoi(text.substr(text.find(':') + 1)), F_DUPFD_CLOEXEC, 0);
        REQUIRE(fd >= 0);
        ends.second = ShmMutex::Endpoint::import_handle("shm-mutex:" + std::to_string(fd) + ":1");
        ends.first.send(std::string("hi"));
        CHECK(ends.second.receive<std::string>() == "hi");
    }
    CHECK_NOTHING_LEFT(before);
}

// Runs only in the exec'd child of the test above (hidden from a normal run).
TEST_CASE("ipc shm mq exec child", "[.]") {
    const char* text = std::getenv("CREW_IPC_SHM_MQ_TEST_HANDLE");
    if (text == nullptr) return;  // run by hand: nothing to do
    try {
        const std::string_view kind = std::string_view(text).substr(0, std::string_view(text).find(':'));
        if (kind == SharedMemory::name) {
            auto end = SharedMemory::Endpoint::import_handle(text, 1 << 30);
            ::_exit(echo(end));
        }
        if (kind == ShmMutex::name) {
            auto end = ShmMutex::Endpoint::import_handle(text, 1 << 30);
            ::_exit(echo(end));
        }
        if (kind == ShmSemaphore::name) {
            auto end = ShmSemaphore::Endpoint::import_handle(text, 1 << 30);
            ::_exit(echo(end));
        }
        auto end = MessageQueue::Endpoint::import_handle(text, 1 << 30);
        ::_exit(echo(end));
    } catch (...) {
        ::_exit(94);
    }
}
