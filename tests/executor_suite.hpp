// The behaviour every executor shares, as one typed test list. A test file
// defines CREW_SUITE_TYPES (a comma-separated list of executor types) and a
// CREW_SUITE_TAG, then includes this file. Tasks are plain functions or
// captureless lambdas so the same list runs on processes.
#pragma once

#include <chrono>
#include <cstdlib>
#include <atomic>
#include <future>
#include <mutex>
#include <optional>
#include <ranges>
#include <system_error>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <crew/crew.hpp>

#include "catch.hpp"
#include "test_support.hpp"

namespace suite {

inline int square(int x) { return x * x; }
inline int add(int a, int b) { return a + b; }
inline void nothing() {}
inline std::string greet(std::string name) { return "hello " + name; }
inline int sleep_then(int ms) {
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    return ms;
}
/// Raises `flag[0]`, then sleeps: lets a test wait until a worker really
/// began the task (on processes too: the flag is shared memory).
inline int started_then_sleep(crew::SharedArray<int> flag, int ms) {
    std::atomic_ref<int>(flag[0]).store(1);
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    return ms;
}
/// Returns `value` once the test raised `gate[0]` (30 s at most): a task
/// that finishes after another one on purpose, not by sleeping longer.
inline int when_released(crew::SharedArray<int> gate, int value) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::atomic_ref<int>(gate[0]).load() == 0 && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return value;
}
inline void release(crew::SharedArray<int>& gate) { std::atomic_ref<int>(gate[0]).store(1); }
/// Raises `flag[0]`, then returns `value` once the test raised `gate[0]`
/// (30 s at most): a task known to have begun, held as long as the test needs.
inline int started_then_wait(crew::SharedArray<int> flag, crew::SharedArray<int> gate, int value) {
    std::atomic_ref<int>(flag[0]).store(1);
    return when_released(gate, value);
}
/// A thread that raises `gate[0]` once `done()` holds (30 s at most): for
/// tasks held at a gate while a call that waits for them (shutdown) runs.
template <class Done>
std::thread release_when(crew::SharedArray<int>& gate, Done done) {
    return std::thread([&gate, done] {
        const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
        while (!done() && std::chrono::steady_clock::now() < until)
            std::this_thread::sleep_for(std::chrono::milliseconds(1));  // polling, not ordering
        release(gate);
    });
}
/// How many of `fs` are ready.
template <class F>
std::size_t ready_count(const std::vector<F>& fs) {
    std::size_t n = 0;
    for (const auto& f : fs) n += f.ready() ? 1 : 0;
    return n;
}
/// Waits (30 s at most) until `flag[0]` was raised; false on timeout.
inline bool wait_started(crew::SharedArray<int>& flag) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::atomic_ref<int>(flag[0]).load() == 0)
        if (std::chrono::steady_clock::now() > until) return false;
        else std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return true;
}
inline int fail_on(int x) {
    if (x == 3 || x == 7) throw std::runtime_error("input " + std::to_string(x) + " failed");
    return x;
}
inline int always_throws() { throw std::invalid_argument("boom from a task"); }
inline int throws_out_of_range(int i) { return std::vector<int>{1, 2, 3}.at(static_cast<std::size_t>(i)); }
inline int throws_system_error() { throw std::system_error(std::make_error_code(std::errc::permission_denied), "open"); }

/// A user exception registered with crew::register_exception.
struct Registered : std::runtime_error {
    explicit Registered(const std::string& what) : std::runtime_error(what) {}
};
/// A user exception nobody registered.
struct Unregistered : std::runtime_error {
    explicit Unregistered(const std::string& what) : std::runtime_error(what) {}
};
inline int throws_registered() { throw Registered("registered failure"); }
inline int throws_unregistered() { throw Unregistered("unregistered failure"); }


}  // namespace suite

using namespace std::chrono_literals;

