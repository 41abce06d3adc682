// crew::LockFreeQueue: edges, blocking, placement, and an MPMC fuzz with a
// type that counts its own constructions and destructions.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

#include <crew/ipc/shared_region.hpp>
#include <crew/lock_free_queue.hpp>

#include "catch.hpp"
#include "test_support.hpp"

namespace {

std::atomic<long> live{0};

// Counts live instances, so a lost or duplicated item shows as a leak or a
// double destruction.
struct Counted {
    std::uint64_t value = 0;
    Counted() noexcept { ++live; }
    explicit Counted(std::uint64_t v) noexcept : value(v) { ++live; }
    Counted(const Counted& o) noexcept : value(o.value) { ++live; }
    Counted(Counted&& o) noexcept : value(o.value) { ++live; }
    Counted& operator=(const Counted&) noexcept = default;
    Counted& operator=(Counted&&) noexcept = default;
    ~Counted() { --live; }
};

}  // namespace

TEST_CASE("capacity rounds up; full and empty edges", "[queue]") {
    crew::LockFreeQueue<int> q(5);
    CHECK(q.capacity() == 8);
    int out = 0;
    CHECK_FALSE(q.try_pop(out));
    for (int i = 0; i < 8; ++i) CHECK(q.try_push(i));
    CHECK_FALSE(q.try_push(99));
    CHECK(q.size_approx() == 8);
    for (int lap = 0; lap < 3; ++lap) {  // wrap around several laps
        for (int i = 0; i < 8; ++i) {
            REQUIRE(q.try_pop(out));
            CHECK(out == i);
            REQUIRE(q.try_push(i));
        }
    }
    CHECK_THROWS_AS(crew::LockFreeQueue<int>(0), crew::InvalidArgument);
    crew::LockFreeQueue<int> one(1);  // one slot cannot tell full from free: rounded to 2
    CHECK(one.capacity() == 2);
    CHECK(one.try_push(1));
    CHECK(one.try_push(2));
    CHECK_FALSE(one.try_push(3));
    CHECK(q.try_pop().value() == 0);
}

TEST_CASE("destruction destroys what is left", "[queue]") {
    live = 0;
    {
        crew::LockFreeQueue<Counted> q(16);
        for (std::uint64_t i = 0; i < 10; ++i) REQUIRE(q.try_emplace(i));
        Counted c;
        REQUIRE(q.try_pop(c));
        CHECK(live == 10);
    }
    CHECK(live == 0);
}

TEST_CASE("blocking push and pop sleep and close wakes them", "[queue]") {
    crew::LockFreeQueue<int> q(2);
    long sum = 0;  // Catch2 assertions are not thread-safe: check on this thread
    std::thread consumer([&] {
        int v = 0;
        while (q.pop(v)) sum += v;
    });
    for (int i = 1; i <= 100; ++i) REQUIRE(q.push(i));  // blocks whenever the 2 slots are full
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    q.close();
    consumer.join();
    CHECK(sum == 5050);
    CHECK_FALSE(q.push(1));
    auto owned = std::make_unique<int>(7);
    crew::LockFreeQueue<std::unique_ptr<int>> closed_queue(2);
    closed_queue.close();
    CHECK_FALSE(closed_queue.push(std::move(owned)));
    CHECK(owned != nullptr);  // refused, so still ours
    int v = 0;
    CHECK_FALSE(q.pop(v));
}

TEST_CASE("a queue placed in caller-provided memory", "[queue]") {
    const std::size_t bytes = crew::LockFreeQueue<std::uint64_t>::bytes_for(64);
    auto* raw = static_cast<unsigned char*>(::operator new(bytes, std::align_val_t{64}));
    auto* q = crew::LockFreeQueue<std::uint64_t>::create_at(raw, 64);
    for (std::uint64_t i = 0; i < 64; ++i) REQUIRE(q->try_push(i));
    CHECK_FALSE(q->try_push(64));
    std::uint64_t v = 0;
    REQUIRE(q->try_pop(v));
    CHECK(v == 0);
    q->~LockFreeQueue();
    ::operator delete(raw, std::align_val_t{64});
}

