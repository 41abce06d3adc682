// bench_thread_pool: crew::ThreadExecutor under each sync policy against
// Boost.Asio's thread_pool and oneTBB's task_group, side by side in one run.
//
//   bench_thread_pool [--workers=2] [--reps=5] [--scale=1] [--only=TEXT]
//
// Rows (N scaled by --scale; --only=round keeps the rows whose title has
// "round"):
//   fire-and-forget     1,000,000 empty tasks posted from one thread, then
//                       wait until all ran (crew: post + shutdown; Asio: post
//                       + join; TBB: run + wait). ns per task.
//   submit + future     200,000 tasks returning 1, each with a future, then
//                       get() all (crew: submit + Future::get; peers: a
//                       std::promise per task; TBB: task_arena::enqueue).
//                       ns per task.
//   serial round trip   20,000 times: submit one task, get() its result before
//                       the next (TBB: task_arena::enqueue + std::promise;
//                       the submitting thread blocks in std::future::get, so
//                       a worker must take the task). us per round trip.
//   nested fork-join    fib(22) where each level submits one half as a task,
//                       computes the other itself, then waits for the task
//                       (28,656 tasks; crew: submit + Future::get inside the
//                       pool; TBB: task_group::run + wait per level). Asio
//                       has no row: a worker blocked in std::future::get does
//                       not run other work, so the pool deadlocks. us per run.
// The pool is built before the clock starts and, where the row does not
// include draining it, shut down after the clock stops.
#include <algorithm>
#include <cstddef>
#include <future>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <crew/crew.hpp>

#include "bench.hpp"

#if CREW_BENCH_ASIO
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#endif
#if CREW_BENCH_TBB
#include <tbb/global_control.h>
#include <tbb/task_arena.h>
#include <tbb/task_group.h>
#endif

namespace {

// Every pool behind one face, so each row is written once:
//   Pool(workers); post(f); submit(f) -> future with get(); drain() waits
//   until everything posted ran; as_submitter(body) runs the submitting code
//   (TBB wants it inside its arena).

template <class Sync>
class CrewPool {
public:
    static constexpr bool crew = true;
    static std::string name() { return "crew ThreadExecutor (" + std::string(Sync::name) + ")"; }

    explicit CrewPool(std::size_t workers) : ex_(workers) {}
    template <class F>
    void post(F f) {
        ex_.post(std::move(f));
    }
    template <class F>
    auto submit(F f) {
        return ex_.submit(std::move(f));
    }
    void drain() { ex_.shutdown(); }
    template <class Body>
    void as_submitter(Body body) {
        body();
    }

private:
    crew::ThreadExecutor<Sync> ex_;
};

// A task that fulfils a std::promise: how a user of a pool without futures
// gets one. `mutable` because TBB calls its tasks through a const reference.
template <class F>
struct Fulfil {
    mutable std::promise<std::invoke_result_t<const F&>> promise;
    F f;
    void operator()() const { promise.set_value(f()); }
};

template <class Pool, class F>
auto submit_with_promise(Pool& pool, F f) {
    Fulfil<F> task{{}, std::move(f)};
    auto future = task.promise.get_future();
    pool.post(std::move(task));
    return future;
}

#if CREW_BENCH_ASIO
class AsioPool {
public:
    static constexpr bool crew = false;
    static std::string name() { return "Boost.Asio thread_pool"; }

    explicit AsioPool(std::size_t workers) : pool_(workers) {}
    template <class F>
    void post(F f) {
        boost::asio::post(pool_, std::move(f));
    }
    template <class F>
    auto submit(F f) {
        return submit_with_promise(*this, std::move(f));
    }
    void drain() { pool_.join(); }  // returns once all posted work ran
    template <class Body>
    void as_submitter(Body body) {
        body();
    }

private:
    boost::asio::thread_pool pool_;
};
#endif

#if CREW_BENCH_TBB
// `workers` TBB worker threads plus the submitting thread, which TBB puts to
// work inside wait(); that is how task_group is meant to be used. TBB caps its
// workers at hardware threads - 1 unless told otherwise: global_control lifts
// the cap to what the arena asks for.
class TbbPool {
public:
    static constexpr bool crew = false;
    static std::string name() { return "oneTBB task_group"; }

