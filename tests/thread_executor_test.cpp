// ThreadExecutor: the shared executor suite over all three sync policies,
// plus what only threads can do (capturing lambdas, nested waits, stress).
#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

#include <sys/resource.h>

#define CREW_SUITE_TAG "[thread]"
#define CREW_SUITE_TYPES crew::ThreadExecutor<crew::sync::LockFree>, crew::ThreadExecutor<crew::sync::Mutex>, \
                         crew::ThreadExecutor<crew::sync::Semaphore>
#include "executor_suite.hpp"
#include "test_support.hpp"

using Policies = std::tuple<crew::sync::LockFree, crew::sync::Mutex, crew::sync::Semaphore>;

TEMPLATE_LIST_TEST_CASE("a task waiting on a task it submitted does not deadlock", "[thread]", Policies) {
    crew::ThreadExecutor<TestType> ex(1);
    auto outer = ex.submit([&ex] {
        auto inner = ex.submit([] { return 20; });
        auto deeper = ex.submit([&ex] { return ex.submit([] { return 1; }).get() + 1; });
        return inner.get() + deeper.get();
    });
    CHECK(outer.get() == 22);

    // Many at once: every worker blocked on nested work.
    crew::ThreadExecutor<TestType> two(2);
    std::vector<crew::Future<int>> fs;
    for (int i = 0; i < 64; ++i)
        fs.push_back(two.submit([&two, i] { return two.submit([i] { return i; }).get() * 2; }));
    for (int i = 0; i < 64; ++i) CHECK(fs[static_cast<std::size_t>(i)].get() == 2 * i);
}

namespace {
template <class Ex>
long nested_fib(Ex& ex, int n) {
    if (n < 2) return n;
    auto half = ex.submit([&ex, n] { return nested_fib(ex, n - 1); });
    const long other = nested_fib(ex, n - 2);
    return half.get() + other;
}
}  // namespace

