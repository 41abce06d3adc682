// What MpiExecutor adds to the shared suite: crash isolation on a serving
// rank, large messages in parts, exceptions by type, shutdown while tasks
// run, cancelling a task already shipped to a rank, per-rank options, stats
// and wait_idle. Run by CTest under `mpirun -n 3`.
#include <crew/mpi.hpp>

#include <chrono>
#include <csignal>
#include <ranges>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include "catch.hpp"

static_assert(crew::executor<crew::MpiExecutor<>>, "MpiExecutor models crew::executor");

// Every message over 1 MiB travels in parts, so the 16 MiB cases below take
// the path a message over 2^31-1 bytes takes. Set during static
// initialisation: every rank (also the serving ones, which never run main)
// uses the same size.
static const bool small_parts = (crew::detail::mpi_part_bytes = std::size_t{1} << 20, true);

namespace {

int square(int x) { return x * x; }
int crash_on(int x) {
    if (x == 5) std::raise(SIGSEGV);
    return x * 10;
}
int sleep_ms(int ms) {
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    return ms;
}
std::vector<std::uint8_t> echo_plus_one(std::vector<std::uint8_t> v) {
    for (auto& b : v) b = static_cast<std::uint8_t>(b + 1);
    return v;
}
int throws_invalid() { throw std::invalid_argument("bad input on a rank"); }
long worker_parent() { return static_cast<long>(::getppid()); }
int hang() {
    for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
}
std::string configured;  // set by configure() in each worker
void configure(std::string text, int n) { configured = text + std::to_string(n); }
std::string read_configured() { return configured; }

}  // namespace

using namespace std::chrono_literals;
using Mpi = crew::MpiExecutor<>;

TEST_CASE("a task that segfaults fails alone with WorkerDied; the job goes on", "[mpi]") {
    Mpi ex(2);
    std::vector<crew::Future<int>> fs;
    for (int i = 0; i < 16; ++i) fs.push_back(ex.submit(crash_on, i));
    int values = 0, died = 0;
    for (int i = 0; i < 16; ++i) {
        try {
            const int v = fs[static_cast<std::size_t>(i)].get();  // outside CHECK, which would catch
            CHECK(v == i * 10);
            ++values;
        } catch (const crew::WorkerDied& e) {
            CHECK(i == 5);
            CHECK(e.signal() == SIGSEGV);
            CHECK_THAT(e.what(), Catch::Contains("rank"));
            ++died;
        }
    }
    CHECK(values == 15);
    CHECK(died == 1);
    for (int i = 0; i < 8; ++i) CHECK(ex.submit(square, i).get() == i * i);  // later tasks are fine
    ex.wait_idle();  // the counters move just after a future is ready
    auto s = ex.stats();
    CHECK(s.failed == 1);
    CHECK(s.completed == 23);
}

TEST_CASE("a 16 MiB argument and result travel whole, in parts", "[mpi]") {
    Mpi ex(2);
    std::vector<std::uint8_t> big(std::size_t{16} << 20);
    for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<std::uint8_t>(i * 7);
    auto a = ex.submit(echo_plus_one, big);
    auto b = ex.submit(echo_plus_one, big);  // both ranks at once
    auto ra = a.get();
    auto rb = b.get();
    REQUIRE(ra.size() == big.size());
    bool same = true;
    for (std::size_t i = 0; i < big.size(); ++i) same = same && ra[i] == static_cast<std::uint8_t>(big[i] + 1);
    CHECK(same);
    CHECK(ra == rb);
}

TEST_CASE("exceptions cross ranks", "[mpi]") {
    Mpi ex(2);
    CHECK_THROWS_WITH(ex.submit(throws_invalid).get(), Catch::Contains("bad input on a rank"));
}

TEST_CASE("std::invalid_argument from a rank is caught as itself", "[mpi]") {
    Mpi ex(2);
    CHECK_THROWS_AS(ex.submit(throws_invalid).get(), std::invalid_argument);
    CHECK(ex.submit(square, 3).get() == 9);
}

