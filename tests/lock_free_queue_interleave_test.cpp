// crew::LockFreeQueue under forced interleavings: every small capacity (1-4,
// which the queue rounds to 2 and 4), 1-3 producers x 1-3 consumers, try and
// blocking calls in every combination, and close() while callers are
// blocked or busy. The queue's test hook (CREW_DETAIL_LFQ_YIELD, defined
// below before the header) runs between each of its atomic steps and, driven
// by a seeded per-thread random sequence, does nothing, yields, spins a
// little or sleeps: so a thread is often caught between taking a ticket and
// publishing its slot, or between a failed attempt and its look at closed(),
// the windows a plain stress test almost never hits on two cores.
//
// Checked for each case: every item pushed is popped exactly once, each
// consumer sees each producer's items in the order pushed, nothing is
// constructed or destroyed twice, the case ends within a time bound (a hang
// aborts the program with the case's name), close() wakes every blocked
// caller, and an item pushed before close() is never left queued by the
// last pop() (a slow consumer is stopped at each of its steps in turn while
// the push and close() happen). Not a model checker: it samples
// interleavings, many of them, with the pauses placed where the protocol's
// invariants are most fragile.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace interleave {

// The hook's random sequence, one per thread; 0: no pauses (a thread that
// did not seed it, e.g. Catch2's).
inline thread_local std::uint64_t state = 0;

inline void seed(std::uint64_t s) noexcept { state = s * 0x9E37'79B9'7F4A'7C15ull | 1; }

// When set, every hook stops the thread this long (a slow thread whose every
// step may be overtaken), and counts its steps in `steps`.
inline thread_local int stop_us = 0;
inline std::atomic<int> steps{0};

inline void pause() noexcept {
    if (stop_us > 0) {
        steps.fetch_add(1);
        std::this_thread::sleep_for(std::chrono::microseconds(stop_us));
        return;
    }
    if (state == 0) return;
    std::uint64_t x = state;  // xorshift64
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    state = x;
    switch (x % 16) {
        case 8: case 9: case 10: case 11: case 12:
            std::this_thread::yield();
            break;
        case 13: case 14:
            for (std::uint64_t i = (x >> 8) % 64; i > 0; --i) std::atomic_signal_fence(std::memory_order_seq_cst);
            break;
        case 15:
            // Now and then a long stop, as if preempted mid-step.
            if ((x >> 8) % 8 == 0)
                std::this_thread::sleep_for(std::chrono::microseconds(50));
            else
                std::this_thread::yield(), std::this_thread::yield();
            break;
        default:  // half the time: straight on
            break;
    }
}

}  // namespace interleave

#define CREW_DETAIL_LFQ_YIELD() ::interleave::pause()
#include <crew/lock_free_queue.hpp>

#include "catch.hpp"
#include "test_support.hpp"

namespace {

using Clock = std::chrono::steady_clock;

std::atomic<long> live{0};

// An item that counts its instances: a lost or duplicated item shows as a
// count that does not return to 0.
struct Item {
    std::uint64_t value = 0;  // producer << 32 | sequence number
    Item() noexcept { ++live; }
    explicit Item(std::uint64_t v) noexcept : value(v) { ++live; }
    Item(const Item& o) noexcept : value(o.value) { ++live; }
    Item(Item&& o) noexcept : value(o.value) { ++live; }
    Item& operator=(const Item&) noexcept = default;
    Item& operator=(Item&&) noexcept = default;
    ~Item() { --live; }
};

using Queue = crew::LockFreeQueue<Item>;

// Time allowed for one case before it counts as a hang.
constexpr auto case_limit = crew_test::sanitized() ? std::chrono::seconds(120) : std::chrono::seconds(20);

// Counts threads that finished, with a bounded wait for them.
class Finish {
public:
    void done() {
        std::lock_guard lock(m_);
        ++n_;
        cv_.notify_all();
    }
    // Waits until `n` threads finished; on a hang, aborts the whole program
    // (the stuck threads cannot be joined) naming the case.
    void wait_for(int n, const std::string& what, const Queue& q) {
        std::unique_lock lock(m_);
        if (!cv_.wait_until(lock, Clock::now() + case_limit, [&] { return n_ >= n; })) {
            std::fprintf(stderr, "HANG in %s: %d of %d threads finished, %zu items queued, closed=%d\n", what.c_str(),
                         n_, n, q.size_approx(), int(q.closed()));
            std::abort();
        }
    }

private:
    std::mutex m_;
    std::condition_variable cv_;
    int n_ = 0;
};

enum class Push { try_push, push };
enum class Pop { try_pop, pop };

struct Case {
    std::size_t capacity;
    int producers;
    int consumers;
    Push push;
    Pop pop;
    std::uint64_t seed;

