// detail::BlockPool: the recycler of ThreadExecutor's task objects. Blocks a
// worker frees reach the thread that submits, the shelf stays bounded, and
// tasks built in recycled blocks run with their own data, from many threads.
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <crew/detail/block_pool.hpp>
#include <crew/detail/sanitizers.hpp>
#include <crew/thread_executor.hpp>

#include "catch.hpp"

namespace {

using Pool = crew::detail::BlockPool<64>;

}  // namespace

TEST_CASE("blocks one thread frees are reused by the thread that allocates", "[block_pool]") {
    if constexpr (crew::detail::under_asan) {
        WARN("skipped: the pool is off under AddressSanitizer");
        return;
    }
    // Empty this thread's own list first, so what it allocates next can only
    // come from the shelf or the system.
    std::vector<void*> own;
    for (std::size_t i = 0; i < 4 * Pool::batch; ++i) own.push_back(Pool::allocate());

    std::vector<void*> blocks;
    for (std::size_t i = 0; i < 4 * Pool::batch; ++i) blocks.push_back(::operator new(64));
    const std::set<void*> freed(blocks.begin(), blocks.end());
    std::thread([&] {
        for (void* b : blocks) Pool::deallocate(b);
    }).join();

    // The other thread spilled three batches to the shelf (and freed its last
    // batch when it ended): they come back here.
    std::size_t reused = 0;
    std::vector<void*> again;
    for (std::size_t i = 0; i < 3 * Pool::batch; ++i) {
        again.push_back(Pool::allocate());
        reused += freed.count(again.back());
    }
    CHECK(reused >= 2 * Pool::batch);
    for (void* b : again) Pool::deallocate(b);
    for (void* b : own) Pool::deallocate(b);
}

TEST_CASE("the shelf keeps a bounded number of blocks, however many were freed", "[block_pool]") {
    if constexpr (crew::detail::under_asan) {
        WARN("skipped: the pool is off under AddressSanitizer");
        return;
    }
    std::thread([] {
        for (std::size_t i = 0; i < 4 * Pool::max_shelved * Pool::batch; ++i) Pool::deallocate(::operator new(64));
    }).join();
    CHECK(Pool::shelved() <= Pool::max_shelved);
    CHECK(Pool::shelved() > 0);
}

TEST_CASE("posts and submits from four threads each run once with their own data", "[block_pool][thread]") {
    crew::ThreadExecutor<> ex(2);
    std::atomic<std::uint64_t> sum{0};
    std::atomic<std::size_t> runs{0};
    constexpr std::size_t per_thread = 20'000;
    std::vector<std::thread> submitters;
    std::atomic<bool> futures_ok{true};
    for (std::uint64_t t = 0; t < 4; ++t)
        submitters.emplace_back([&, t] {
            std::vector<crew::Future<std::string>> futures;
            for (std::uint64_t i = 0; i < per_thread; ++i) {
                const std::uint64_t value = t * per_thread + i;
                // A small capture (64-byte blocks) and a larger one (128).
                ex.post([&, value] {
                    sum.fetch_add(value, std::memory_order_relaxed);
                    runs.fetch_add(1, std::memory_order_relaxed);
                });
                if (i % 16 == 0) {
                    std::uint64_t pad[6] = {value, value + 1, value + 2, value + 3, value + 4, value + 5};
                    futures.push_back(ex.submit([pad] { return std::to_string(pad[0] + pad[5]); }));
                }
            }
            for (std::uint64_t i = 0; i < futures.size(); ++i) {
                const std::uint64_t value = t * per_thread + i * 16;
                if (futures[i].get() != std::to_string(2 * value + 5)) futures_ok = false;
            }
        });
    for (auto& s : submitters) s.join();
    ex.wait_idle();
    const std::uint64_t n = 4 * per_thread;
    CHECK(runs.load() == n);
    CHECK(sum.load() == n * (n - 1) / 2);
    CHECK(futures_ok.load());
}
