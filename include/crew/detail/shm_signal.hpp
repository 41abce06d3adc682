// crew/detail/shm_signal.hpp — how a process sleeps until its peer changed
// something in memory they share: the process-shared form of each Sync policy.
//
// crew::ipc::SharedMemory's rings are guarded by one of these (chosen by the
// Sync policy of the ProcessExecutor, or by BasicSharedMemory<Sync> when the
// channel is used on its own):
//
//   policy           signal            a waiter sleeps on          a notify costs (nobody asleep)
//   sync::LockFree   FutexSignal       a futex (event count)       a fence and a load
//   sync::Mutex      MonitorSignal     robust ipc::Mutex +         a fence and a load
//                                      ipc::ConditionVariable
//   sync::Semaphore  SemaphoreSignal   an ipc::Semaphore the       a fence and a load
//                                      notifier posts
//
// FutexSignal and the shared_signal concept all three model live in
// crew/detail/shared_signal.hpp, so that the default policy does not compile
// the two forms below.
//
// Every signal models shared_signal: the event-count interface that
// detail::await() and wait_for_peer() use,
//   key = prepare_wait()   announce a waiter; re-check the condition after it
//   cancel_wait()          the condition held after all
//   wait(key, deadline)    sleep unless notified since prepare_wait(); false on timeout
//   notify_one/all()       after changing the condition
// and the same guarantee: a notify that follows a change cannot be missed by
// a waiter whose re-check (after prepare_wait) did not see the change.
//
// All three live inside shared memory, hold no pointers, and survive the
// death of a peer at any point: the futex and the semaphore keep no per-
// waiter state a dead process could leave behind (a dead waiter's announce
// only costs later notifies a syscall), and the monitor's mutex is robust (a
// peer that dies holding it hands it over with owner_died; the state it
// guards is one counter, consistent after every store). A peer stopped
// holding the monitor's mutex delays, but never blocks, a wait with a
// deadline.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string_view>
#include <thread>

#include <crew/detail/event_count.hpp>
#include <crew/detail/shared_signal.hpp>
#include <crew/ipc/mutex.hpp>
#include <crew/ipc/semaphore.hpp>

namespace crew::detail {

/// sync::Mutex's form: the classic monitor. A waiter sleeps on a process-
/// shared condition variable under a robust process-shared mutex; a notifier
/// that sees a waiter announced takes the mutex to bump the epoch and wake it.
/// The announce is Dekker-style, as in EventCount (a counter the notifier
/// reads after its change), so a notify with nobody waiting takes no lock.
///
/// No lock is held past a deadline, because the peer may be stopped
/// (SIGSTOP, a debugger) holding the mutex: a waiter gives up at its
/// deadline, even while taking the mutex back after its sleep, and a notifier
/// gives up after notify_patience. A notify given up is not lost for good:
/// every waiter of wait_for_peer() sleeps at most peer_check_interval before
/// it looks again.
class MonitorSignal {
public:
    static constexpr std::string_view channel_name = "shm-mutex";
    static constexpr std::uint64_t tag = 2;

    WaitKey prepare_wait() noexcept {
        waiters_.announce();
        return WaitKey{epoch_.load(std::memory_order_seq_cst)};
    }
    void cancel_wait() noexcept { waiters_.withdraw(); }
    bool wait(WaitKey key, const std::chrono::steady_clock::time_point* deadline = nullptr) noexcept {
        const bool woke = sleep(key.epoch, deadline);
        waiters_.withdraw();
        return woke;
    }
    void notify_one() noexcept { notify(); }
    void notify_all() noexcept { notify(); }  // one waiter per signal: the same

private:
    using Clock = std::chrono::steady_clock;
    // How long wait() sleeps when the mutex is unusable.
    static constexpr std::chrono::milliseconds unusable_nap{10};
    // How long a notifier waits for a mutex the peer holds: far longer than
    // any critical section here, far shorter than peer_check_interval.
    static constexpr std::chrono::milliseconds notify_patience{10};

