// crew/ipc/semaphore.hpp — a counting semaphore that works between processes.
//
// What: crew::ipc::Semaphore, in the spirit of std::counting_semaphore, that
// lives *inside* shared memory (construct it in a crew::ipc::SharedRegion or any
// MAP_SHARED mapping) and holds no pointers, so every process that maps the
// memory uses the same counter. Works between threads of one process too.
//
// When: to bound how many processes do something at once, or as the two
// counters of the classic bounded buffer (crew::sync::Semaphore uses it for
// its three semaphores, between threads).
//
// Cost: acquire() with a unit available and release() with nobody waiting are
// one atomic read-modify-write each, no system call. acquire() with the count
// at zero spins briefly (32 pauses) and then sleeps in the kernel; it never
// burns a core while waiting. release(n) wakes up to n sleepers with one
// futex system call.
//
// Guarantees: not FIFO; a releasing process's writes before release() are
// visible to the process whose acquire() takes that unit (release/acquire
// ordering). Signals do not end a wait early (EINTR is retried). A process
// that dies while waiting leaves the waiter count one too high: the semaphore
// stays correct, later release() calls just make a (harmless) futex call each.
// A process that dies holding a unit does not give it back; that is the nature
// of a semaphore, which has no owner.
//
// Why a futex counter and not sem_t (pshared=1): glibc's sem_t is also a futex
// counter, but (1) our uncontended acquire+release pair is cheaper than
// sem_wait+sem_post (ours is inlined, sem_* are calls into libc with their own
// compare-exchange loops; figures in docs/benchmarks.md);
// (2) release(n) is one atomic add and at most one wake-up system call, where
// sem_post needs n calls; (3) acquire() spins briefly before sleeping, which
// often covers a hand-off from a process on another core (sem_wait goes
// straight to the kernel); (4) timed waits use the steady clock directly
// (sem_timedwait takes wall-clock time) and value() is exact. A two-process
// ping-pong on that loaded 2-core VM was dominated by scheduling noise; no
// clear winner there.
#pragma once

#include <atomic>
#include <chrono>
#include <climits>
#include <cstdint>
#include <string>

#include <crew/detail/deadline.hpp>
#include <crew/detail/futex.hpp>
#include <crew/errors.hpp>

namespace crew::ipc {

/// Process-shared counting semaphore; lives inside shared memory.
class Semaphore {
public:
    /// The largest count and the largest release(n).
    static constexpr std::uint32_t max() noexcept { return INT_MAX; }

    /// A semaphore holding `initial` units. Throws crew::InvalidArgument when
    /// `initial` > max().
    explicit Semaphore(std::uint32_t initial);
    ~Semaphore() = default;

    Semaphore(const Semaphore&) = delete;
    Semaphore& operator=(const Semaphore&) = delete;
    Semaphore(Semaphore&&) = delete;
    Semaphore& operator=(Semaphore&&) = delete;

    /// Takes one unit, sleeping until one is available.
    void acquire() noexcept;

    /// Takes one unit if one is available now; never sleeps.
    [[nodiscard]] bool try_acquire() noexcept;

    /// Takes one unit, waiting at most `timeout` (steady clock); false on timeout.
    template <class Rep, class Period>
    [[nodiscard]] bool try_acquire_for(const std::chrono::duration<Rep, Period>& timeout);

    /// Takes one unit, waiting until `deadline` at most; false on timeout.
    template <class Clock, class Duration>
    [[nodiscard]] bool try_acquire_until(const std::chrono::time_point<Clock, Duration>& deadline);

    /// Gives back `n` units and wakes up to `n` waiters. The count must stay
    /// within max() (a precondition, as for std::counting_semaphore); throws
    /// crew::InvalidArgument when `n` alone exceeds max().
    void release(std::uint32_t n = 1);

    /// The units available now (already stale when it returns; for tests and
    /// monitoring).
    [[nodiscard]] std::uint32_t value() const noexcept { return count_.load(std::memory_order_relaxed); }

private:
    bool acquire_slow(const std::chrono::steady_clock::time_point* deadline) noexcept;

