// 06_race: a lost-update race, and four ways to fix it.
//
// What it teaches: "read the counter, add one, write it back" is three steps.
// When two threads interleave them, both read the same old value and one
// increment is lost. (The counter here is a std::atomic read and written with
// separate relaxed load and store: each step is atomic, so there is no
// undefined behaviour, yet the read-modify-write as a whole is not. With a
// plain int it would be a data race: undefined behaviour, not just a wrong
// count.) The fixes, and what each costs:
//   mutex      one thread at a time in the critical section; cheap when
//              uncontended, waiters sleep in the kernel when contended.
//   semaphore  a crew::ipc::Semaphore with one unit does the same job (and
//              works between processes too); same costs, no owner checks.
//   queue      no sharing at all: threads push increments into a
//              crew::LockFreeQueue and one owner thread applies them;
//              costs a queue slot per item and an extra thread.
//   fetch_add  one indivisible hardware instruction: the cheapest, but only
//              for updates that fit in one atomic (one counter, one flag).
//
// What to look for in the output: the unsafe count is usually short of the
// expected total (it can be exact by luck on a quiet machine; that is not
// checked); every fix gives exactly the total. Times are printed, not checked.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <latch>
#include <mutex>
#include <thread>
#include <vector>

#include <crew/crew.hpp>

namespace {

constexpr int threads = 4;
constexpr int per_thread = 200'000;
constexpr long expected = long{threads} * per_thread;

// Run `increment` per_thread times on each of `threads` threads; print the time.
void hammer(const char* label, const std::function<void()>& increment) {
    const auto start = std::chrono::steady_clock::now();
    std::latch ready(threads);  // start together, so the threads really overlap
    std::vector<std::jthread> pool;
    for (int t = 0; t < threads; ++t)
        pool.emplace_back([&] {
            ready.arrive_and_wait();
            for (int i = 0; i < per_thread; ++i) increment();
        });
    pool.clear();  // joins every thread
    std::printf("%-10s %6.1f ms  ", label,
                std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
}

bool report(long count) {
    std::printf("count %ld of %ld%s\n", count, expected, count == expected ? "" : " (updates lost)");
    return count == expected;
}

}  // namespace

int main(int argc, char** argv) {
    crew::Session session(argc, argv);  // first: spawned workers serve from here
    // Unsafe: load, then store; another thread's store in between is lost.
    std::atomic<long> racy{0};
    hammer("unsafe", [&] {
        const long v = racy.load(std::memory_order_relaxed);
        // Now and then give the CPU away between the read and the write, as a
        // preemption at the wrong moment would: the loss then shows even when
        // the threads take turns on one core.
        if (v % 256 == 0) std::this_thread::yield();
        racy.store(v + 1, std::memory_order_relaxed);
    });
    report(racy.load());  // not checked: losing updates is the point, but not guaranteed

    bool ok = true;

    long with_mutex = 0;  // plain data, only touched while holding the lock
    std::mutex mutex;
    hammer("mutex", [&] {
        std::lock_guard lock(mutex);
        ++with_mutex;
    });
    ok = report(with_mutex) && ok;

    long with_semaphore = 0;
    crew::ipc::Semaphore binary(1);  // one unit: a lock without an owner
    hammer("semaphore", [&] {
        binary.acquire();
        ++with_semaphore;
        binary.release();
    });
    ok = report(with_semaphore) && ok;

    // One owner thread holds the count; the others only send it "+1" messages.
    crew::LockFreeQueue<int> inbox(1024);
    long owned = 0;
    std::thread owner([&] {
        int delta = 0;
        while (inbox.pop(delta)) owned += delta;  // pop() fails once closed and empty
    });
    hammer("queue", [&] { inbox.push(1); });
    inbox.close();
    owner.join();  // join: now this thread may read `owned`
    ok = report(owned) && ok;

    std::atomic<long> counter{0};
    hammer("fetch_add", [&] { counter.fetch_add(1, std::memory_order_relaxed); });
    ok = report(counter.load()) && ok;

    if (!ok) {
        std::fprintf(stderr, "FAIL: a fixed version lost updates\n");
        return 1;
    }
    return 0;
}