    bool sleep(std::uint32_t key, const Clock::time_point* deadline) noexcept {
        Lock lock(*this, deadline);
        if (lock.timed_out) return false;
        if (!lock.ok) {
            // The mutex cannot be taken (see Lock): no notify can reach us,
            // so sleep a bounded while and let the caller re-check its
            // condition (wait_for_peer() also looks at the peer's process).
            auto until = Clock::now() + unusable_nap;
            if (deadline != nullptr && *deadline < until) until = *deadline;
            std::this_thread::sleep_until(until);
            return true;
        }
        try {
            while (epoch_.load(std::memory_order_relaxed) == key) {
                if (!condition_.wait_relock(lock.held, deadline)) return false;  // the deadline came first
                lock.heal();
                if (deadline != nullptr && Clock::now() >= *deadline)
                    return epoch_.load(std::memory_order_relaxed) != key;
            }
        } catch (...) {
            // Only an unrecoverable mutex throws, which this class never makes
            // (it marks an abandoned mutex consistent at once): wake, and let
            // the caller re-check its condition.
        }
        return true;
    }

    void notify() noexcept {
        if (!waiters_.any_after_change()) return;  // the common, free case
        const auto patience = Clock::now() + notify_patience;
        Lock lock(*this, &patience);
        if (!lock.ok) return;
        epoch_.fetch_add(1, std::memory_order_seq_cst);
        condition_.notify_all();
    }

    // Holds the mutex, or gives up at `deadline` (timed_out). An owner that
    // died holding it left the epoch consistent (it changes by one store), so
    // repair is just saying so. lock() throws only for an unrecoverable
    // mutex, which this class never makes (it marks an abandoned mutex
    // consistent at once), but a peer (another crew version, memory
    // scribbled on) might: then `ok` is false after a few tries a millisecond
    // apart, and the caller does without the lock (waits sleep a bounded
    // while) instead of spinning for ever.
    struct Lock {
        Lock(MonitorSignal& s, const Clock::time_point* deadline) noexcept : held(s.mutex_, std::defer_lock) {
            for (int attempt = 0;; ++attempt) {
                try {
                    if (deadline == nullptr) {
                        held.lock();
                    } else if (!held.try_lock_until(*deadline)) {
                        ok = false;
                        timed_out = true;
                        return;
                    }
                    break;
                } catch (...) {
                }
                if (attempt == 2) {
                    ok = false;
                    return;
                }
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
            }
            heal();
        }
        bool ok = true;
        bool timed_out = false;
        void heal() noexcept {
            try {
                if (held.mutex()->previous_owner_died()) held.mutex()->mark_consistent();
            } catch (...) {
            }
        }
        std::unique_lock<ipc::Mutex> held;
    };

    ipc::Mutex mutex_;
    ipc::ConditionVariable condition_;
    std::atomic<std::uint32_t> epoch_{0};    // bumped under mutex_
    AnnouncedWaiters waiters_;
};

/// sync::Semaphore's form: a waiter sleeps on a process-shared counting
/// semaphore, which the notifier posts when it sees a waiter announced
/// (Dekker-style, as in EventCount). A post the waiter no longer needs (it
/// found its condition true, or timed out) is drained, so the count stays 0
/// or 1 and a later wait is at most woken once for nothing.
class SemaphoreSignal {
public:
    static constexpr std::string_view channel_name = "shm-semaphore";
    static constexpr std::uint64_t tag = 3;

    WaitKey prepare_wait() noexcept {
        waiters_.announce();
        return {};
    }
    void cancel_wait() noexcept {
        waiters_.withdraw();
        drain();
    }
    bool wait(WaitKey, const std::chrono::steady_clock::time_point* deadline = nullptr) noexcept {
        bool woke = true;
        if (deadline == nullptr) {
            wake_.acquire();
        } else {
            woke = wake_.try_acquire_until(*deadline);
        }
        waiters_.withdraw();
        drain();
        return woke;
    }
    void notify_one() noexcept { notify(); }
    void notify_all() noexcept { notify(); }  // one waiter per signal: the same

private:
    void notify() noexcept {
        if (!waiters_.any_after_change()) return;  // the common, free case
        if (wake_.value() == 0) wake_.release(1);  // one pending post is enough
    }
    void drain() noexcept {
        while (wake_.try_acquire()) {
        }
    }

    ipc::Semaphore wake_{0};
    AnnouncedWaiters waiters_;
};

static_assert(shared_signal<MonitorSignal> && shared_signal<SemaphoreSignal>);

}  // namespace crew::detail