    explicit TbbPool(std::size_t workers)
        : limit_(tbb::global_control::max_allowed_parallelism, workers + 1),
          arena_(static_cast<int>(workers) + 1, 1) {}
    ~TbbPool() { drain(); }
    template <class F>
    void post(F f) {
        group_.run(std::move(f));
    }
    // A task whose submitter then blocks outside TBB (in std::future::get)
    // is enqueued to the arena, which guarantees a worker takes it: a task
    // spawned with task_group::run sits in the submitter's own deque, and a
    // long run of the round trip below hung there now and then (workers
    // asleep, submitter blocked).
    template <class F>
    auto submit(F f) {
        Fulfil<F> task{{}, std::move(f)};
        auto future = task.promise.get_future();
        arena_.enqueue(std::move(task));
        return future;
    }
    void drain() {
        arena_.execute([this] { group_.wait(); });
    }
    template <class Body>
    void as_submitter(Body body) {
        arena_.execute(body);
    }

private:
    tbb::global_control limit_;
    tbb::task_arena arena_;
    tbb::task_group group_;
};
#endif

/// One case per pool for `row`, a generic callable taking
/// std::type_identity<Pool>.
template <class Row>
std::vector<bench::Case> every_pool(Row row) {
    std::vector<bench::Case> cases;
    auto add = [&]<class Pool>(std::type_identity<Pool> tag) {
        cases.push_back({Pool::name(), Pool::crew, [row, tag] { return row(tag); }});
    };
    add(std::type_identity<CrewPool<crew::sync::LockFree>>{});
    add(std::type_identity<CrewPool<crew::sync::Mutex>>{});
    add(std::type_identity<CrewPool<crew::sync::Semaphore>>{});
#if CREW_BENCH_ASIO
    add(std::type_identity<AsioPool>{});
#endif
#if CREW_BENCH_TBB
    add(std::type_identity<TbbPool>{});
#endif
    return cases;
}

constexpr auto one = [] { return 1; };

template <class Ex>
long crew_fib(Ex& ex, int n) {
    if (n < 2) return n;
    auto half = ex.submit([&ex, n] { return crew_fib(ex, n - 1); });
    const long other = crew_fib(ex, n - 2);
    return half.get() + other;
}

#if CREW_BENCH_TBB
long tbb_fib(int n) {
    if (n < 2) return n;
    long half = 0;
    tbb::task_group group;
    group.run([&half, n] { half = tbb_fib(n - 1); });
    const long other = tbb_fib(n - 2);
    group.wait();
    return half + other;
}
#endif

/// The nested row: crew under each policy, and TBB.
std::vector<bench::Case> nested_cases(std::size_t workers, int n, std::size_t runs) {
    std::vector<bench::Case> cases;
    auto add_crew = [&]<class Sync>(std::type_identity<Sync>) {
        cases.push_back({CrewPool<Sync>::name(), true, [workers, n, runs] {
                             crew::ThreadExecutor<Sync> ex(workers);
                             long sum = 0;
                             const double s = bench::seconds([&] {
                                 for (std::size_t r = 0; r < runs; ++r)
                                     sum += ex.submit([&ex, n] { return crew_fib(ex, n); }).get();
                             });
                             bench::check(sum == static_cast<long>(runs) * 17711, "nested: fib(22) == 17711");
                             return s * 1e6 / static_cast<double>(runs);
                         }});
    };
    add_crew(std::type_identity<crew::sync::LockFree>{});
    add_crew(std::type_identity<crew::sync::Mutex>{});
    add_crew(std::type_identity<crew::sync::Semaphore>{});
#if CREW_BENCH_TBB
    cases.push_back({TbbPool::name(), false, [workers, n, runs] {
                         TbbPool pool(workers);
                         long sum = 0;
                         const double s = bench::seconds([&] {
                             pool.as_submitter([&] {
                                 for (std::size_t r = 0; r < runs; ++r) sum += tbb_fib(n);
                             });
                         });
                         bench::check(sum == static_cast<long>(runs) * 17711, "nested: fib(22) == 17711");
                         return s * 1e6 / static_cast<double>(runs);
                     }});
#endif
    return cases;
}

}  // namespace

