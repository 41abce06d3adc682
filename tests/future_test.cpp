// Future and Promise on their own, and the combinators, driven by promises so
// every interleaving the test wants is forced, not hoped for.
#include <atomic>
#include <chrono>
#include <coroutine>
#include <exception>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <crew/future.hpp>
#include <crew/thread_executor.hpp>
#include <crew/when.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;

TEST_CASE("a promise completes its future once", "[future]") {
    crew::Promise<int> p;
    auto f = p.get_future();
    CHECK(f.valid());
    CHECK_FALSE(f.ready());
    CHECK_FALSE(f.wait_for(5ms));
    CHECK_FALSE(f.wait_until(std::chrono::system_clock::now() + 5ms));
    CHECK_THROWS_AS(p.get_future(), crew::Error);
    p.set_value(7);
    CHECK(f.ready());
    CHECK(f.wait_for(0ms));
    CHECK_THROWS_AS(p.set_value(8), crew::Error);
    CHECK(f.get() == 7);
    CHECK_FALSE(f.valid());
    CHECK_THROWS_AS(f.get(), crew::Error);
    CHECK_THROWS_AS(crew::Future<int>{}.wait(), crew::Error);
}

TEST_CASE("get() blocks until another thread sets the value", "[future]") {
    crew::Promise<std::string> p;
    auto f = p.get_future();
    std::thread t([&] {
        std::this_thread::sleep_for(20ms);
        p.set_value("late");
    });
    CHECK(f.get() == "late");
    t.join();
}

TEST_CASE("void futures and exceptions", "[future]") {
    crew::Promise<void> p;
    auto f = p.get_future();
    p.set_exception(std::make_exception_ptr(std::out_of_range("nope")));
    CHECK_THROWS_AS(f.get(), std::out_of_range);
}

TEST_CASE("a broken promise fails its future", "[future]") {
    crew::Future<int> f;
    {
        crew::Promise<int> p;
        f = p.get_future();
    }
    CHECK_THROWS_WITH(f.get(), Catch::Contains("broken promise"));
    crew::Promise<int> unused;  // destroyed without get_future(): no leak (ASan checks)
}

TEST_CASE("cancel succeeds only before completion", "[future]") {
    crew::Promise<int> p;
    auto f = p.get_future();
    CHECK(f.cancel());
    CHECK(f.cancel());  // already cancelled: still true (DESIGN.md)
    p.set_value(1);  // ignored: the consumer gave up
    CHECK_THROWS_AS(f.get(), crew::Cancelled);

    crew::Promise<int> q;
    auto g = q.get_future();
    q.set_value(2);
    CHECK_FALSE(g.cancel());
    CHECK(g.get() == 2);
}

TEST_CASE("then runs once, inline when ready, on the completing thread otherwise", "[future]") {
    crew::Promise<int> p;
    std::atomic<int> calls{0};
    std::thread::id ran_on;
    auto f = p.get_future().then([&](int x) {
        ++calls;
        ran_on = std::this_thread::get_id();
        return x * 2;
    });
    std::thread t([&] { p.set_value(21); });
    auto setter = t.get_id();
    t.join();
    CHECK(f.get() == 42);
    CHECK(calls == 1);
    CHECK(ran_on == setter);

    crew::Promise<int> ready;
    ready.set_value(1);
    auto g = ready.get_future().then([&](int x) {
        ran_on = std::this_thread::get_id();
        return x + 1;
    });
    CHECK(ran_on == std::this_thread::get_id());
    CHECK(g.get() == 2);
}

TEST_CASE("then skips on failure and carries a throwing continuation's exception", "[future]") {
    crew::Promise<int> p;
    bool ran = false;
    auto f = p.get_future().then([&](int) {
        ran = true;
        return 0;
    });
    p.set_exception(std::make_exception_ptr(std::logic_error("first")));
    CHECK_THROWS_WITH(f.get(), "first");
    CHECK_FALSE(ran);

    crew::Promise<void> q;
    auto g = q.get_future().then([] { throw std::runtime_error("in continuation"); }).then([] { return 1; });
    q.set_value();
    CHECK_THROWS_WITH(g.get(), "in continuation");
}