    std::string name() const {
        return "capacity " + std::to_string(capacity) + ", " + std::to_string(producers) + "P" +
               std::to_string(consumers) + "C, " + (push == Push::push ? "push" : "try_push") + "/" +
               (pop == Pop::pop ? "pop" : "try_pop") + ", seed " + std::to_string(seed);
    }
};

// What went wrong in one case (empty: nothing).
std::string run(const Case& c, std::size_t per_producer) {
    live = 0;
    std::vector<std::vector<std::uint64_t>> got(static_cast<std::size_t>(c.consumers));
    std::atomic<std::size_t> failed_pushes{0};
    {
        Queue q(c.capacity);
        const std::size_t total = per_producer * static_cast<std::size_t>(c.producers);
        std::atomic<std::size_t> received{0};
        Finish producers_done, consumers_done;
        std::vector<std::thread> threads;
        for (int p = 0; p < c.producers; ++p) {
            threads.emplace_back([&, p] {
                interleave::seed(c.seed * 16 + static_cast<std::uint64_t>(p));
                for (std::size_t i = 0; i < per_producer; ++i) {
                    Item item(std::uint64_t(p) << 32 | i);
                    if (c.push == Push::push) {
                        if (!q.push(std::move(item))) ++failed_pushes;
                    } else {
                        while (!q.try_push(std::move(item))) std::this_thread::yield();
                    }
                }
                interleave::state = 0;
                producers_done.done();
            });
        }
        for (int k = 0; k < c.consumers; ++k) {
            threads.emplace_back([&, k] {
                interleave::seed(c.seed * 16 + 8 + static_cast<std::uint64_t>(k));
                auto& mine = got[static_cast<std::size_t>(k)];
                Item item;
                if (c.pop == Pop::pop) {
                    // Until close() and empty: the main thread closes once
                    // every producer is done, so this also drains.
                    while (q.pop(item)) mine.push_back(item.value);
                } else {
                    while (received.load() < total) {
                        if (q.try_pop(item)) {
                            mine.push_back(item.value);
                            ++received;
                        } else {
                            std::this_thread::yield();
                        }
                    }
                }
                interleave::state = 0;
                consumers_done.done();
            });
        }
        producers_done.wait_for(c.producers, c.name() + " (producers)", q);
        interleave::seed(c.seed * 16 + 7);
        q.close();  // wakes blocked pops; they drain what is left, then fail
        interleave::state = 0;
        consumers_done.wait_for(c.consumers, c.name() + " (consumers)", q);
        for (auto& t : threads) t.join();
        if (q.size_approx() != 0) return "items left in the queue after every consumer ended";
    }
    if (failed_pushes != 0) return std::to_string(failed_pushes.load()) + " blocking pushes failed before close()";
    if (live != 0) return "live items after the queue was destroyed: " + std::to_string(live.load());

    std::vector<std::vector<std::uint8_t>> seen(static_cast<std::size_t>(c.producers),
                                                std::vector<std::uint8_t>(per_producer, 0));
    for (const auto& mine : got) {
        std::vector<std::int64_t> last(static_cast<std::size_t>(c.producers), -1);
        for (std::uint64_t v : mine) {
            const auto p = static_cast<std::size_t>(v >> 32);
            const auto i = static_cast<std::int64_t>(v & 0xffff'ffffu);
            if (p >= seen.size() || i >= static_cast<std::int64_t>(per_producer)) return "an item nobody pushed";
            if (i <= last[p]) return "producer " + std::to_string(p) + "'s items out of order";
            last[p] = i;
            ++seen[p][static_cast<std::size_t>(i)];
        }
    }
    for (std::size_t p = 0; p < seen.size(); ++p)
        for (std::size_t i = 0; i < per_producer; ++i)
            if (seen[p][i] != 1)
                return "producer " + std::to_string(p) + "'s item " + std::to_string(i) + " popped " +
                       std::to_string(seen[p][i]) + " times";
    return {};
}

}  // namespace

TEST_CASE("interleavings: every small capacity, 1-3 producers x 1-3 consumers, try and blocking calls",
          "[queue][interleave]") {
    const std::size_t per_producer = crew_test::sanitized() ? 100 : 200;
    const std::uint64_t seeds = crew_test::sanitized() ? 2 : 5;
    std::size_t cases = 0;
    const auto start = Clock::now();
    for (std::size_t capacity = 1; capacity <= 4; ++capacity)
        for (int producers = 1; producers <= 3; ++producers)
            for (int consumers = 1; consumers <= 3; ++consumers)
                for (Push push : {Push::try_push, Push::push})
                    for (Pop pop : {Pop::try_pop, Pop::pop})
                        for (std::uint64_t seed = 1; seed <= seeds; ++seed) {
                            const Case c{capacity, producers, consumers, push, pop, seed};
                            const std::string wrong = run(c, per_producer);
                            if (!wrong.empty()) FAIL(c.name() << ": " << wrong);
                            ++cases;
                        }
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
    WARN(cases << " cases, " << per_producer << " items per producer, in " << ms << " ms");
}

TEST_CASE("interleavings: close() wakes every blocked pop and push", "[queue][interleave]") {
    const int rounds = crew_test::sanitized() ? 4 : 10;
    for (std::size_t capacity = 1; capacity <= 4; ++capacity) {
        for (int blocked = 1; blocked <= 3; ++blocked) {
            for (int round = 0; round < rounds; ++round) {
                const std::uint64_t seed = capacity * 1000 + static_cast<std::uint64_t>(blocked * 100 + round);
                const std::string name = "capacity " + std::to_string(capacity) + ", " + std::to_string(blocked) +
                                         " blocked, round " + std::to_string(round);
                live = 0;
                {
                    // Pops on an empty queue.
                    Queue q(capacity);
                    Finish finished;
                    std::atomic<int> entered{0}, returned_false{0};
                    std::vector<std::thread> threads;
                    for (int k = 0; k < blocked; ++k)
                        threads.emplace_back([&, k] {
                            interleave::seed(seed * 16 + static_cast<std::uint64_t>(k));
                            Item item;
                            ++entered;
                            if (!q.pop(item)) ++returned_false;
                            interleave::state = 0;
                            finished.done();
                        });
                    while (entered.load() < blocked) std::this_thread::yield();
                    // Most rounds let them fall asleep; some close mid-spin.
                    if (round % 3 != 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));
                    interleave::seed(seed * 16 + 15);
                    q.close();
                    interleave::state = 0;
                    finished.wait_for(blocked, name + " (pops)", q);
                    for (auto& t : threads) t.join();
                    INFO(name);
                    CHECK(returned_false == blocked);
                }
                {
                    // Pushes on a full queue: refused, the item still the caller's.
                    Queue q(capacity);
                    for (std::size_t i = 0; i < q.capacity(); ++i) REQUIRE(q.try_push(Item(i)));
                    Finish finished;
                    std::atomic<int> entered{0}, refused_intact{0};
                    std::vector<std::thread> threads;
                    for (int k = 0; k < blocked; ++k)
                        threads.emplace_back([&, k] {
                            interleave::seed(seed * 16 + 8 + static_cast<std::uint64_t>(k));
                            Item item(1000 + static_cast<std::uint64_t>(k));
                            ++entered;
                            if (!q.push(std::move(item)) && item.value == 1000 + static_cast<std::uint64_t>(k))
                                ++refused_intact;
                            interleave::state = 0;
                            finished.done();
                        });
                    while (entered.load() < blocked) std::this_thread::yield();
                    if (round % 3 != 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));
                    interleave::seed(seed * 16 + 7);
                    q.close();
                    interleave::state = 0;
                    finished.wait_for(blocked, name + " (pushes)", q);
                    for (auto& t : threads) t.join();
                    INFO(name);
                    CHECK(refused_intact == blocked);
                    // What was queued before close() still drains.
                    std::size_t drained = 0;
                    Item item;
                    while (q.pop(item)) ++drained;
                    CHECK(drained == q.capacity());
                }
                CHECK(live == 0);
            }
        }
    }
}