int main(int argc, char** argv) {
    const bench::Options opt = bench::parse(argc, argv, true);
    const std::size_t workers = opt.workers;
    std::printf("## Thread pools: %zu workers, median of %d (after 1 warm-up), unpinned\n", workers, opt.reps);
#if !CREW_BENCH_ASIO
    std::printf("\n(Boost.Asio not found at configure time: its rows are skipped)\n");
#endif
#if !CREW_BENCH_TBB
    std::printf("\n(oneTBB not found at configure time: its rows are skipped)\n");
#endif
    auto run = [&](const std::string& title, std::string_view unit, auto row, bench::Target target) {
        if (opt.wants(title)) bench::report(title, unit, bench::measure(every_pool(row), opt.reps), target);
    };

    const std::size_t posts = opt.n(1'000'000);
    run("fire-and-forget: " + std::to_string(posts) + " empty tasks posted, then drained", "ns per task",
        [=]<class Pool>(std::type_identity<Pool>) {
            Pool pool(workers);
            double s = bench::seconds([&] {
                pool.as_submitter([&] {
                    for (std::size_t i = 0; i < posts; ++i) pool.post([] {});
                    pool.drain();
                });
            });
            return s * 1e9 / static_cast<double>(posts);
        },
        {0.7, ""});

    const std::size_t submits = opt.n(200'000);
    run("submit + future: " + std::to_string(submits) + " tasks submitted, then every future's get()", "ns per task",
        [=]<class Pool>(std::type_identity<Pool>) {
            Pool pool(workers);
            std::vector<decltype(pool.submit(one))> futures;
            futures.reserve(submits);
            std::size_t sum = 0;
            double s = bench::seconds([&] {
                pool.as_submitter([&] {
                    for (std::size_t i = 0; i < submits; ++i) futures.push_back(pool.submit(one));
                    for (auto& f : futures) sum += static_cast<std::size_t>(f.get());
                });
            });
            bench::check(sum == submits, "submit + future: every task ran once");
            pool.drain();
            return s * 1e9 / static_cast<double>(submits);
        },
        {0.5, "Boost.Asio thread_pool"});

    const std::size_t trips = opt.n(20'000);
    run("serial round trip: " + std::to_string(trips) + " times submit one task, then get()", "us per round trip",
        [=]<class Pool>(std::type_identity<Pool>) {
            Pool pool(workers);
            std::size_t sum = 0;
            double s = bench::seconds([&] {
                pool.as_submitter([&] {
                    for (std::size_t i = 0; i < trips; ++i) sum += static_cast<std::size_t>(pool.submit(one).get());
                });
            });
            bench::check(sum == trips, "round trip: every task ran once");
            pool.drain();
            return s * 1e6 / static_cast<double>(trips);
        },
        {0.1, "Boost.Asio thread_pool"});

    const std::size_t fib_runs = std::max<std::size_t>(1, opt.n(20));
    const std::string nested = "nested fork-join: fib(22), each level submits one half and waits on it (28,656 tasks), " +
                               std::to_string(fib_runs) + " runs";
    if (opt.wants(nested))
        bench::report(nested, "us per run", bench::measure(nested_cases(workers, 22, fib_runs), opt.reps),
                      bench::Target{1.5, "oneTBB task_group"});
    return 0;
}