    std::atomic<std::uint32_t> count_;     // units available; the futex word
    std::atomic<std::uint32_t> waiters_{0};  // processes/threads that may sleep on count_
};

}  // namespace crew::ipc

namespace crew::detail {

/// Spin iterations before sleeping: covers a quick hand-off from a process on
/// another core, too few to matter when idle. A pause costs ~5-150 ns
/// depending on the CPU (and on a VM's pause-loop exiting), so this is about
/// 0.2-5 us at most.
inline constexpr int semaphore_spin_count = 32;

}  // namespace crew::detail

namespace crew::ipc {

inline Semaphore::Semaphore(std::uint32_t initial) : count_(initial) {
    if (initial > max())
        throw InvalidArgument("crew::ipc::Semaphore: initial count " + std::to_string(initial) +
                              " is above Semaphore::max() (" + std::to_string(max()) + "); use a smaller count");
}

inline bool Semaphore::try_acquire() noexcept {
    std::uint32_t current = count_.load(std::memory_order_relaxed);
    while (current != 0) {
        if (count_.compare_exchange_weak(current, current - 1, std::memory_order_acquire,
                                         std::memory_order_relaxed))
            return true;
    }
    return false;
}

inline void Semaphore::acquire() noexcept {
    if (try_acquire()) return;
    acquire_slow(nullptr);
}

inline bool Semaphore::acquire_slow(const std::chrono::steady_clock::time_point* deadline) noexcept {
    for (int i = 0; i < detail::semaphore_spin_count; ++i) {
        detail::cpu_relax();
        if (count_.load(std::memory_order_relaxed) != 0 && try_acquire()) return true;
    }
    // Announce ourselves before the last look at the count; release() adds to
    // the count before it reads waiters_. Both sides are seq_cst, so either we
    // see its units or it sees us and wakes us. The futex itself re-checks
    // count_ == 0 atomically before sleeping.
    waiters_.fetch_add(1, std::memory_order_seq_cst);
    bool acquired = false;
    for (;;) {
        if (count_.load(std::memory_order_seq_cst) != 0 && try_acquire()) {
            acquired = true;
            break;
        }
        // false only on timeout; EINTR and spurious wake-ups loop.
        if (!detail::futex_wait(count_, 0, /*shared=*/true, deadline)) {
            acquired = try_acquire();
            break;
        }
    }
    waiters_.fetch_sub(1, std::memory_order_relaxed);
    return acquired;
}

template <class Rep, class Period>
bool Semaphore::try_acquire_for(const std::chrono::duration<Rep, Period>& timeout) {
    if (try_acquire()) return true;
    if (timeout <= timeout.zero()) return false;
    const auto deadline = detail::steady_deadline_after(timeout);
    if (!deadline) {
        acquire_slow(nullptr);
        return true;
    }
    return acquire_slow(&*deadline);
}

template <class Clock, class Duration>
bool Semaphore::try_acquire_until(const std::chrono::time_point<Clock, Duration>& deadline) {
    // For clocks other than steady_clock, re-check the caller's clock after
    // each steady-clock timeout, as std::timed_mutex does.
    for (;;) {
        if (try_acquire()) return true;
        const auto steady = detail::steady_deadline(deadline);
        if (!steady) {
            acquire_slow(nullptr);
            return true;
        }
        if (Clock::now() >= deadline) return false;
        if (acquire_slow(&*steady)) return true;
    }
}

inline void Semaphore::release(std::uint32_t n) {
    if (n == 0) return;
    if (n > max())
        throw InvalidArgument("crew::ipc::Semaphore::release: n = " + std::to_string(n) +
                              " is above Semaphore::max() (" + std::to_string(max()) + "); release fewer units");
    count_.fetch_add(n, std::memory_order_seq_cst);  // seq_cst: pairs with acquire_slow()'s waiters_ increment
    if (waiters_.load(std::memory_order_seq_cst) != 0)
        detail::futex_wake(count_, static_cast<int>(n), /*shared=*/true);
}

}  // namespace crew::ipc
