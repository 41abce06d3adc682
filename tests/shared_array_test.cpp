// crew::SharedArray: in this process, through its codec across fork(), and as
// a task's argument and result on both executors, every channel and start
// method; leaves no name in /dev/shm and no descriptor behind.
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <numeric>
#include <ranges>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <crew/crew.hpp>
#include <crew/detail/peer_fd.hpp>
#include <crew/shared_array.hpp>

#include "catch.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
constexpr auto deadline = crew_test::sanitized() ? 120s : 30s;

static_assert(std::ranges::contiguous_range<crew::SharedArray<int>>);
static_assert(std::ranges::sized_range<const crew::SharedArray<double>>);
static_assert(crew::encodable<crew::SharedArray<float>>);
static_assert(crew::encodable<std::vector<crew::SharedArray<std::uint8_t>>>);
static_assert(!std::is_trivially_copyable_v<crew::SharedArray<int>>);

/// Descriptors of this process that hold a SharedArray's memory (the
/// executor's own descriptors come and go as workers start).
std::size_t array_fds() {
    std::size_t n = 0;
    for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
        std::error_code ec;
        n += std::filesystem::read_symlink(e.path(), ec).string().find("memfd:crew-shared-array") !=
             std::string::npos;
    }
    return n;
}

/// Waits until no descriptor of a SharedArray is left (a pin may be let go
/// on a dispatcher thread just after get() returned).
bool no_array_fds_left() {
    const auto until = Clock::now() + 10s;
    while (array_fds() != 0) {
        if (Clock::now() > until) return false;
        std::this_thread::sleep_for(1ms);
    }
    return true;
}

// Tasks.
std::uint64_t fill(crew::SharedArray<std::uint32_t> a, std::uint32_t factor) {
    std::uint64_t sum = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        sum += a[i];
        a[i] = static_cast<std::uint32_t>(i) * factor;
    }
    return sum;  // what the worker saw before writing
}

crew::SharedArray<std::uint32_t> make_filled(std::size_t n) {
    crew::SharedArray<std::uint32_t> a(n);
    for (std::size_t i = 0; i < n; ++i) a[i] = static_cast<std::uint32_t>(i + 7);
    return a;
}

crew::SharedArray<std::uint32_t> add_one(crew::SharedArray<std::uint32_t> a) {
    for (auto& x : a) ++x;
    return a;
}

std::size_t arrays_held() { return array_fds(); }

std::size_t address_space() { return crew_test::status_bytes(::getpid(), "VmSize"); }

/// The file offset of the one SharedArray descriptor this process holds,
/// which it then sets to 4096. An offset belongs to an open file
/// description: a task that finds 4096 got the descriptor an earlier task
/// opened, not a new open() of the same memory.
long mark_array_fd(crew::SharedArray<std::uint32_t> a) {
    long before = -1;
    for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
        std::error_code ec;
        if (std::filesystem::read_symlink(e.path(), ec).string().find("memfd:crew-shared-array") ==
            std::string::npos)
            continue;
        const int fd = std::stoi(e.path().filename().string());
        before = static_cast<long>(::lseek(fd, 0, SEEK_CUR));
        ::lseek(fd, 4096, SEEK_SET);
    }
    return a.empty() ? -1 : before;
}

/// Encodes and decodes 50 SharedArrays of its own: none is held once they
/// are gone (the worker's pin and keep sinks are not the task's).
std::size_t round_trips_own_arrays() {
    for (int i = 0; i < 50; ++i) {
        crew::SharedArray<int> mine(16);
        auto back = crew::decode<crew::SharedArray<int>>(crew::encode(mine));
        if (back.data() != mine.data()) return 1000;
    }
    return array_fds();
}

int write_then_die(crew::SharedArray<std::uint32_t> a) {
    for (std::size_t i = 0; i < a.size(); ++i) a[i] = 0xdead0000u + static_cast<std::uint32_t>(i);
    ::raise(SIGKILL);
    return 0;
}