TEST_CASE("MPMC fuzz: nothing lost, duplicated or leaked", "[queue][stress]") {
    live = 0;
    const std::size_t per_producer = crew_test::scaled(200'000);
    for (std::size_t capacity : {std::size_t{1}, std::size_t{2}, std::size_t{64}, std::size_t{1024}}) {
        for (auto [producers, consumers] : {std::pair{2, 2}, std::pair{4, 1}, std::pair{1, 4}, std::pair{3, 3}}) {
            crew::LockFreeQueue<Counted> q(capacity);
            const std::size_t total = per_producer * static_cast<std::size_t>(producers);
            auto seen = std::make_unique<std::atomic<std::uint8_t>[]>(total);
            std::atomic<std::size_t> received{0};
            std::atomic<std::size_t> failed_pushes{0};
            std::vector<std::thread> threads;
            for (int p = 0; p < producers; ++p) {
                threads.emplace_back([&, p] {
                    std::minstd_rand rng(static_cast<unsigned>(p));
                    for (std::size_t i = 0; i < per_producer; ++i) {
                        Counted item(static_cast<std::uint64_t>(p) * per_producer + i);
                        if (rng() % 2) {
                            if (!q.push(std::move(item))) ++failed_pushes;
                        } else {
                            while (!q.try_push(std::move(item))) std::this_thread::yield();
                        }
                    }
                });
            }
            for (int c = 0; c < consumers; ++c) {
                threads.emplace_back([&] {
                    Counted item;
                    while (received.load() < total) {
                        if (!q.try_pop(item)) {
                            std::this_thread::yield();
                            continue;
                        }
                        seen[item.value].fetch_add(1);
                        received.fetch_add(1);
                    }
                });
            }
            for (auto& t : threads) t.join();
            std::size_t wrong = 0;
            for (std::size_t i = 0; i < total; ++i) wrong += seen[i].load() != 1;
            INFO("capacity " << capacity << ", " << producers << "P" << consumers << "C");
            CHECK(wrong == 0);
            CHECK(received == total);
            CHECK(failed_pushes == 0);
        }
    }
    CHECK(live == 0);
}

TEST_CASE("a queue in shared memory: 2 producer and 2 consumer processes, each item exactly once",
          "[queue][process]") {
    using Queue = crew::LockFreeQueue<std::uint32_t>;
    const std::uint32_t items = crew_test::sanitized() ? 100'000 : 1'000'000;
    const std::size_t capacity = 1024;
    // The queue, then one receive counter per item; nothing else is shared.
    auto region = crew::ipc::SharedRegion::anonymous(Queue::bytes_for(capacity) + items);
    Queue* q = Queue::create_at(region.data(), capacity, crew::Sharing::between_processes);
    auto* received = reinterpret_cast<std::atomic<std::uint8_t>*>(static_cast<unsigned char*>(region.data()) +
                                                                  Queue::bytes_for(capacity));
    static_assert(sizeof(std::atomic<std::uint8_t>) == 1 && std::atomic<std::uint8_t>::is_always_lock_free);

    auto start = [](auto body) {
        const pid_t pid = ::fork();
        REQUIRE(pid >= 0);
        if (pid == 0) ::_exit(body());
        return pid;
    };
    auto exit_code = [](pid_t pid) {
        int status = 0;
        ::waitpid(pid, &status, 0);
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    };
    std::vector<pid_t> producers, consumers;
    for (std::uint32_t p = 0; p < 2; ++p)
        producers.push_back(start([=] {
            for (std::uint32_t i = p; i < items; i += 2)
                if (!q->push(i)) return 1;
            return 0;
        }));
    for (int c = 0; c < 2; ++c)
        consumers.push_back(start([=] {
            std::uint32_t item = 0;
            while (q->pop(item)) {
                if (item >= items) return 1;
                received[item].fetch_add(1, std::memory_order_relaxed);
            }
            return 0;
        }));
    for (pid_t p : producers) CHECK(exit_code(p) == 0);
    q->close();  // consumers drain what is left, then their pop() fails
    for (pid_t c : consumers) CHECK(exit_code(c) == 0);

    std::size_t wrong = 0;
    for (std::uint32_t i = 0; i < items; ++i) wrong += received[i].load() != 1;
    CHECK(wrong == 0);
    q->~LockFreeQueue();
}
