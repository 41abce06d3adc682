// 08_deadlock: two threads, two locks, opposite order: a deadlock, caught by
// a timeout, then fixed by taking both locks at once.
//
// What it teaches: thread 1 holds lock A and wants B; thread 2 holds B and
// wants A. Each waits for the other forever. Waiting with a timeout
// (try_lock_for) turns "forever" into "deadlock detected"; the real fix is to
// never hold one lock while waiting for another in a different order.
// std::scoped_lock(a, b) takes several locks with a deadlock-avoidance
// algorithm, whatever order each thread lists them in.
//
// What to look for in the output: "deadlock detected" from at least one
// thread in part 1 (both hold their first lock before either tries its
// second, so one of them must time out), then part 2 finishing its transfers
// with the total unchanged. Nothing here can hang: every wait in part 1 has a
// timeout, and part 2 cannot deadlock.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <latch>
#include <mutex>
#include <thread>

namespace {

using namespace std::chrono_literals;

std::timed_mutex a, b;

// Part 1: take `first`, wait until the other thread holds its first lock too,
// then try for `second` with a timeout.
void lock_in_order(std::timed_mutex& first, std::timed_mutex& second, const char* name, std::latch& both_hold,
                   std::atomic<int>& detected) {
    std::unique_lock hold_first(first);
    both_hold.arrive_and_wait();  // makes the bad interleaving certain instead of rare
    std::unique_lock hold_second(second, std::defer_lock);
    if (hold_second.try_lock_for(200ms)) {
        std::printf("  %s: got both locks (the other thread gave up first)\n", name);
    } else {
        std::printf("  %s: deadlock detected: waited 200 ms for the second lock\n", name);
        detected.fetch_add(1);
    }
}  // unlocks in reverse order, letting the other thread go on

// Part 2: move money between two accounts, each guarded by its own lock.
int account_a = 1000, account_b = 1000;

void transfer(std::timed_mutex& from_lock, int& from, std::timed_mutex& to_lock, int& to, int times) {
    for (int i = 0; i < times; ++i) {
        std::scoped_lock both(from_lock, to_lock);  // all or nothing: never holds one while blocking on the other
        from -= 1;
        to += 1;
    }
}

}  // namespace

int main() {
    std::printf("part 1: opposite lock order\n");
    std::atomic<int> detected{0};
    {
        std::latch both_hold(2);
        std::jthread t1(lock_in_order, std::ref(a), std::ref(b), "thread 1", std::ref(both_hold), std::ref(detected));
        std::jthread t2(lock_in_order, std::ref(b), std::ref(a), "thread 2", std::ref(both_hold), std::ref(detected));
    }  // jthreads join here

    std::printf("part 2: std::scoped_lock, same opposite order\n");
    {
        std::jthread t1(transfer, std::ref(a), std::ref(account_a), std::ref(b), std::ref(account_b), 20'000);
        std::jthread t2(transfer, std::ref(b), std::ref(account_b), std::ref(a), std::ref(account_a), 20'000);
    }
    std::printf("  done: a = %d, b = %d, total %d\n", account_a, account_b, account_a + account_b);

    if (detected.load() == 0 || account_a + account_b != 2000) {
        std::fprintf(stderr, "FAIL: expected a detected deadlock in part 1 and an unchanged total in part 2\n");
        return 1;
    }
    return 0;
}