TEST_CASE("interleavings: an item pushed just before close() is not left behind by a blocked pop",
          "[queue][interleave]") {
    // A slow consumer (every step of the queue stops it 20 us) waits in
    // pop() on an empty queue; the main thread pushes one item during the
    // consumer's k-th step (k random, over the whole spin and the steps
    // before it sleeps) and closes at once. Whenever the push lands between
    // one of the consumer's failed attempts and its look at closed(), pop()
    // must still take the item (pop fails only when the queue is closed
    // *and* empty): the shutdown of an executor is exactly this, and a task
    // left in the queue would be a future that never becomes ready.
    const int rounds = crew_test::sanitized() ? 150 : 400;
    std::minstd_rand rng(20261122);
    int left_behind = 0;
    for (int round = 0; round < rounds; ++round) {
        live = 0;
        {
            Queue q(2);
            Finish finished;
            int popped = 0;
            interleave::steps = 0;
            std::thread consumer([&] {
                interleave::stop_us = 20;
                Item item;
                while (q.pop(item)) ++popped;
                interleave::stop_us = 0;
                finished.done();
            });
            // About 90 steps before pop() goes to sleep (64 + 16 attempts
            // spinning, then the blocking loop's).
            const int k = static_cast<int>(rng() % 110) + 1;
            // (When k is past the last step, the consumer's steps stop: it
            // sleeps; push then, 1 ms after its last step.)
            auto moved = Clock::now();
            for (int seen = 0, now = 0; (now = interleave::steps.load()) < k;) {
                if (now != seen) {
                    seen = now;
                    moved = Clock::now();
                } else if (seen > 0 && Clock::now() - moved > std::chrono::milliseconds(1)) {
                    break;
                }
                std::this_thread::yield();
            }
            std::this_thread::sleep_for(std::chrono::microseconds(rng() % 20));
            REQUIRE(q.try_push(Item(1)));
            q.close();
            finished.wait_for(1, "round " + std::to_string(round), q);
            consumer.join();
            left_behind += popped == 0;
            INFO("round " << round << ", pushed at step " << k);
            CHECK(popped == 1);
        }
        CHECK(live == 0);
    }
    CHECK(left_behind == 0);
}