std::size_t sizes(std::vector<crew::SharedArray<double>> arrays, crew::SharedArray<char> empty) {
    std::size_t total = empty.size();
    for (auto& a : arrays) {
        total += a.size();
        a[0] = 1.5;
    }
    return total;
}

template <class F>
auto ready(crew::Future<F>& f) {
    REQUIRE(f.wait_for(deadline));
    return f.get();
}

const char* start_name(crew::Start s) {
    return s == crew::Start::fork ? "fork" : s == crew::Start::spawn ? "spawn" : "fork_server";
}

using Channels = std::tuple<crew::ipc::SharedMemory, crew::ipc::Pipe, crew::ipc::Socket, crew::ipc::MessageQueue>;

}  // namespace

TEST_CASE("a SharedArray holds n zero-filled elements, indexed and spanned", "[shared_array]") {
    crew::SharedArray<std::uint64_t> a(1000);
    REQUIRE(a.size() == 1000);
    CHECK_FALSE(a.empty());
    REQUIRE(a.data() != nullptr);
    CHECK(std::all_of(a.begin(), a.end(), [](auto x) { return x == 0; }));
    for (std::size_t i = 0; i < a.size(); ++i) a[i] = i * i;
    CHECK(a[999] == 999u * 999u);
    std::span<std::uint64_t> s = a.span();
    CHECK(s.size() == 1000);
    CHECK(s.data() == a.data());
    CHECK(std::accumulate(s.begin(), s.end(), std::uint64_t{0}) == 332833500u);

    const auto& c = a;
    std::span<const std::uint64_t> cs = c.span();
    CHECK(cs[10] == 100);
    CHECK(c[11] == 121);
    CHECK(std::ranges::distance(c.begin(), c.end()) == 1000);
    CHECK(*(c.cbegin() + 3) == 9);

    // Odd sizes: not a multiple of a page.
    crew::SharedArray<char> odd(4097);
    CHECK(odd.size() == 4097);
    odd[4096] = 'x';
    CHECK(odd[4096] == 'x');
    CHECK(odd[0] == 0);
}

TEST_CASE("copies of a SharedArray share its memory; moves take the handle", "[shared_array]") {
    crew::SharedArray<int> a(16);
    crew::SharedArray<int> b = a;
    CHECK(b.data() == a.data());
    b[3] = 42;
    CHECK(a[3] == 42);

    crew::SharedArray<int> c;
    c = b;
    c[4] = 7;
    CHECK(a[4] == 7);

    crew::SharedArray<int> d = std::move(c);
    CHECK(c.empty());  // NOLINT(bugprone-use-after-move): moved-from is empty by contract
    CHECK(c.data() == nullptr);
    CHECK(d[4] == 7);

    a = crew::SharedArray<int>();  // a lets go; b and d still hold the memory
    CHECK(a.empty());
    CHECK(b[3] == 42);
    d = std::move(d);  // self-move keeps it
    CHECK(d.size() == 16);
}

TEST_CASE("an empty SharedArray holds nothing", "[shared_array]") {
    crew_test::LeakCheck leaks;
    crew::SharedArray<float> none;
    crew::SharedArray<float> zero(0);
    CHECK(none.empty());
    CHECK(zero.size() == 0);
    CHECK(zero.data() == nullptr);
    CHECK(zero.begin() == zero.end());
    CHECK(zero.span().empty());
    leaks.check();
    auto back = crew::decode<crew::SharedArray<float>>(crew::encode(zero));
    CHECK(back.empty());
}

TEST_CASE("a SharedArray has no name and holds one descriptor until its last handle goes", "[shared_array]") {
    crew_test::LeakCheck leaks;
    const auto fds = leaks.before().fds;
    const auto& names = leaks.before().names;
    {
        crew::SharedArray<double> a(1 << 20);
        CHECK(crew_test::open_fds() == fds + 1);
        auto b = a;
        auto c = b;
        CHECK(crew_test::open_fds() == fds + 1);
        CHECK(crew_test::ipc_names() == names);
        a = {};
        b = {};
        CHECK(crew_test::open_fds() == fds + 1);
        c[5] = 1;
    }
    leaks.check();
}