TEMPLATE_LIST_TEST_CASE("nested fork-join 20 levels deep, on 1 and 2 workers, runs every task once", "[thread]",
                        Policies) {
    for (std::size_t workers : {1, 2}) {
        crew::ThreadExecutor<TestType> ex(workers);
        CHECK(ex.submit([&ex] { return nested_fib(ex, 20); }).get() == 6765);
        ex.wait_idle();
        const crew::Stats stats = ex.stats();
        // fib(20) makes 10,945 subtasks, plus the root: each started and completed once,
        // whether a worker took it from the queue or the worker that waited for it ran it.
        CHECK(stats.completed == 10'946);
        CHECK(stats.queued == 0);
        CHECK(stats.running == 0);
        CHECK(stats.cancelled == 0);
    }
}

TEMPLATE_LIST_TEST_CASE("a task waited for from outside its executor runs on its own executor", "[thread]", Policies) {
    crew::ThreadExecutor<TestType> ex(1);
    const auto caller = std::this_thread::get_id();
    auto where = ex.submit([] { return std::this_thread::get_id(); });
    CHECK(where.get() != caller);
    // Nor by a worker of another executor.
    crew::ThreadExecutor<TestType> other(1);
    auto outer = other.submit([&ex] {
        const auto self = std::this_thread::get_id();
        return ex.submit([] { return std::this_thread::get_id(); }).get() != self;
    });
    CHECK(outer.get());
}

TEMPLATE_LIST_TEST_CASE("capturing lambdas and move-only arguments work on threads", "[thread]", Policies) {
    crew::ThreadExecutor<TestType> ex(2);
    int base = 40;
    CHECK(ex.submit([&] { return base + 2; }).get() == 42);
    auto p = std::make_unique<int>(7);
    CHECK(ex.submit([](std::unique_ptr<int> q) { return *q; }, std::move(p)).get() == 7);
}

TEMPLATE_LIST_TEST_CASE("stress: 8 submitting threads, every task runs exactly once", "[thread][stress]", Policies) {
    const std::size_t per_thread = crew_test::scaled(200'000);
    const std::size_t submitters = 8;
    auto runs = std::make_unique<std::atomic<std::uint8_t>[]>(per_thread * submitters);
    {
        crew::ThreadExecutor<TestType> ex(2);
        std::vector<std::thread> threads;
        for (std::size_t t = 0; t < submitters; ++t) {
            threads.emplace_back([&, t] {
                for (std::size_t i = 0; i < per_thread; ++i) {
                    auto* slot = &runs[t * per_thread + i];
                    if (i % 16 == 0)
                        ex.submit([slot] { slot->fetch_add(1, std::memory_order_relaxed); }).get();
                    else
                        ex.post([slot] { slot->fetch_add(1, std::memory_order_relaxed); });
                }
            });
        }
        for (auto& t : threads) t.join();
    }
    std::size_t wrong = 0;
    for (std::size_t i = 0; i < per_thread * submitters; ++i) wrong += runs[i].load() != 1;
    CHECK(wrong == 0);
}

TEMPLATE_LIST_TEST_CASE("an idle executor sleeps", "[thread][idle]", Policies) {
    crew::ThreadExecutor<TestType> ex(2);
    ex.submit([] {}).get();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // past the spin phase
    auto before = crew_test::process_cpu_time();
    std::this_thread::sleep_for(std::chrono::seconds(1));
    auto used = crew_test::process_cpu_time() - before;
    INFO("CPU used while idle for 1 s: " << std::chrono::duration_cast<std::chrono::microseconds>(used).count() << " us");
    CHECK(used < crew_test::idle_cpu_limit());
}

TEST_CASE("options that need processes are rejected on threads", "[thread]") {
    CHECK_THROWS_AS(crew::ThreadExecutor<>(1, crew::Options{.task_timeout = std::chrono::seconds(1)}), crew::InvalidArgument);
    CHECK_THROWS_AS(crew::ThreadExecutor<>(1, crew::Options{.memory_limit = 1 << 20}), crew::InvalidArgument);
    CHECK_THROWS_AS(crew::ThreadExecutor<>(1, crew::Options{.max_tasks_per_worker = 3}), crew::InvalidArgument);
    CHECK_THROWS_AS(crew::ThreadExecutor<>(1, crew::Options{.start = crew::Start::spawn}), crew::InvalidArgument);
    CHECK_THROWS_AS(crew::ThreadExecutor<>(1, crew::Options{.max_message_size = 1 << 20}), crew::InvalidArgument);
}

namespace {
std::atomic<int> initialized{0};
void init_worker() { ++initialized; }
}  // namespace

TEST_CASE("workers default to the hardware and run the initializer once each", "[thread]") {
    {
        crew::ThreadExecutor<> ex(3, crew::Options{.initializer = init_worker});
        CHECK(ex.size() == 3);
        ex.submit([] {}).get();
    }
    CHECK(initialized == 3);
    crew::ThreadExecutor<> dflt;
    CHECK(dflt.size() == std::max(1u, std::thread::hardware_concurrency()));
    crew::ThreadExecutor<> from_options(0, crew::Options{.workers = 2});
    CHECK(from_options.size() == 2);
}

TEST_CASE("post without on_error prints the exception", "[thread]") {
    // Nothing to assert on stderr portably; the task must not vanish silently
    // nor take the pool down.
    crew::ThreadExecutor<> ex(1);
    ex.post([] { throw std::runtime_error("printed to stderr by design (test)"); });
    CHECK(ex.submit([] { return 1; }).get() == 1);
}

TEST_CASE("shutdown from inside a task and from several threads at once", "[thread]") {
    crew::ThreadExecutor<> ex(2);
    auto f = ex.submit([&ex] {
        ex.shutdown();
        return 1;
    });
    CHECK(f.get() == 1);
    std::vector<std::thread> ts;
    for (int i = 0; i < 4; ++i) ts.emplace_back([&] { ex.shutdown(); });
    for (auto& t : ts) t.join();
    CHECK_THROWS_AS(ex.submit([] {}), crew::ExecutorShutdown);
}

// The destructor run by one of the executor's own tasks drains, joins the
// other workers, and that worker leaves when the task returns without
// touching the executor again (ASan checks), nor waiting for itself.
TEMPLATE_LIST_TEST_CASE("an executor destroyed by one of its own tasks", "[thread]", Policies) {
    for (int round = 0; round < 20; ++round) {
        auto* ex = new crew::ThreadExecutor<TestType>(2);
        std::atomic<int> ran{0};
        for (int i = 0; i < 10; ++i) ex->post([&ran] { ran.fetch_add(1); });
        std::atomic<bool> submitted{false};
        auto f = ex->submit([ex, &ran, &submitted] {
            // Not while this thread's submit() may still be inside the executor.
            while (!submitted.load()) std::this_thread::yield();
            delete ex;  // drains the posts first
            return ran.load();
        });
        submitted.store(true);
        REQUIRE(f.wait_for(30s));
        CHECK(f.get() == 10);
    }
    // The last worker is detached; give it the moment it needs to end.
    std::this_thread::sleep_for(50ms);
}

TEMPLATE_LIST_TEST_CASE("what a task captured goes when it has run, not when its future goes", "[thread]", Policies) {
    crew::ThreadExecutor<TestType> ex(1);
    auto resource = std::make_shared<int>(7);
    std::weak_ptr<int> watch = resource;
    auto f = ex.submit([r = std::move(resource)] { return *r; });
    REQUIRE(f.wait_for(30s));
    CHECK(watch.expired());  // the future still holds the value, not the capture
    CHECK(f.get() == 7);

    // Posts and cancelled tasks too.
    auto posted = std::make_shared<int>(1);
    std::weak_ptr<int> watch_post = posted;
    ex.post([p = std::move(posted)] { (void)*p; });
    REQUIRE(ex.wait_idle_for(30s));
    CHECK(watch_post.expired());
}

TEMPLATE_LIST_TEST_CASE("executors whose tasks post into each other never deadlock", "[thread]", Policies) {
    // Each task forwards itself to the other executor a number of times; with
    // bounded queues both fill up and every worker blocks in post().
    crew::ThreadExecutor<TestType> a(1), b(1);
    std::atomic<int> ran{0};
    struct Bounce {
        crew::ThreadExecutor<TestType>* here;
        crew::ThreadExecutor<TestType>* there;
        std::atomic<int>* ran;
        int left;
        void operator()() const {
            ran->fetch_add(1);
            if (left > 0) there->post(Bounce{there, here, ran, left - 1});
        }
    };
    const int tasks = 2048, hops = 3;
    for (int i = 0; i < tasks; ++i) a.post(Bounce{&a, &b, &ran, hops});
    for (int i = 0; i < tasks; ++i) b.post(Bounce{&b, &a, &ran, hops});
    // Tasks that post more: wait until both are idle at the same time.
    for (int round = 0; round < 100 && ran.load() < 2 * tasks * (hops + 1); ++round) {
        REQUIRE(a.wait_idle_for(60s));
        REQUIRE(b.wait_idle_for(60s));
    }
    CHECK(ran.load() == 2 * tasks * (hops + 1));
}

TEMPLATE_LIST_TEST_CASE("wait_idle waits for tasks that post more tasks", "[thread]", Policies) {
    crew::ThreadExecutor<TestType> ex(2);
    std::atomic<int> ran{0};
    for (int i = 0; i < 50; ++i)
        ex.post([&] {
            ran.fetch_add(1);
            for (int j = 0; j < 10; ++j) ex.post([&] { ran.fetch_add(1); });
        });
    REQUIRE(ex.wait_idle_for(60s));
    CHECK(ran.load() == 50 * 11);
    // From one of its own tasks, wait_idle would wait for itself: refused.
    CHECK_THROWS_AS(ex.submit([&] { ex.wait_idle(); }).get(), crew::InvalidArgument);
}

TEST_CASE("max_pending holds back outside submitters only", "[thread]") {
    crew::ThreadExecutor<> ex(1, crew::Options{.max_pending = 4});
    std::atomic<bool> release{false};
    std::atomic<int> ran{0}, outside_posted{0};
    ex.post([&] {  // occupies the only worker until released
        while (!release.load()) std::this_thread::sleep_for(1ms);
    });
    auto inner = ex.submit([&] {
        // From a task of the executor, posts never wait, even past max_pending.
        for (int i = 0; i < 20; ++i) ex.post([&] { ran.fetch_add(1); });
        return true;
    });
    std::thread outside([&] {
        for (int i = 0; i < 20; ++i) {
            ex.post([&] { ran.fetch_add(1); });
            outside_posted.fetch_add(1);
        }
    });
    std::this_thread::sleep_for(50ms);  // time to run into the limit (not needed for correctness)
    CHECK(outside_posted.load() <= 3);  // the submit above holds one of the 4 places
    release = true;
    outside.join();
    REQUIRE(inner.wait_for(60s));
    CHECK(inner.get());
    REQUIRE(ex.wait_idle_for(60s));
    CHECK(ran.load() == 40);
}

// Work a worker's own task submits waits in that worker's deque (lock-free
// policy) or in the shared queue (the others): either way the other worker
// takes it while the submitting task is busy with something else.
TEMPLATE_LIST_TEST_CASE("tasks a blocked task submitted are run by the other worker", "[thread][nested]", Policies) {
    crew::ThreadExecutor<TestType> ex(2);
    for (int round = 0; round < 20; ++round) {
        std::atomic<int> done{0};
        auto outer = ex.submit([&] {
            for (int i = 0; i < 8; ++i) ex.post([&done] { done.fetch_add(1); });
            // Blocks without get(): only the other worker can run the posts.
            const auto deadline = std::chrono::steady_clock::now() + 30s;
            while (done.load() < 8 && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
            return done.load();
        });
        REQUIRE(outer.get() == 8);
    }
}

// shutdown(drain) lands while a task keeps posting and waiting for each
// post by other means than a future: every post accepted runs (on the other
// worker, which must not leave while that task may still push), and
// shutdown returns. Racing the close against the push many times.
TEMPLATE_LIST_TEST_CASE("shutdown(drain) during nested posts a task waits for without futures", "[thread][nested]",
                        Policies) {
    for (int round = 0; round < 200; ++round) {
        auto ex = std::make_unique<crew::ThreadExecutor<TestType>>(2);
        std::atomic<int> accepted{0}, ran{0};
        std::atomic<bool> started{false};
        ex->post([&] {
            started.store(true);
            for (;;) {
                try {
                    ex->post([&ran] { ran.fetch_add(1); });
                } catch (const crew::ExecutorShutdown&) {
                    return;
                }
                const int want = accepted.fetch_add(1) + 1;
                const auto deadline = std::chrono::steady_clock::now() + 30s;
                while (ran.load() < want && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
                if (ran.load() < want) return;  // stranded: the checks below fail
            }
        });
        while (!started.load()) std::this_thread::yield();
        if (round % 2 == 1) std::this_thread::sleep_for(std::chrono::microseconds(round * 5));
        ex->shutdown(crew::Shutdown::drain);
        CHECK(ran.load() == accepted.load());
        ex.reset();
    }
}

TEMPLATE_LIST_TEST_CASE("a task submitting far more than a deque holds runs each once", "[thread][nested]", Policies) {
    crew::ThreadExecutor<TestType> ex(2);
    const std::size_t n = 5000;  // past the 1024 entries of a worker's deque
    auto runs = std::make_unique<std::atomic<int>[]>(n);
    auto total = ex.submit([&] {
        std::vector<crew::Future<int>> fs;
        for (std::size_t i = 0; i < n; ++i)
            fs.push_back(ex.submit([&runs, i] {
                runs[i].fetch_add(1);
                return 1;
            }));
        int sum = 0;
        for (auto& f : fs) sum += f.get();
        return sum;
    });
    CHECK(total.get() == static_cast<int>(n));
    std::size_t wrong = 0;
    for (std::size_t i = 0; i < n; ++i) wrong += runs[i].load() != 1;
    CHECK(wrong == 0);
}

TEMPLATE_LIST_TEST_CASE("shutdown(cancel_pending) cancels what waits in a busy worker's deque", "[thread][nested]",
                        Policies) {
    crew::ThreadExecutor<TestType> ex(2);
    std::atomic<bool> release{false};
    std::atomic<int> blocked{0}, ran{0};
    std::vector<crew::Future<void>> queued;
    std::mutex queued_mutex;
    auto hold = [&] {
        blocked.fetch_add(1);
        const auto deadline = std::chrono::steady_clock::now() + 30s;
        while (!release.load() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(1ms);
    };
    auto wait_blocked = [&](int n) {
        const auto deadline = std::chrono::steady_clock::now() + 30s;
        while (blocked.load() < n && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(1ms);
        return blocked.load() == n;
    };
    // One worker busy first; then the other queues 50 tasks from its task and
    // blocks too: nobody is free to start them.
    auto b = ex.submit(hold);
    REQUIRE(wait_blocked(1));
    auto a = ex.submit([&] {
        {
            std::lock_guard lock(queued_mutex);
            for (int i = 0; i < 50; ++i) queued.push_back(ex.submit([&ran] { ran.fetch_add(1); }));
        }
        hold();
    });
    REQUIRE(wait_blocked(2));
    std::thread stopper([&] { ex.shutdown(crew::Shutdown::cancel_pending); });
    std::size_t cancelled = 0;
    {
        std::lock_guard lock(queued_mutex);
        for (auto& f : queued) {
            REQUIRE(f.wait_for(30s));
            try {
                f.get();
            } catch (const crew::Cancelled&) {
                ++cancelled;
            }
        }
    }
    release = true;
    stopper.join();
    a.get();
    b.get();
    CHECK(cancelled == 50);
    CHECK(ran.load() == 0);
}