TEST_CASE("when_all collects in order and waits for every input", "[when]") {
    std::vector<crew::Promise<int>> ps(5);
    std::vector<crew::Future<int>> fs;
    for (auto& p : ps) fs.push_back(p.get_future());
    auto all = crew::when_all(fs);  // an lvalue vector is taken over
    for (auto& f : fs) CHECK_FALSE(f.valid());
    for (int i = 4; i >= 0; --i) {
        CHECK_FALSE(all.ready());
        ps[static_cast<std::size_t>(i)].set_value(i * 10);
    }
    CHECK(all.get() == std::vector<int>{0, 10, 20, 30, 40});

    std::vector<crew::Future<void>> vs;
    crew::Promise<void> v1, v2;
    vs.push_back(v1.get_future());
    vs.push_back(v2.get_future());
    auto both = crew::when_all(std::move(vs));
    v2.set_value();
    CHECK_FALSE(both.ready());
    v1.set_value();
    both.get();

    CHECK(crew::when_all(std::vector<crew::Future<int>>{}).get().empty());
}

TEST_CASE("when_all reports the first failure in input order", "[when]") {
    crew::Promise<int> a, b, c;
    auto all = crew::when_all(a.get_future(), b.get_future(), c.get_future());
    c.set_exception(std::make_exception_ptr(std::runtime_error("c failed")));
    b.set_exception(std::make_exception_ptr(std::runtime_error("b failed")));
    CHECK_FALSE(all.ready());
    a.set_value(1);
    CHECK_THROWS_WITH(all.get(), "b failed");
}

TEST_CASE("when_any, as_completed and wait follow completion order", "[when]") {
    std::vector<crew::Promise<int>> ps(3);
    std::vector<crew::Future<int>> fs;
    for (auto& p : ps) fs.push_back(p.get_future());
    std::thread t([&] {
        std::this_thread::sleep_for(10ms);
        ps[2].set_value(2);
        std::this_thread::sleep_for(10ms);
        ps[0].set_value(0);
        std::this_thread::sleep_for(10ms);
        ps[1].set_exception(std::make_exception_ptr(std::runtime_error("one")));
    });
    CHECK(crew::when_any(fs).get() == 2);
    auto r = crew::wait(fs, crew::Return::first_exception, std::chrono::seconds(5));
    CHECK(r.done.size() == 3);
    std::vector<std::size_t> order;
    for (auto& f : crew::as_completed(fs)) order.push_back(static_cast<std::size_t>(&f - fs.data()));
    t.join();
    CHECK(order.size() == 3);
    CHECK(fs[2].get() == 2);
    CHECK_THROWS_WITH(fs[1].get(), "one");

    std::vector<crew::Future<int>> none;
    CHECK_THROWS_AS(crew::when_any(none), crew::InvalidArgument);
    std::vector<crew::Future<int>> hollow(2);  // futures with no state
    CHECK_THROWS_AS(crew::when_all(hollow), crew::Error);
    CHECK_THROWS_AS(crew::when_all(crew::Future<int>{}, crew::Future<void>{}), crew::Error);
    auto empty = crew::wait(none, crew::Return::all_completed);
    CHECK(empty.done.empty());
}

TEST_CASE("wait honours its timeout", "[when]") {
    crew::Promise<int> p;
    std::vector<crew::Future<int>> fs;
    fs.push_back(p.get_future());
    auto start = std::chrono::steady_clock::now();
    auto r = crew::wait(fs, crew::Return::first_completed, 30ms);
    CHECK(std::chrono::steady_clock::now() - start >= 30ms);
    CHECK(r.done.empty());
    CHECK(r.not_done == std::vector<std::size_t>{0});
    p.set_value(1);
}

TEST_CASE("futures complete correctly under racing producers and waiters", "[future][stress]") {
    for (int round = 0; round < 2000; ++round) {
        crew::Promise<int> p;
        auto f = p.get_future().then([](int x) { return x + 1; });
        std::thread setter([&] { p.set_value(round); });
        CHECK(f.get() == round + 1);
        setter.join();
    }
}

// ---- co_await ------------------------------------------------------------