TEST_CASE("SharedArray rejects sizes that cannot exist and reports memory it cannot reserve", "[shared_array]") {
    CHECK_THROWS_AS(crew::SharedArray<std::uint64_t>(std::size_t(-1) / 4), crew::InvalidArgument);

    // In a child with a 1 MiB file size limit, a 2 MiB array cannot be
    // reserved: a clear crew::ChannelError at construction, not a signal later.
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        std::signal(SIGXFSZ, SIG_IGN);
        rlimit limit{1 << 20, 1 << 20};
        ::setrlimit(RLIMIT_FSIZE, &limit);
        int code = 1;
        try {
            crew::SharedArray<char> a(2 << 20);
        } catch (const crew::ChannelError& e) {
            code = std::string(e.what()).find("cannot reserve") != std::string::npos ? 0 : 2;
        } catch (...) {
            code = 3;
        }
        ::_exit(code);
    }
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("the SharedArray codec sends a small handle to the same memory", "[shared_array][codec]") {
    crew::SharedArray<std::uint32_t> small(10), big(1 << 22);
    const auto small_bytes = crew::encode(small);
    CHECK(small_bytes.size() == crew::encode(big).size());  // whatever its size
    CHECK(small_bytes.size() == crew::Codec<crew::SharedArray<std::uint32_t>>::min_encoded_size);

    const auto fds = crew_test::open_fds();
    {
        // Decoded where the memory is mapped already: another handle to the
        // same mapping, no second descriptor.
        auto again = crew::decode<crew::SharedArray<std::uint32_t>>(crew::encode(big));
        CHECK(crew_test::open_fds() == fds);
        REQUIRE(again.size() == big.size());
        CHECK(again.data() == big.data());
        again[12345] = 99;
        CHECK(big[12345] == 99);
    }
    CHECK(crew_test::open_fds() == fds);

    // Another element type, or bytes cut short: crew::CodecError.
    CHECK_THROWS_AS(crew::decode<crew::SharedArray<float>>(small_bytes), crew::CodecError);
    CHECK_THROWS_AS(crew::decode<crew::SharedArray<std::int32_t>>(small_bytes), crew::CodecError);
    auto cut = small_bytes;
    cut.pop_back();
    CHECK_THROWS_AS(crew::decode<crew::SharedArray<std::uint32_t>>(cut), crew::CodecError);
    // A count that does not match the file's size.
    auto wrong = small_bytes;
    wrong[16] = std::byte{11};
    CHECK_THROWS_AS(crew::decode<crew::SharedArray<std::uint32_t>>(wrong), crew::CodecError);
}

namespace {
struct Frame {  // a plain struct: crew::Codec encodes it member by member
    crew::SharedArray<float> pixels;
    int width = 0;
    std::string label;
};
}  // namespace

TEST_CASE("a SharedArray inside a struct or a container travels as a handle", "[shared_array][codec]") {
    Frame f{crew::SharedArray<float>(64), 8, "frame"};
    f.pixels[63] = 2.5f;
    auto back = crew::decode<Frame>(crew::encode(f));
    CHECK(back.width == 8);
    CHECK(back.label == "frame");
    CHECK(back.pixels.data() == f.pixels.data());
    CHECK(back.pixels[63] == 2.5f);

    std::vector<crew::SharedArray<int>> many(3, crew::SharedArray<int>(5));
    auto again = crew::decode<std::vector<crew::SharedArray<int>>>(crew::encode(many));
    REQUIRE(again.size() == 3);
    again[2][4] = 9;
    CHECK(many[0][4] == 9);  // all three are one array
}