TEST_CASE("shutdown with tasks running: drain, cancel_pending, kill", "[mpi]") {
    SECTION("drain waits for them") {
        Mpi ex(2);
        std::vector<crew::Future<int>> fs;
        for (int i = 0; i < 6; ++i) fs.push_back(ex.submit(sleep_ms, 50));
        ex.shutdown();
        for (auto& f : fs) CHECK(f.get() == 50);
    }
    SECTION("cancel_pending lets the running ones finish") {
        Mpi ex(1);
        auto running = ex.submit(sleep_ms, 300);
        std::this_thread::sleep_for(100ms);
        std::vector<crew::Future<int>> fs;
        for (int i = 0; i < 20; ++i) fs.push_back(ex.submit(square, i));
        ex.shutdown(crew::Shutdown::cancel_pending);
        CHECK(running.get() == 300);
        for (auto& f : fs) CHECK_THROWS_AS(f.get(), crew::Cancelled);
    }
    SECTION("kill stops a task that hangs, promptly") {
        Mpi ex(2);
        auto stuck = ex.submit(hang);
        auto other = ex.submit(hang);
        std::this_thread::sleep_for(200ms);
        const auto start = std::chrono::steady_clock::now();
        ex.shutdown(crew::Shutdown::kill);
        CHECK(std::chrono::steady_clock::now() - start < 20s);
        CHECK_THROWS_AS(stuck.get(), crew::Cancelled);
        CHECK_THROWS_AS(other.get(), crew::Cancelled);
        CHECK_THROWS_AS(ex.submit(square, 1), crew::ExecutorShutdown);
    }
}

TEST_CASE("a shipped task can be cancelled until a worker begins it", "[mpi]") {
    Mpi ex(1);
    auto running = ex.submit(sleep_ms, 400);
    std::this_thread::sleep_for(100ms);  // shipped and started
    CHECK_FALSE(running.cancel());
    auto queued = ex.submit(square, 4);
    CHECK(queued.cancel());
    CHECK_THROWS_AS(queued.get(), crew::Cancelled);
    CHECK(running.get() == 400);
    CHECK(ex.submit(square, 5).get() == 25);
}

TEST_CASE("task_timeout applies on each rank", "[mpi]") {
    Mpi ex(2, crew::Options{.task_timeout = 300ms});
    auto slow = ex.submit(hang);
    CHECK_THROWS_AS(slow.get(), crew::Timeout);
    CHECK(ex.submit(square, 6).get() == 36);
}

TEST_CASE("workers are processes of the serving ranks, not of rank 0", "[mpi]") {
    Mpi ex(2);
    auto a = ex.submit(worker_parent).get();
    CHECK(a != static_cast<long>(::getpid()));
    CHECK(ex.size() == 2);
}

TEST_CASE("wait_idle, wait_idle_for and stats", "[mpi]") {
    Mpi ex(2);
    for (int i = 0; i < 50; ++i) ex.post(square, i);
    std::vector<crew::Future<int>> fs;
    for (int i = 0; i < 4; ++i) fs.push_back(ex.submit(sleep_ms, 100));
    CHECK_FALSE(ex.wait_idle_for(1ms));
    ex.wait_idle();
    for (auto& f : fs) CHECK(f.ready());
    auto s = ex.stats();
    CHECK(s.completed == 54);
    CHECK(s.queued == 0);
    CHECK(s.running == 0);
    CHECK(s.workers == 2);
    CHECK(ex.wait_idle_for(1ms));
}

TEST_CASE("more workers than ranks: each rank runs several", "[mpi]") {
    Mpi ex(4);
    CHECK(ex.size() == 4);
    std::vector<crew::Future<int>> fs;
    for (int i = 0; i < 8; ++i) fs.push_back(ex.submit(sleep_ms, 100));
    for (auto& f : fs) CHECK(f.get() == 100);
}

TEST_CASE("imap yields in order, drawing lazily", "[mpi]") {
    Mpi ex(2);
    int expected = 0;
    for (int v : ex.imap(square, std::views::iota(0, 200), crew::MapOptions{.chunk = 8, .in_flight = 3})) {
        CHECK(v == expected * expected);
        ++expected;
    }
    CHECK(expected == 200);
}

TEST_CASE("an initializer with arguments runs in every worker of every rank", "[mpi]") {
    const std::string computed = "rank-0 value ";
    Mpi ex(3, crew::Options{.initializer = crew::initializer(&configure, computed, 42)});
    std::vector<crew::Future<std::string>> fs;
    for (int i = 0; i < 9; ++i) fs.push_back(ex.submit(read_configured));
    for (auto& f : fs) CHECK(f.get() == "rank-0 value 42");
    CHECK(read_configured().empty());  // not on rank 0
}