namespace {

// The smallest useful coroutine task: starts at once, runs to its end without
// a final suspension, and hands its outcome to a crew::Promise. The exception
// is kept and published after the handler is left (see capture_exception).
template <class T>
struct TaskPromiseBase {
    crew::Promise<T> promise;
    std::exception_ptr error;
    std::suspend_never initial_suspend() noexcept { return {}; }
    std::suspend_never final_suspend() noexcept { return {}; }
    void unhandled_exception() noexcept { error = std::current_exception(); }
    TaskPromiseBase() = default;
    TaskPromiseBase(const TaskPromiseBase&) = delete;
    TaskPromiseBase& operator=(const TaskPromiseBase&) = delete;
    ~TaskPromiseBase() {
        if (error) promise.set_exception(std::move(error));
    }
};

template <class T>
struct Task {
    struct promise_type : TaskPromiseBase<T> {
        Task get_return_object() { return Task{this->promise.get_future()}; }
        template <class U>
        void return_value(U&& v) {
            this->promise.set_value(std::forward<U>(v));
        }
    };
    crew::Future<T> result;
};

template <>
struct Task<void> {
    struct promise_type : TaskPromiseBase<void> {
        Task get_return_object() { return Task{promise.get_future()}; }
        void return_void() { promise.set_value(); }
    };
    crew::Future<void> result;
};

struct Trace {
    std::thread::id resumed_on;
    bool reached_await = false;
};

Task<int> twice(crew::Future<int> f, Trace* trace) {
    trace->reached_await = true;
    int v = co_await f;  // an lvalue future is consumed too
    trace->resumed_on = std::this_thread::get_id();
    co_return v * 2;
}

Task<std::unique_ptr<int>> unwrap(crew::Future<std::unique_ptr<int>> f) {
    auto p = co_await std::move(f);
    *p += 1;
    co_return std::move(p);
}

Task<std::string> describe_outcome(crew::Future<void> f) {
    try {
        co_await std::move(f);
        co_return "value";
    } catch (const crew::Cancelled&) {
        co_return "cancelled";
    } catch (const std::exception& e) {
        co_return std::string("error: ") + e.what();
    }
}

Task<void> propagate(crew::Future<void> f) { co_await std::move(f); }

}  // namespace

TEST_CASE("co_await suspends until ready and resumes on the completing thread", "[future][coroutine]") {
    crew::Promise<int> p;
    Trace trace;
    auto task = twice(p.get_future(), &trace);
    CHECK(trace.reached_await);
    CHECK_FALSE(task.result.ready());  // suspended
    std::thread t([&] { p.set_value(21); });
    const auto setter = t.get_id();
    t.join();
    CHECK(task.result.get() == 42);
    CHECK(trace.resumed_on == setter);
}

TEST_CASE("co_await on a ready future does not suspend", "[future][coroutine]") {
    crew::Promise<int> p;
    p.set_value(5);
    Trace trace;
    auto task = twice(p.get_future(), &trace);
    CHECK(task.result.ready());  // ran to its end inside the call
    CHECK(trace.resumed_on == std::this_thread::get_id());
    CHECK(task.result.get() == 10);

    crew::Promise<std::unique_ptr<int>> q;
    q.set_value(std::make_unique<int>(1));
    auto moved = unwrap(q.get_future());
    CHECK(*moved.result.get() == 2);
}

TEST_CASE("co_await rethrows errors and cancellation", "[future][coroutine]") {
    crew::Promise<void> failing;
    auto a = describe_outcome(failing.get_future());
    failing.set_exception(std::make_exception_ptr(std::invalid_argument("bad input")));
    CHECK(a.result.get() == "error: bad input");

    crew::Promise<void> fine;
    auto b = describe_outcome(fine.get_future());
    fine.set_value();
    CHECK(b.result.get() == "value");

    crew::Promise<void> cancelled;
    auto f = cancelled.get_future();
    CHECK(f.cancel());
    CHECK(describe_outcome(std::move(f)).result.get() == "cancelled");

    // Uncaught in the coroutine: it travels on to the task's own future.
    crew::Promise<void> escaping;
    auto c = propagate(escaping.get_future());
    escaping.set_exception(std::make_exception_ptr(std::out_of_range("escaped")));
    CHECK_THROWS_AS(c.result.get(), std::out_of_range);

    CHECK_THROWS_AS(propagate(crew::Future<void>{}).result.get(), crew::Error);  // no state
}

TEST_CASE("a coroutine suspended on a task is resumed when the executor cancels it", "[future][coroutine]") {
    crew::ThreadExecutor<> ex(1);
    // Not a crew future: a worker waiting on one would run the queued task itself.
    std::atomic<bool> gate{false};
    std::atomic<bool> blocker_started{false};
    auto blocker = ex.submit([&] {
        blocker_started = true;
        gate.wait(false);
    });
    auto queued = ex.submit([] {});
    auto outcome = describe_outcome(std::move(queued));
    CHECK_FALSE(outcome.result.ready());
    while (!blocker_started) std::this_thread::yield();
    std::thread stopper([&] { ex.shutdown(crew::Shutdown::cancel_pending); });
    const bool resumed = outcome.result.wait_for(std::chrono::seconds(30));
    gate = true;
    gate.notify_all();
    stopper.join();
    REQUIRE(resumed);
    CHECK(outcome.result.get() == "cancelled");
    blocker.get();
}