TEST_CASE("decoding a SharedArray its sender let go of throws CodecError", "[shared_array][codec]") {
    std::vector<std::byte> bytes;
    {
        crew::SharedArray<int> gone(100);
        bytes = crew::encode(gone);
    }
    try {
        (void)crew::decode<crew::SharedArray<int>>(bytes);
        FAIL("decoded an array nobody holds");
    } catch (const crew::CodecError& e) {
        CHECK(std::string(e.what()).find("sender let go of it") != std::string::npos);
    }
    // Its descriptor number reused by another file: told apart, not opened.
    crew::SharedArray<int> other(100);
    CHECK_THROWS_AS(crew::decode<crew::SharedArray<int>>(bytes), crew::CodecError);

    // A handle naming something else than shared memory (here a pipe of
    // ours): refused before it is opened.
    int p[2];
    REQUIRE(::pipe(p) == 0);
    const crew::detail::PeerFd pipe_end = crew::detail::export_fd(p[0]);
    CHECK(crew::detail::open_peer_fd(pipe_end, O_RDWR) == -EINVAL);
    auto forged = crew::encode(other);
    std::memcpy(forged.data() + 24, &pipe_end, sizeof pipe_end);
    CHECK_THROWS_AS(crew::decode<crew::SharedArray<int>>(forged), crew::CodecError);
    ::close(p[0]);
    ::close(p[1]);
}

TEST_CASE("the pin sink keeps an encoded SharedArray alive after its handles go", "[shared_array][codec]") {
    std::vector<std::shared_ptr<const void>> pins;
    std::vector<std::byte> bytes;
    {
        crew::detail::PinScope scope(pins);
        crew::SharedArray<int> a(8);
        a[2] = 5;
        bytes = crew::encode(a);
    }
    CHECK(crew::detail::current_pins == nullptr);
    REQUIRE(pins.size() == 1);
    auto back = crew::decode<crew::SharedArray<int>>(bytes);
    CHECK(back[2] == 5);
    pins.clear();
    CHECK(back[2] == 5);  // the receiver's own mapping
}

TEST_CASE("a SharedArray crosses fork() through a crew::ipc::Pipe both ways", "[shared_array][codec][process]") {
    const auto names = crew_test::ipc_names();
    auto [parent_end, child_end] = crew::ipc::Pipe::pair();
    crew::SharedArray<std::uint32_t> mine(100000);
    for (std::size_t i = 0; i < mine.size(); ++i) mine[i] = static_cast<std::uint32_t>(i);

    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        parent_end.close();
        int code = 0;
        try {
            // The parent's array: add 1 to every element in place.
            auto theirs = child_end.receive<crew::SharedArray<std::uint32_t>>();
            for (auto& x : theirs) ++x;
            // An array of our own, kept alive until the parent says it has it.
            crew::SharedArray<std::uint32_t> ours(50000);
            std::fill(ours.begin(), ours.end(), 77u);
            child_end.send(ours);
            code = child_end.receive<int>() == 1 ? 0 : 4;
            ours[0] = 78;  // the parent still holds it: it sees this
            child_end.send(2);
        } catch (...) {
            code = 5;
        }
        ::_exit(code);
    }
    child_end.close();
    parent_end.send(mine);  // mine stays alive here: the child can open it
    std::vector<std::byte> reply;
    REQUIRE(parent_end.receive_bytes_until(reply, Clock::now() + deadline));
    // Decoded by several threads at once: one mapping, one descriptor.
    const auto fds = crew_test::open_fds();
    std::vector<crew::SharedArray<std::uint32_t>> copies(4);
    {
        std::vector<std::thread> threads;
        for (auto& c : copies)
            threads.emplace_back([&c, &reply] { c = crew::decode<crew::SharedArray<std::uint32_t>>(reply); });
        for (auto& t : threads) t.join();
    }
    auto from_child = copies[0];
    for (const auto& c : copies) CHECK(c.data() == from_child.data());
    CHECK(crew_test::open_fds() == fds + 1);
    copies.clear();
    // The child wrote into our array before it sent its own.
    CHECK(mine[0] == 1);
    CHECK(mine[99999] == 100000);
    REQUIRE(from_child.size() == 50000);
    CHECK(from_child[49999] == 77);
    parent_end.send(1);
    REQUIRE(parent_end.receive_bytes_until(reply, Clock::now() + deadline));
    CHECK(from_child[0] == 78);

    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    // The child is gone; its array lives on here.
    CHECK(from_child[1] == 77);
    CHECK(crew_test::ipc_names() == names);
}

