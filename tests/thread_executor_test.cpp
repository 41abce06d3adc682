// ThreadExecutor: the shared executor suite over all three sync policies,
// plus what only threads can do (capturing lambdas, nested waits, stress).
#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

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