TEMPLATE_TEST_CASE("submit returns the value, void and arguments", CREW_SUITE_TAG, CREW_SUITE_TYPES) {
    TestType ex(2);
    CHECK(ex.size() == 2);
    auto f = ex.submit(suite::square, 12);
    auto g = ex.submit(suite::add, 40, 2);
    auto h = ex.submit(suite::greet, std::string("crew"));
    auto v = ex.submit(suite::nothing);
    auto l = ex.submit([](int a) { return a * 3; }, 5);
    CHECK(f.get() == 144);
    CHECK(g.get() == 42);
    CHECK(h.get() == "hello crew");
    v.get();
    CHECK(l.get() == 15);
    CHECK_FALSE(f.valid());
}

TEMPLATE_TEST_CASE("map keeps input order for every chunk size", CREW_SUITE_TAG, CREW_SUITE_TYPES) {
    TestType ex(2);
    std::vector<int> inputs(1000);
    for (int i = 0; i < 1000; ++i) inputs[static_cast<std::size_t>(i)] = i;
    for (std::size_t chunk : {std::size_t{0}, std::size_t{1}, std::size_t{7}, std::size_t{1000}, std::size_t{5000}}) {
        auto out = ex.map(suite::square, inputs, chunk);
        REQUIRE(out.size() == inputs.size());
        for (int i = 0; i < 1000; ++i) REQUIRE(out[static_cast<std::size_t>(i)] == i * i);
    }
    CHECK(ex.map(suite::square, std::vector<int>{}).empty());
}