TEMPLATE_LIST_TEST_CASE("a worker writes a SharedArray in place and the parent reads it", "[shared_array][process]",
                        Channels) {
    const auto start = GENERATE(crew::Start::fork, crew::Start::spawn, crew::Start::fork_server);
    CAPTURE(start_name(start));
    const auto names = crew_test::ipc_names();
    crew::ProcessExecutor<TestType> ex(1, crew::Options{.start = start});
    REQUIRE(array_fds() == 0);
    {
        crew::SharedArray<std::uint32_t> a(1 << 20);
        a[5] = 3;
        a[6] = 4;
        auto f = ex.submit(fill, a, 3u);
        CHECK(ready(f) == 7);  // the worker saw what we wrote
        CHECK(a[0] == 0);
        CHECK(a[1] == 3);
        CHECK(a[(1 << 20) - 1] == ((1u << 20) - 1) * 3);

        // Several arrays in one argument (and an empty one) reach one task.
        std::vector<crew::SharedArray<double>> arrays{crew::SharedArray<double>(3), crew::SharedArray<double>(5)};
        auto g = ex.submit(sizes, arrays, crew::SharedArray<char>());
        CHECK(ready(g) == 8);
        CHECK(arrays[0][0] == 1.5);
        CHECK(arrays[1][0] == 1.5);
    }
    CHECK(no_array_fds_left());
    auto held = ex.submit(arrays_held);
    CHECK(ready(held) == 0);  // the worker let go too
    CHECK(crew_test::ipc_names() == names);
}

TEMPLATE_LIST_TEST_CASE("a worker keeps an array mapped for the next task and unmaps it when idle",
                        "[shared_array][process]", Channels) {
    const auto start = GENERATE(crew::Start::fork, crew::Start::spawn);
    CAPTURE(start_name(start));
    crew::ProcessExecutor<TestType> ex(1, crew::Options{.start = start});
    crew::SharedArray<std::uint32_t> a(1 << 16);
    auto first = ex.submit(mark_array_fd, a);
    CHECK(ready(first) == 0);  // opened for this task
    auto again = ex.submit(mark_array_fd, a);
    CHECK(ready(again) == 4096);  // the same descriptor: not opened again
    // Idle for a while (20 ms in the worker; longer here, for slow machines),
    // the worker lets go: the next task opens the array anew.
    long after_idle = -1;
    const auto until = Clock::now() + deadline;
    for (auto pause = 100ms; Clock::now() < until; pause *= 2) {
        std::this_thread::sleep_for(pause);
        auto f = ex.submit(mark_array_fd, a);
        after_idle = ready(f);
        if (after_idle == 0) break;
    }
    CHECK(after_idle == 0);
    // A task given no array finds none held: the last task's are let go
    // before a task runs, not after.
    auto none = ex.submit(arrays_held);
    CHECK(ready(none) == 0);
    // What a task encodes and decodes itself is not held for it.
    auto own = ex.submit(round_trips_own_arrays);
    CHECK(ready(own) == 0);
}

TEST_CASE("under memory_limit a worker lets go of the arrays it kept before it fails to map a new one",
          "[shared_array][process]") {
    // Sanitizers reserve terabytes of address space; RLIMIT_AS breaks them.
    if (crew_test::sanitized()) return;
    // Room for what a fresh worker maps, one array and 228 MiB to spare,
    // not for two arrays.
    constexpr std::size_t array_bytes = std::size_t{256} << 20;
    crew::ProcessExecutor<> probe(1);
    auto measured = probe.submit(address_space);
    const std::size_t worker_maps = ready(measured);
    REQUIRE(worker_maps > 0);
    crew::ProcessExecutor<> ex(1, crew::Options{.memory_limit = worker_maps + array_bytes + (std::size_t{228} << 20)});
    const std::size_t n = array_bytes / sizeof(std::uint32_t);
    crew::SharedArray<std::uint32_t> a(n), b(n);
    auto first = ex.submit(mark_array_fd, a);
    CHECK(ready(first) == 0);
    auto second = ex.submit(mark_array_fd, b);  // `a` is still mapped in the worker when `b` is decoded
    CHECK(ready(second) == 0);
}