namespace {

Task<long> sum_on(crew::ThreadExecutor<>& ex, int n, std::vector<std::thread::id>* threads) {
    long total = 0;
    for (int i = 0; i < n; ++i) {
        total += co_await ex.submit([i] { return static_cast<long>(i); });
        threads->push_back(std::this_thread::get_id());
        co_await ex.submit([] {});  // Future<void> in between
    }
    co_return total;
}

Task<int> chain(crew::ThreadExecutor<>& ex, int depth) {
    if (depth == 0) co_return 0;
    int below = co_await chain(ex, depth - 1).result;
    co_return below + co_await ex.submit([] { return 1; });
}

}  // namespace

TEST_CASE("many awaits in sequence on a ThreadExecutor", "[future][coroutine]") {
    crew::ThreadExecutor<> ex(2);
    std::vector<std::thread::id> threads;
    constexpr int n = 500;
    auto task = sum_on(ex, n, &threads);
    REQUIRE(task.result.wait_for(std::chrono::seconds(60)));
    CHECK(task.result.get() == static_cast<long>(n) * (n - 1) / 2);
    CHECK(threads.size() == static_cast<std::size_t>(n));

    auto nested = chain(ex, 50);
    REQUIRE(nested.result.wait_for(std::chrono::seconds(60)));
    CHECK(nested.result.get() == 50);

    // Many coroutines at once, each awaiting several tasks.
    std::vector<Task<long>> tasks;
    std::vector<std::vector<std::thread::id>> ids(20);
    for (auto& v : ids) tasks.push_back(sum_on(ex, 20, &v));
    for (auto& t : tasks) CHECK(t.result.get() == 190);
}

// ---- on_done --------------------------------------------------------------

TEST_CASE("on_done runs every callback once, in order, without consuming the future", "[future][on_done]") {
    crew::Promise<int> p;
    auto f = p.get_future();
    std::mutex m;
    std::vector<int> calls;
    std::thread::id ran_on;
    for (int i = 0; i < 3; ++i)
        f.on_done([&, i] {
            std::lock_guard lock(m);
            calls.push_back(i);
            ran_on = std::this_thread::get_id();
        });
    CHECK(calls.empty());
    CHECK(f.valid());
    std::thread t([&] { p.set_value(9); });
    const auto setter = t.get_id();
    t.join();
    CHECK(calls == std::vector<int>{0, 1, 2});
    CHECK(ran_on == setter);
    CHECK(f.valid());

    // Added when ready: inline, on this thread.
    f.on_done([&] {
        calls.push_back(3);
        ran_on = std::this_thread::get_id();
    });
    CHECK(calls.back() == 3);
    CHECK(ran_on == std::this_thread::get_id());
    CHECK(f.get() == 9);
    CHECK_THROWS_AS(f.on_done([] {}), crew::Error);  // consumed by get()
}

TEST_CASE("on_done sees errors and cancellation, and the future still reports them", "[future][on_done]") {
    crew::Promise<void> p;
    auto f = p.get_future();
    bool saw_ready = false;
    f.on_done([&] { saw_ready = f.ready(); });  // the future is ready inside its callback
    p.set_exception(std::make_exception_ptr(std::runtime_error("boom")));
    CHECK(saw_ready);
    CHECK_THROWS_WITH(f.get(), "boom");

    crew::Promise<int> q;
    auto g = q.get_future();
    int count = 0;
    g.on_done([&] { ++count; });
    CHECK(g.cancel());
    CHECK(count == 1);
    CHECK_THROWS_AS(g.get(), crew::Cancelled);

    // A throwing callback is reported (stderr) and does not stop the others.
    crew::Promise<int> r;
    auto h = r.get_future();
    bool second = false;
    h.on_done([] { throw std::logic_error("callback failed (expected by the test)"); });
    h.on_done([&] { second = true; });
    r.set_value(1);
    CHECK(second);
    CHECK(h.get() == 1);

    // A callback may outlive the future it was added to.
    crew::Promise<int> s;
    bool late = false;
    {
        auto gone = s.get_future();
        gone.on_done([&] { late = true; });
    }
    s.set_value(3);
    CHECK(late);
}

