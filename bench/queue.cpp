// bench_queue: crew::LockFreeQueue against moodycamel::ConcurrentQueue (with
// and without tokens), boost::lockfree::queue and std::mutex + std::deque,
// side by side in one run.
//
//   bench_queue [--reps=5] [--scale=1] [--only=TEXT]
//
// 10,000,000 64-bit items (scaled by --scale) move from P producers to C
// consumers, for 2 + 2 and 1 + 1. Every queue is driven the same way: a
// producer retries try-push until it succeeds, a consumer retries try-pop;
// nobody sleeps. ns per item = wall time from "go" until every thread joined,
// divided by the item count. Each consumer sums what it receives; the run
// stops with an error unless exactly N items arrived and they sum to
// 1 + 2 + ... + N, so a queue that loses or duplicates items cannot post a
// number.
//
// Capacity: crew::LockFreeQueue is bounded, 65,536 slots (a full queue makes
// try_push fail and the producer retry). The peers are unbounded (they
// allocate when needed); moodycamel and Boost.Lockfree are given 65,536
// preallocated elements to start with.
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <crew/crew.hpp>

#include "bench.hpp"

#if CREW_BENCH_MOODYCAMEL
#include <concurrentqueue.h>
#endif
#if CREW_BENCH_BOOST_LOCKFREE
#include <boost/lockfree/queue.hpp>
#endif

namespace {

using Item = std::uint64_t;
constexpr std::size_t capacity = 65536;

// Every queue behind one face: producer() and consumer() return the callables
// one thread uses, try-push (Item) -> bool and try-pop (Item&) -> bool. They
// are made on the main thread and moved into the thread that uses them.

struct CrewQueue {
    static constexpr bool crew = true;
    static std::string name() { return "crew::LockFreeQueue (65536)"; }
    crew::LockFreeQueue<Item> q{capacity};
    auto producer() {
        return [this](Item v) { return q.try_push(v); };
    }
    auto consumer() {
        return [this](Item& v) { return q.try_pop(v); };
    }
};

#if CREW_BENCH_MOODYCAMEL
struct MoodycamelTokens {
    static constexpr bool crew = false;
    static std::string name() { return "moodycamel, tokens"; }
    moodycamel::ConcurrentQueue<Item> q{capacity};
    auto producer() {
        return [this, token = moodycamel::ProducerToken(q)](Item v) mutable { return q.enqueue(token, v); };
    }
    auto consumer() {
        return [this, token = moodycamel::ConsumerToken(q)](Item& v) mutable { return q.try_dequeue(token, v); };
    }
};

struct MoodycamelPlain {
    static constexpr bool crew = false;
    static std::string name() { return "moodycamel, no tokens"; }
    moodycamel::ConcurrentQueue<Item> q{capacity};
    auto producer() {
        return [this](Item v) { return q.enqueue(v); };
    }
    auto consumer() {
        return [this](Item& v) { return q.try_dequeue(v); };
    }
};
#endif

#if CREW_BENCH_BOOST_LOCKFREE
struct BoostLockfree {
    static constexpr bool crew = false;
    static std::string name() { return "boost::lockfree::queue"; }
    boost::lockfree::queue<Item> q{capacity};
    auto producer() {
        return [this](Item v) { return q.push(v); };
    }
    auto consumer() {
        return [this](Item& v) { return q.pop(v); };
    }
};
#endif

struct MutexDeque {
    static constexpr bool crew = false;
    static std::string name() { return "std::mutex + std::deque"; }
    std::mutex m;
    std::deque<Item> q;
    auto producer() {
        return [this](Item v) {
            std::lock_guard lock(m);
            q.push_back(v);
            return true;
        };
    }
    auto consumer() {
        return [this](Item& v) {
            std::lock_guard lock(m);
            if (q.empty()) return false;
            v = q.front();
            q.pop_front();
            return true;
        };
    }
};

/// ns per item to move items 1..n from `producers` to `consumers` threads.
template <class Queue>
double transfer(int producers, int consumers, Item n) {
    auto queue = std::make_unique<Queue>();
    std::atomic<int> ready{0};
    std::atomic<bool> go{false};
    std::atomic<Item> received{0}, sum{0};
    auto start_together = [&] {
        ready.fetch_add(1);
        while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
    };

    std::vector<std::thread> threads;
    for (int p = 0; p < producers; ++p) {
        const Item first = 1 + n * Item(p) / Item(producers), last = 1 + n * Item(p + 1) / Item(producers);
        threads.emplace_back([&, first, last, push = queue->producer()]() mutable {
            start_together();
            for (Item v = first; v < last; ++v)
                while (!push(v)) {
                }
        });
    }
    for (int c = 0; c < consumers; ++c) {
        threads.emplace_back([&, pop = queue->consumer()]() mutable {
            start_together();
            Item v = 0, unreported = 0, my_sum = 0;
            for (;;) {
                if (pop(v)) {
                    ++unreported;
                    my_sum += v;
                    continue;
                }
                // Queue looked empty: publish our count, stop once all arrived.
                if (unreported != 0) received.fetch_add(std::exchange(unreported, 0));
                if (received.load() >= n) break;
            }
            sum.fetch_add(my_sum);
        });
    }
    while (ready.load() != producers + consumers) std::this_thread::yield();
    double s = bench::seconds([&] {
        go.store(true, std::memory_order_release);
        for (auto& t : threads) t.join();
    });
    bench::check(received.load() == n, "every item received exactly once (count)");
    bench::check(sum.load() == n * (n + 1) / 2, "every item received exactly once (sum)");
    return s * 1e9 / static_cast<double>(n);
}

std::vector<bench::Case> every_queue(int producers, int consumers, Item n) {
    std::vector<bench::Case> cases;
    auto add = [&]<class Queue>(std::type_identity<Queue>) {
        cases.push_back({Queue::name(), Queue::crew, [=] { return transfer<Queue>(producers, consumers, n); }});
    };
    add(std::type_identity<CrewQueue>{});
#if CREW_BENCH_MOODYCAMEL
    add(std::type_identity<MoodycamelTokens>{});
    add(std::type_identity<MoodycamelPlain>{});
#endif
#if CREW_BENCH_BOOST_LOCKFREE
    add(std::type_identity<BoostLockfree>{});
#endif
    add(std::type_identity<MutexDeque>{});
    return cases;
}

}  // namespace

int main(int argc, char** argv) {
    const bench::Options opt = bench::parse(argc, argv, false);
    const Item n = opt.n(10'000'000);
    std::printf("## Queues: %llu items, median of %d (after 1 warm-up), unpinned\n",
                static_cast<unsigned long long>(n), opt.reps);
#if !CREW_BENCH_MOODYCAMEL
    std::printf("\n(moodycamel ConcurrentQueue not found at configure time: its rows are skipped)\n");
#endif
#if !CREW_BENCH_BOOST_LOCKFREE
    std::printf("\n(Boost.Lockfree not found at configure time: its rows are skipped)\n");
#endif
    for (auto [producers, consumers] : {std::pair{2, 2}, std::pair{1, 1}}) {
        const std::string title =
            std::to_string(producers) + " producer(s) + " + std::to_string(consumers) + " consumer(s)";
        if (opt.wants(title))
            bench::report(title, "ns per item", bench::measure(every_queue(producers, consumers, n), opt.reps));
    }
    return 0;
}