TEMPLATE_LIST_TEST_CASE("a worker killed while it holds a SharedArray leaves the memory valid here",
                        "[shared_array][process]", Channels) {
    crew::ProcessExecutor<TestType> ex(1, crew::Options{.start = crew::Start::fork});
    crew::SharedArray<std::uint32_t> a(4096);
    auto f = ex.submit(write_then_die, a);
    REQUIRE(f.wait_for(deadline));
    CHECK_THROWS_AS(f.get(), crew::WorkerDied);
    CHECK(a[0] == 0xdead0000u);
    CHECK(a[4095] == 0xdead0000u + 4095);
    // A new worker takes the old one's place and gets the same memory.
    auto g = ex.submit(fill, a, 1u);
    CHECK(ready(g) > 0);
    CHECK(a[4095] == 4095);
}

// Results, and arguments whose only handle was a temporary, need the sender
// to keep the array until the receiver opened it: ProcessExecutor's pins.
TEMPLATE_LIST_TEST_CASE("a worker returns a SharedArray it created or received", "[shared_array][process][pins]",
                        Channels) {
    const auto start = GENERATE(crew::Start::fork, crew::Start::spawn, crew::Start::fork_server);
    CAPTURE(start_name(start));
    crew::ProcessExecutor<TestType> ex(1, crew::Options{.start = start});
    REQUIRE(array_fds() == 0);
    {
        auto f = ex.submit(make_filled, std::size_t{300000});
        auto made = ready(f);
        REQUIRE(made.size() == 300000);
        CHECK(made[0] == 7);
        CHECK(made[299999] == 300006);

        // A temporary argument: no handle is left here after submit().
        auto g = ex.submit(add_one, make_filled(1000));
        auto back = ready(g);
        REQUIRE(back.size() == 1000);
        CHECK(back[999] == 1007);

        // Handed on and back: the same memory as ours.
        auto h = ex.submit(add_one, made);
        auto again = ready(h);
        CHECK(made[0] == 8);
        again[1] = 1;
        CHECK(made[1] == 1);
    }
    CHECK(no_array_fds_left());
    auto held = ex.submit(arrays_held);
    CHECK(ready(held) == 0);  // the worker let go too
}

TEST_CASE("a SharedArray on ThreadExecutor is plain shared memory", "[shared_array][thread]") {
    crew::ThreadExecutor<> ex(2);
    crew::SharedArray<std::uint32_t> a(1000);
    crew_test::LeakCheck leaks;
    auto f = ex.submit(fill, a, 2u);
    CHECK(ready(f) == 0);
    CHECK(a[999] == 1998);
    auto g = ex.submit(make_filled, std::size_t{10});
    auto made = ready(g);
    CHECK(made[9] == 16);
    auto h = ex.submit([](crew::SharedArray<std::uint32_t> x) { return x.data(); }, a);
    CHECK(ready(h) == a.data());  // a copy, not a new mapping
    made = {};
    CHECK(crew_test::open_fds() == leaks.before().fds);

    // Disjoint halves written by two tasks at once.
    crew::SharedArray<int> halves(2000);
    auto write = [](crew::SharedArray<int> x, std::size_t from, std::size_t to) {
        for (std::size_t i = from; i < to; ++i) x[i] = static_cast<int>(i);
    };
    auto p = ex.submit(write, halves, std::size_t{0}, std::size_t{1000});
    auto q = ex.submit(write, halves, std::size_t{1000}, std::size_t{2000});
    REQUIRE(p.wait_for(deadline));
    REQUIRE(q.wait_for(deadline));
    p.get();
    q.get();
    CHECK(halves[0] == 0);
    CHECK(halves[1999] == 1999);
}