TEST_CASE("interleavings: close() while producers and consumers are busy loses no accepted item",
          "[queue][interleave]") {
    // Producers push until told to stop, consumers pop until pop() says
    // closed and empty; close() comes at a random moment, in two ways:
    //   * even rounds, as an executor shuts down: producers are stopped and
    //     have returned, then close() (every accepted item must reach a
    //     consumer: pop() may only fail once the queue is closed *and* empty);
    //   * odd rounds, producers still pushing: close() races push(). A push
    //     may still succeed after close() began (push() looks at closed()
    //     before it tries; try_push works on a closed queue by design), and
    //     while a racing push holds a ticket it has not published, the items
    //     after it cannot be popped yet: such items may stay queued once the
    //     consumers have gone, and the test takes them out itself. So there
    //     an item left behind must come with a push that ended after close()
    //     began.
    // Either way every accepted item comes out exactly once, in order per
    // producer and consumer.
    const int rounds = crew_test::sanitized() ? 10 : 30;
    std::size_t cases = 0, late = 0;
    for (std::size_t capacity = 1; capacity <= 4; ++capacity) {
        for (int producers = 1; producers <= 3; ++producers) {
            for (int consumers = 1; consumers <= 3; ++consumers) {
                for (int round = 0; round < rounds; ++round) {
                    const std::uint64_t seed =
                        capacity * 10'000 + static_cast<std::uint64_t>(producers * 1000 + consumers * 100 + round);
                    const std::string name = "capacity " + std::to_string(capacity) + ", " +
                                             std::to_string(producers) + "P" + std::to_string(consumers) +
                                             "C, round " + std::to_string(round);
                    live = 0;
                    // Per producer: 1 for each accepted item whose push()
                    // returned before close() began, 2 for one that returned after.
                    std::vector<std::vector<std::uint8_t>> accepted(static_cast<std::size_t>(producers));
                    std::vector<std::vector<std::uint64_t>> got(static_cast<std::size_t>(consumers));
                    std::vector<std::uint64_t> left;  // still queued after every thread ended
                    std::atomic<bool> closing{false}, stop{false};
                    const bool racing = round % 2 == 1;
                    {
                        Queue q(capacity);
                        Finish finished;
                        std::vector<std::thread> threads;
                        for (int p = 0; p < producers; ++p)
                            threads.emplace_back([&, p] {
                                interleave::seed(seed * 16 + static_cast<std::uint64_t>(p));
                                auto& mine = accepted[static_cast<std::size_t>(p)];
                                for (std::uint64_t i = 0; !stop.load(); ++i) {
                                    if (!q.push(Item(std::uint64_t(p) << 32 | i))) break;
                                    mine.push_back(closing.load() ? 2 : 1);
                                }
                                interleave::state = 0;
                                finished.done();
                            });
                        for (int k = 0; k < consumers; ++k)
                            threads.emplace_back([&, k] {
                                interleave::seed(seed * 16 + 8 + static_cast<std::uint64_t>(k));
                                Item item;
                                while (q.pop(item)) got[static_cast<std::size_t>(k)].push_back(item.value);
                                interleave::state = 0;
                                finished.done();
                            });
                        std::this_thread::sleep_for(std::chrono::microseconds(200 + (seed * 7919) % 1500));
                        if (!racing) {
                            stop = true;
                            finished.wait_for(producers, name + " (producers)", q);
                        }
                        interleave::seed(seed * 16 + 15);
                        closing = true;
                        q.close();
                        interleave::state = 0;
                        finished.wait_for(producers + consumers, name, q);
                        for (auto& t : threads) t.join();
                        Item item;
                        while (q.try_pop(item)) left.push_back(item.value);
                    }
                    INFO(name);
                    CHECK(live == 0);
                    std::vector<std::vector<std::uint8_t>> seen(static_cast<std::size_t>(producers));
                    for (int p = 0; p < producers; ++p)
                        seen[static_cast<std::size_t>(p)].assign(accepted[static_cast<std::size_t>(p)].size(), 0);
                    std::size_t unknown = 0, out_of_order = 0, stranded = 0, pushed_late = 0;
                    for (const auto& a : accepted)
                        pushed_late += static_cast<std::size_t>(std::count(a.begin(), a.end(), 2));
                    auto count = [&](std::uint64_t v, std::int64_t* last) {
                        const auto p = static_cast<std::size_t>(v >> 32);
                        const auto i = static_cast<std::int64_t>(v & 0xffff'ffffu);
                        if (p >= seen.size() || static_cast<std::size_t>(i) >= seen[p].size()) {
                            ++unknown;
                            return;
                        }
                        if (last != nullptr) {
                            out_of_order += i <= last[p];
                            last[p] = i;
                        } else {
                            stranded += accepted[p][static_cast<std::size_t>(i)] == 1;
                            ++late;
                        }
                        ++seen[p][static_cast<std::size_t>(i)];
                    };
                    for (const auto& mine : got) {
                        std::vector<std::int64_t> last(static_cast<std::size_t>(producers), -1);
                        for (std::uint64_t v : mine) count(v, last.data());
                    }
                    for (std::uint64_t v : left) count(v, nullptr);
                    std::size_t not_once = 0;
                    for (const auto& s : seen) not_once += static_cast<std::size_t>(std::count_if(
                                                   s.begin(), s.end(), [](std::uint8_t n) { return n != 1; }));
                    CHECK(unknown == 0);
                    CHECK(out_of_order == 0);
                    CHECK(not_once == 0);
                    // Accepted before close() began, yet no consumer took it.
                    if (racing)
                        CHECK((stranded == 0 || pushed_late > 0));
                    else
                        CHECK(stranded + left.size() == 0);
                    ++cases;
                }
            }
        }
    }
    WARN(cases << " close-while-busy cases; " << late << " items stayed queued behind a push racing close()");
}