TEMPLATE_TEST_CASE("map rethrows the first failure after all work ends", CREW_SUITE_TAG, CREW_SUITE_TYPES) {
    TestType ex(2);
    std::vector<int> inputs{0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    CHECK_THROWS_WITH(ex.map(suite::fail_on, inputs, 1), Catch::Contains("input 3 failed"));
    // Still serving afterwards.
    CHECK(ex.submit(suite::square, 3).get() == 9);
}

TEMPLATE_TEST_CASE("an exception in a task reaches get()", CREW_SUITE_TAG, CREW_SUITE_TYPES) {
    TestType ex(2);
    auto f = ex.submit(suite::always_throws);
    CHECK_THROWS_WITH(f.get(), Catch::Contains("boom from a task"));
    CHECK(ex.submit(suite::square, 4).get() == 16);
}

TEMPLATE_TEST_CASE("then chains run in order and exceptions skip them", CREW_SUITE_TAG, CREW_SUITE_TYPES) {
    TestType ex(2);
    auto f = ex.submit(suite::square, 3).then([](int x) { return x + 1; }).then([](int x) { return std::to_string(x); });
    CHECK(f.get() == "10");
    bool ran = false;
    auto g = ex.submit(suite::always_throws).then([&](int x) {
        ran = true;
        return x;
    });
    CHECK_THROWS_WITH(g.get(), Catch::Contains("boom"));
    CHECK_FALSE(ran);
    auto v = ex.submit(suite::nothing).then([] { return 5; });
    CHECK(v.get() == 5);
}

TEMPLATE_TEST_CASE("when_all, when_any, as_completed and wait", CREW_SUITE_TAG, CREW_SUITE_TYPES) {
    TestType ex(2);
    SECTION("when_all over a vector keeps order") {
        std::vector<crew::Future<int>> fs;
        for (int i = 0; i < 20; ++i) fs.push_back(ex.submit(suite::square, i));
        auto all = crew::when_all(std::move(fs)).get();
        REQUIRE(all.size() == 20);
        for (int i = 0; i < 20; ++i) CHECK(all[static_cast<std::size_t>(i)] == i * i);
    }
    SECTION("when_all variadic mixes types and void") {
        auto t = crew::when_all(ex.submit(suite::square, 2), ex.submit(suite::greet, std::string("x")),
                                ex.submit(suite::nothing))
                     .get();
        CHECK(std::get<0>(t) == 4);
        CHECK(std::get<1>(t) == "hello x");
    }
    SECTION("when_all fails with the first failure") {
        std::vector<crew::Future<int>> fs;
        fs.push_back(ex.submit(suite::square, 2));
        fs.push_back(ex.submit(suite::always_throws));
        CHECK_THROWS_WITH(crew::when_all(std::move(fs)).get(), Catch::Contains("boom"));
    }
    SECTION("when_any tells which finished first") {
        std::vector<crew::Future<int>> fs;
        crew::SharedArray<int> gate(1);
        fs.push_back(ex.submit(suite::when_released, gate, 400));
        fs.push_back(ex.submit(suite::sleep_then, 1));
        std::size_t first = crew::when_any(fs);
        suite::release(gate);
        CHECK(first == 1);
        CHECK(fs[first].get() == 1);
        CHECK(fs[0].get() == 400);
    }
    SECTION("as_completed yields each future once, as it becomes ready") {
        std::vector<crew::Future<int>> fs;
        crew::SharedArray<int> gate(1);
        fs.push_back(ex.submit(suite::when_released, gate, 300));
        fs.push_back(ex.submit(suite::sleep_then, 1));
        std::vector<int> order;
        for (auto& f : crew::as_completed(fs)) {
            order.push_back(f.get());
            suite::release(gate);  // the first has come: now the other may finish
        }
        CHECK(order == std::vector<int>{1, 300});
    }
    SECTION("wait: first_completed, first_exception, all_completed, timeout") {
        std::vector<crew::Future<int>> fs;
        crew::SharedArray<int> gate(1);
        fs.push_back(ex.submit(suite::when_released, gate, 500));
        fs.push_back(ex.submit(suite::sleep_then, 1));
        auto r = crew::wait(fs, crew::Return::first_completed);
        CHECK(r.done == std::vector<std::size_t>{1});
        CHECK(r.not_done == std::vector<std::size_t>{0});
        auto t = crew::wait(fs, crew::Return::all_completed, 10ms);
        CHECK(t.not_done == std::vector<std::size_t>{0});
        suite::release(gate);
        auto all = crew::wait(fs, crew::Return::all_completed);
        CHECK(all.done.size() == 2);
        CHECK(all.not_done.empty());

        std::vector<crew::Future<int>> gs;
        crew::SharedArray<int> gate2(1);
        gs.push_back(ex.submit(suite::when_released, gate2, 600));
        gs.push_back(ex.submit(suite::always_throws));
        auto e = crew::wait(gs, crew::Return::first_exception);
        suite::release(gate2);
        CHECK(e.done == std::vector<std::size_t>{1});
        CHECK(e.not_done == std::vector<std::size_t>{0});
    }
}

TEMPLATE_TEST_CASE("cancel works on pending tasks only", CREW_SUITE_TAG, CREW_SUITE_TYPES) {
    TestType ex(1);
    crew::SharedArray<int> started(1), gate(1);
    auto running = ex.submit(suite::started_then_wait, started, gate, 300);  // holds the only worker
    std::vector<crew::Future<int>> queued;
    for (int i = 0; i < 300; ++i) queued.push_back(ex.submit(suite::square, i));
    REQUIRE(suite::wait_started(started));
    CHECK_FALSE(running.cancel());
    auto& last = queued.back();
    CHECK(last.cancel());
    CHECK(last.cancel());  // already cancelled: still true (Python's cancel())
    CHECK(last.ready());
    CHECK_THROWS_AS(last.get(), crew::Cancelled);
    suite::release(gate);
    CHECK(running.get() == 300);
    for (std::size_t i = 0; i + 1 < queued.size(); ++i) CHECK(queued[i].get() == static_cast<int>(i * i));
}

TEMPLATE_TEST_CASE("shutdown drains or cancels, then refuses work", CREW_SUITE_TAG, CREW_SUITE_TYPES) {
    SECTION("drain runs everything submitted") {
        TestType ex(2);
        std::vector<crew::Future<int>> fs;
        for (int i = 0; i < 20; ++i) fs.push_back(ex.submit(suite::sleep_then, 5));
        ex.shutdown(crew::Shutdown::drain);
        for (auto& f : fs) {
            CHECK(f.ready());
            CHECK(f.get() == 5);
        }
        CHECK_THROWS_AS(ex.submit(suite::square, 1), crew::ExecutorShutdown);
        CHECK_THROWS_AS(ex.post(suite::nothing), crew::ExecutorShutdown);
        CHECK_THROWS_AS(ex.map(suite::square, std::vector<int>{1, 2}), crew::ExecutorShutdown);
        ex.shutdown();  // twice is fine
    }
    SECTION("cancel_pending cancels what has not started") {
        TestType ex(1);
        crew::SharedArray<int> started(1), gate(1);
        auto running = ex.submit(suite::started_then_wait, started, gate, 200);  // holds the only worker
        std::vector<crew::Future<int>> fs;
        for (int i = 0; i < 300; ++i) fs.push_back(ex.submit(suite::square, i));
        REQUIRE(suite::wait_started(started));
        // The running task ends once shutdown has cancelled what waits.
        auto releaser = suite::release_when(gate, [&fs] { return suite::ready_count(fs) == fs.size(); });
        ex.shutdown(crew::Shutdown::cancel_pending);
        releaser.join();
        CHECK(running.get() == 200);
        std::size_t cancelled = 0;
        for (std::size_t i = 0; i < fs.size(); ++i) {
            REQUIRE(fs[i].ready());
            try {
                int value = fs[i].get();
                CHECK(value == static_cast<int>(i * i));
            } catch (const crew::Cancelled&) {
                ++cancelled;
            }
        }
        CHECK(cancelled > 0);
        CHECK_THROWS_AS(ex.submit(suite::square, 1), crew::ExecutorShutdown);
    }
}

TEMPLATE_TEST_CASE("the destructor drains and joins", CREW_SUITE_TAG, CREW_SUITE_TYPES) {
    crew_test::LeakCheck leaks;  // workers, their descriptors and channels go with the executor
    std::vector<crew::Future<int>> fs;
    {
        TestType ex(2);
        for (int i = 0; i < 10; ++i) fs.push_back(ex.submit(suite::sleep_then, 10));
    }
    for (auto& f : fs) {
        CHECK(f.ready());
        CHECK(f.get() == 10);
    }
}

namespace suite {
inline std::atomic<int> errors_seen{0};
inline void count_error(std::exception_ptr e) {
    try {
        std::rethrow_exception(e);
    } catch (const std::exception& ex) {
        if (std::string(ex.what()).find("boom") != std::string::npos) ++errors_seen;
    }
}
}  // namespace suite

TEMPLATE_TEST_CASE("post delivers exceptions to on_error", CREW_SUITE_TAG, CREW_SUITE_TYPES) {
    suite::errors_seen = 0;
    {
        TestType ex(2, crew::Options{.on_error = suite::count_error});
        for (int i = 0; i < 5; ++i) ex.post(suite::always_throws);
        ex.post(suite::nothing);
        ex.shutdown();
    }
    CHECK(suite::errors_seen == 5);
}

TEMPLATE_TEST_CASE("models crew::executor", CREW_SUITE_TAG, CREW_SUITE_TYPES) {
    STATIC_REQUIRE(crew::executor<TestType>);
}

// Careless and hostile use: each has a defined outcome.

TEMPLATE_TEST_CASE("shutdown from several threads at once, and from a continuation", CREW_SUITE_TAG,
                   CREW_SUITE_TYPES) {
    {
        TestType ex(2);
        std::vector<crew::Future<int>> fs;
        for (int i = 0; i < 20; ++i) fs.push_back(ex.submit(suite::sleep_then, 1));
        std::vector<std::thread> closers;
        for (int i = 0; i < 4; ++i) closers.emplace_back([&ex] { ex.shutdown(); });
        for (auto& t : closers) t.join();
        for (auto& f : fs) CHECK(f.get() == 1);  // drained
        CHECK_THROWS_AS(ex.submit(suite::square, 1), crew::ExecutorShutdown);
    }
    {
        TestType ex(1);
        // The continuation runs on a thread of the executor (or inline); it
        // may shut the executor down, but cannot join itself: it returns.
        auto f = ex.submit(suite::square, 3).then([&ex](int x) {
            ex.shutdown(crew::Shutdown::cancel_pending);
            return x + 1;
        });
        CHECK(f.get() == 10);
        CHECK_THROWS_AS(ex.submit(suite::square, 1), crew::ExecutorShutdown);
    }
}

TEMPLATE_TEST_CASE("futures outlive their executor", CREW_SUITE_TAG, CREW_SUITE_TYPES) {
    crew_test::LeakCheck leaks;
    std::vector<crew::Future<int>> drained, cancelled;
    {
        TestType ex(1);
        for (int i = 0; i < 10; ++i) drained.push_back(ex.submit(suite::sleep_then, 2));
    }  // the destructor drains: every future is ready
    for (auto& f : drained) {
        REQUIRE(f.ready());
        CHECK(f.get() == 2);
    }
    crew::Future<int> running;
    {
        TestType ex(1);
        crew::SharedArray<int> started(1), gate(1);
        running = ex.submit(suite::started_then_wait, started, gate, 300);
        REQUIRE(suite::wait_started(started));  // it began; the rest queue behind it
        for (int i = 0; i < 10; ++i) cancelled.push_back(ex.submit(suite::sleep_then, 20));
        auto releaser =
            suite::release_when(gate, [&cancelled] { return suite::ready_count(cancelled) == cancelled.size(); });
        ex.shutdown(crew::Shutdown::cancel_pending);
        releaser.join();
    }
    REQUIRE(running.ready());
    CHECK(running.get() == 300);
    for (auto& f : cancelled) {
        REQUIRE(f.ready());
        CHECK_THROWS_AS(f.get(), crew::Cancelled);
    }
}

TEMPLATE_TEST_CASE("throwing continuations, submitting from a continuation, dropped futures", CREW_SUITE_TAG,
                   CREW_SUITE_TYPES) {
    TestType ex(2);
    auto thrown = ex.submit(suite::square, 2).then([](int) -> int { throw std::logic_error("from then"); });
    CHECK_THROWS_AS(thrown.get(), std::logic_error);

    // A continuation may submit more work to the same executor. (It must
    // not block on it: for processes, continuations run on the dispatcher
    // thread that the new task may need.)
    std::optional<crew::Future<int>> inner;
    auto outer = ex.submit(suite::square, 2).then([&ex, &inner](int x) {
        inner = ex.submit(suite::square, x);
        return x;
    });
    CHECK(outer.get() == 4);
    REQUIRE(inner.has_value());
    CHECK(inner->get() == 16);

    // Futures dropped unwaited: the tasks still run, nothing leaks or hangs.
    for (int i = 0; i < 200; ++i) (void)ex.submit(suite::square, i);
    CHECK(ex.submit(suite::add, 1, 2).get() == 3);
}

TEMPLATE_TEST_CASE("exceptions come back as their own types", CREW_SUITE_TAG, CREW_SUITE_TYPES) {
    crew::register_exception<suite::Registered>();
    TestType ex(1);
    CHECK_THROWS_AS(ex.submit(suite::always_throws).get(), std::invalid_argument);
    CHECK_THROWS_AS(ex.submit(suite::throws_out_of_range, 7).get(), std::out_of_range);
    try {
        ex.submit(suite::throws_system_error).get();
        FAIL("expected std::system_error");
    } catch (const std::system_error& e) {
        CHECK(e.code() == std::make_error_code(std::errc::permission_denied));
    }
    try {
        ex.submit(suite::throws_registered).get();
        FAIL("expected suite::Registered");
    } catch (const suite::Registered& e) {
        CHECK(std::string(e.what()).find("registered failure") != std::string::npos);
    }
    // Unregistered: itself on threads, crew::RemoteError (a std::runtime_error
    // too) across processes, with the type's name and message.
    try {
        ex.submit(suite::throws_unregistered).get();
        FAIL("expected a std::runtime_error");
    } catch (const crew::RemoteError& e) {
        CHECK(e.type_name().find("Unregistered") != std::string::npos);
        CHECK(e.message() == "unregistered failure");
    } catch (const std::runtime_error& e) {
        CHECK(std::string(e.what()) == "unregistered failure");
    }
}

TEMPLATE_TEST_CASE("cancel stops every task a worker has not begun", CREW_SUITE_TAG, CREW_SUITE_TYPES) {
    TestType ex(1);
    // Submitted at once: a process executor ships them to its one worker in
    // a batch, which must not count as having started them.
    crew::SharedArray<int> gate(1);
    auto running = ex.submit(suite::when_released, gate, 300);  // holds the only worker until all are cancelled
    std::vector<crew::Future<int>> behind;
    for (int i = 0; i < 9; ++i) behind.push_back(ex.submit(suite::square, i));
    int cancelled = 0;
    for (auto& f : behind) cancelled += f.cancel() ? 1 : 0;
    suite::release(gate);
    CHECK(cancelled == 9);
    for (auto& f : behind) {
        CHECK(f.cancel());  // a second cancel of a cancelled task is true too
        REQUIRE(f.wait_for(30s));
        CHECK_THROWS_AS(f.get(), crew::Cancelled);
    }
    REQUIRE(running.wait_for(30s));
    CHECK(running.get() == 300);
    CHECK(ex.submit(suite::square, 5).get() == 25);  // the worker goes on
    REQUIRE(ex.wait_idle_for(30s));
    auto stats = ex.stats();
    CHECK(stats.cancelled == 9);
    CHECK(stats.completed == 2);
    CHECK(stats.queued == 0);
    CHECK(stats.running == 0);
}

TEMPLATE_TEST_CASE("shutdown(cancel_pending) cancels all that has not begun", CREW_SUITE_TAG, CREW_SUITE_TYPES) {
    const std::size_t workers = 2;
    TestType ex(workers);
    std::vector<crew::Future<int>> futures;
    crew::SharedArray<int> gate(1);
    // Each task waits at the gate, which opens once shutdown has cancelled
    // all but the ones workers had begun: none can end and let another begin.
    for (int i = 0; i < 50; ++i) futures.push_back(ex.submit(suite::when_released, gate, 100));
    auto releaser =
        suite::release_when(gate, [&futures] { return suite::ready_count(futures) >= futures.size() - workers; });
    ex.shutdown(crew::Shutdown::cancel_pending);
    releaser.join();
    std::size_t cancelled = 0, ran = 0;
    for (auto& f : futures) {
        REQUIRE(f.ready());
        try {
            const int value = f.get();
            CHECK(value == 100);
            ++ran;
        } catch (const crew::Cancelled&) {
            ++cancelled;
        }
    }
    CHECK(ran <= workers);  // only what a worker had begun
    CHECK(cancelled + ran == 50);
    CHECK_THROWS_AS(ex.submit(suite::square, 1), crew::ExecutorShutdown);
}

TEMPLATE_TEST_CASE("continuations that submit never block, whatever the queue holds", CREW_SUITE_TAG,
                   CREW_SUITE_TYPES) {
    TestType ex(2);
    // More than the queue's ring holds (1024), each continuation submitting
    // one more task: the continuations run on the threads that drain the queue.
    const int n = static_cast<int>(crew_test::scaled(2000)) + 1100;
    std::atomic<int> continued{0};
    std::vector<crew::Future<int>> firsts;
    std::mutex inner_mutex;
    std::vector<crew::Future<int>> inners;
    for (int i = 0; i < n; ++i)
        firsts.push_back(ex.submit(suite::square, 2).then([&](int x) {
            auto f = ex.submit(suite::square, x);
            std::lock_guard lock(inner_mutex);
            inners.push_back(std::move(f));
            continued.fetch_add(1);
            return x;
        }));
    for (auto& f : firsts) {
        REQUIRE(f.wait_for(120s));
        CHECK(f.get() == 4);
    }
    REQUIRE(ex.wait_idle_for(120s));
    CHECK(continued.load() == n);
    std::lock_guard lock(inner_mutex);
    for (auto& f : inners) CHECK(f.get() == 16);
}

TEMPLATE_TEST_CASE("wait_idle waits for posts and submits, stats count them", CREW_SUITE_TAG, CREW_SUITE_TYPES) {
    std::atomic<int> errors{0};
    TestType ex(2, crew::Options{.on_error = [&](std::exception_ptr) { errors.fetch_add(1); }});
    for (int i = 0; i < 100; ++i) ex.post(suite::sleep_then, i % 3);
    for (int i = 0; i < 5; ++i) ex.post(suite::always_throws);
    std::vector<crew::Future<int>> futures;
    for (int i = 0; i < 20; ++i) futures.push_back(ex.submit(suite::fail_on, i));
    REQUIRE(ex.wait_idle_for(60s));
    CHECK(errors.load() == 5);
    for (auto& f : futures) CHECK(f.ready());
    auto stats = ex.stats();
    CHECK(stats.completed == 100 + 18);
    CHECK(stats.failed == 5 + 2);
    CHECK(stats.queued == 0);
    CHECK(stats.running == 0);
    CHECK(stats.workers == ex.size());
    // Still usable, and wait_idle on an idle executor returns at once.
    CHECK(ex.submit(suite::square, 3).get() == 9);
    ex.wait_idle();
}

TEMPLATE_TEST_CASE("imap yields results in order, lazily", CREW_SUITE_TAG, CREW_SUITE_TYPES) {
    TestType ex(2);
    std::vector<int> got;
    for (int r : ex.imap(suite::square, std::views::iota(0, 50), crew::MapOptions{.chunk = 3, .in_flight = 2}))
        got.push_back(r);
    REQUIRE(got.size() == 50);
    for (int i = 0; i < 50; ++i) CHECK(got[static_cast<std::size_t>(i)] == i * i);
    // A failure is thrown at its turn, after every earlier result.
    std::vector<int> before;
    try {
        for (int r : ex.imap(suite::fail_on, std::vector<int>{0, 1, 2, 3, 4, 5}, crew::MapOptions{.chunk = 1}))
            before.push_back(r);
        FAIL("expected the failure of input 3");
    } catch (const std::runtime_error& e) {
        CHECK(std::string(e.what()).find("input 3 failed") != std::string::npos);
    }
    CHECK(before == std::vector<int>{0, 1, 2});
}

TEMPLATE_TEST_CASE("work queued far past the ring drains at shutdown, each task once", CREW_SUITE_TAG,
                   CREW_SUITE_TYPES) {
    // More than the Sync policy's 1024-slot ring holds: the rest waits in the
    // overflow behind it, and moves into the ring while shutdown drains.
    const int n = 3000;
    std::vector<crew::Future<int>> futures;
    {
        TestType ex(1);
        crew::SharedArray<int> gate(1);
        auto first = ex.submit(suite::when_released, gate, 7);  // holds the only worker
        for (int i = 0; i < n; ++i) futures.push_back(ex.submit(suite::square, i));
        // Shut down while the ring is full and the overflow holds the rest.
        auto closing = std::async(std::launch::async, [&] { ex.shutdown(crew::Shutdown::drain); });
        std::this_thread::sleep_for(20ms);  // (lets shutdown begin first; correct either way)
        suite::release(gate);
        REQUIRE(closing.wait_for(120s) == std::future_status::ready);
        CHECK(first.get() == 7);
    }
    for (int i = 0; i < n; ++i) {
        auto& f = futures[static_cast<std::size_t>(i)];
        REQUIRE(f.ready());
        CHECK(f.get() == i * i);
    }
}