TEST_CASE("on_done with then, co_await and an executor", "[future][on_done]") {
    crew::ThreadExecutor<> ex(2);
    std::atomic<int> done{0};
    std::vector<crew::Future<int>> fs;
    for (int i = 0; i < 200; ++i) {
        fs.push_back(ex.submit([i] { return i; }));
        fs.back().on_done([&] { ++done; });
    }
    int total = 0;
    for (auto& f : fs) total += f.get();
    CHECK(total == 199 * 100);
    ex.wait_idle();
    CHECK(done == 200);

    crew::Promise<int> p;
    auto f = p.get_future();
    int order = 0, callback_at = 0, then_at = 0;
    f.on_done([&] { callback_at = ++order; });
    auto g = std::move(f).then([&](int x) {
        then_at = ++order;
        return x;
    });
    p.set_value(4);
    CHECK(callback_at == 1);
    CHECK(then_at == 2);
    CHECK(g.get() == 4);
}

// ---- saturating waits -----------------------------------------------------

TEST_CASE("waits with huge timeouts wait instead of overflowing", "[future][wait]") {
    using namespace std::chrono;
    auto completed_later = [](crew::Promise<int>& p) {
        return std::thread([&p] {
            std::this_thread::sleep_for(50ms);
            p.set_value(1);
        });
    };
    auto check = [&](auto waiter) {
        crew::Promise<int> p;
        auto f = p.get_future();
        auto t = completed_later(p);
        const bool ready = waiter(f);
        const bool was_ready = f.ready();
        t.join();
        CHECK(ready);
        CHECK(was_ready);  // returned because it completed, not at once
    };
    check([](auto& f) { return f.wait_for(hours::max()); });
    check([](auto& f) { return f.wait_for(seconds::max()); });
    check([](auto& f) { return f.wait_for(steady_clock::duration::max()); });
    check([](auto& f) { return f.wait_for(nanoseconds::max()); });
    check([](auto& f) { return f.wait_for(years(1000)); });
    check([](auto& f) { return f.wait_for(duration<double>::max()); });
    check([](auto& f) { return f.wait_until(steady_clock::time_point::max()); });
    check([](auto& f) { return f.wait_until(system_clock::time_point::max()); });
    check([](auto& f) { return f.wait_until(time_point<system_clock, hours>::max()); });
    check([](auto& f) { return f.wait_until(time_point_cast<seconds>(system_clock::now()) + years(1000)); });
    check([](auto& f) { return f.wait_until(steady_clock::now() + hours(24 * 365 * 200)); });

    auto check_all = [&](auto timeout) {
        crew::Promise<int> p;
        std::vector<crew::Future<int>> fs;
        fs.push_back(p.get_future());
        auto t = completed_later(p);
        auto r = crew::wait(fs, crew::Return::all_completed, timeout);
        t.join();
        CHECK(r.done == std::vector<std::size_t>{0});
    };
    check_all(hours::max());
    check_all(steady_clock::duration::max());
    check_all(years(1000));
    check_all(std::optional<steady_clock::duration>(steady_clock::duration::max()));
}

TEST_CASE("ordinary and past deadlines still time out", "[future][wait]") {
    using namespace std::chrono;
    crew::Promise<int> p;
    auto f = p.get_future();
    CHECK_FALSE(f.wait_for(-hours::max()));
    CHECK_FALSE(f.wait_for(hours::min()));
    CHECK_FALSE(f.wait_for(duration<double>(-1.0)));
    CHECK_FALSE(f.wait_until(steady_clock::time_point::min()));
    CHECK_FALSE(f.wait_until(system_clock::time_point::min()));
    CHECK_FALSE(f.wait_until(system_clock::now() - hours(1)));
    auto start = steady_clock::now();
    CHECK_FALSE(f.wait_until(system_clock::now() + 20ms));
    CHECK(steady_clock::now() - start >= 20ms);
    CHECK_FALSE(f.wait_for(duration<double, std::milli>(5.5)));
    std::vector<crew::Future<int>> fs;
    fs.push_back(std::move(f));
    CHECK(crew::wait(fs, crew::Return::first_completed, hours::min()).not_done.size() == 1);
    p.set_value(1);
    CHECK(fs[0].wait_for(hours::max()));
    CHECK(fs[0].wait_until(system_clock::time_point::min()));  // ready: true even for a past deadline
}
