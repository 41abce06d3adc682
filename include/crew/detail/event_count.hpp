// crew/detail/event_count.hpp — lets a thread sleep until "something changed"
// without a mutex, for lock-free structures.
//
// Protocol (Dekker-style, as in folly::EventCount): a waiter announces itself
// (prepare_wait), re-checks its condition, then sleeps on the epoch it read. A
// notifier changes the condition, then (seq_cst fence) looks for announced
// waiters and only then pays for a syscall. Either the waiter sees the change
// in its re-check, or the notifier sees the waiter and bumps the epoch, which
// makes the futex wait return. Nothing here needs a pointer, so it works in
// memory shared between processes (construct with shared = true).
//
// Most callers want await(ready, deadline): it runs the whole protocol
// (announce, re-check, sleep, repeat) around their condition. The same
// await() serves every signal with this interface (the shared_signal concept
// of crew/detail/shared_signal.hpp), so the protocol is written once.
#pragma once

#include <atomic>
#include <chrono>
#include <climits>
#include <concepts>
#include <cstdint>

#include <crew/detail/futex.hpp>
#include <crew/detail/sanitizers.hpp>

namespace crew::detail {

/// What prepare_wait() hands to wait(): the notification epoch the waiter
/// saw when it announced itself. A type of its own (as folly's
/// EventCount::Key), so it cannot be mistaken for a count or a flag.
struct WaitKey {
    std::uint32_t epoch = 0;
};

/// Anything that sleeps the event-count way: announce (prepare_wait), re-check
/// the condition, then sleep (wait) or withdraw (cancel_wait); a notifier
/// changes the condition first. wait() returns false when `deadline` passed.
template <class S>
concept wait_signal = requires(S& s, WaitKey key, const std::chrono::steady_clock::time_point* deadline) {
    { s.prepare_wait() } -> std::same_as<WaitKey>;
    s.cancel_wait();
    { s.wait(key, deadline) } -> std::same_as<bool>;
    s.notify_one();
    s.notify_all();
};

/// Waits on `signal` until `ready()` holds (true) or `deadline` passes
/// (false; a null deadline waits for ever). `ready()` is a check of state that
/// a notifier changes before it notifies; it may have side effects (take an
/// item): it is called until it first returns true, never after. Between the
/// checks nothing spins: a caller who wants a spin phase spins first.
template <wait_signal Signal, class Ready>
bool await(Signal& signal, Ready&& ready, const std::chrono::steady_clock::time_point* deadline = nullptr) {
    for (;;) {
        if (ready()) return true;
        const WaitKey key = signal.prepare_wait();
        if (ready()) {
            signal.cancel_wait();
            return true;
        }
        if (!signal.wait(key, deadline)) return ready();
    }
}

/// Waiters that announced themselves: both halves of the Dekker-style
/// handshake every signal here uses. A waiter announces before it re-checks
/// its condition and withdraws once it stops waiting; a notifier, after its
/// change, asks whether anyone is announced and only then pays for a wake-up.
/// Plain memory (one 32-bit counter): works between processes.
class AnnouncedWaiters {
public:
    void announce() noexcept { count_.fetch_add(1, std::memory_order_seq_cst); }
    void withdraw() noexcept { count_.fetch_sub(1, std::memory_order_seq_cst); }

    /// The notifier's half: called after it changed the condition. Its change
    /// must be visible before this read (StoreLoad). ThreadSanitizer does not
    /// model fences, so there the read becomes an RMW, which orders the same
    /// way through the waiter's RMW on the same counter (release sequence).
    [[nodiscard]] bool any_after_change() noexcept {
        if constexpr (under_tsan) {
            return count_.fetch_add(0, std::memory_order_seq_cst) != 0;
        } else {
            std::atomic_thread_fence(std::memory_order_seq_cst);
            return count_.load(std::memory_order_relaxed) != 0;
        }
    }

private:
    std::atomic<std::uint32_t> count_{0};
};

class EventCount {
public:
    explicit EventCount(bool process_shared = false) noexcept : shared_(process_shared) {}

    /// Waits until `ready()` or `deadline`; see detail::await above.
    template <class Ready>
    bool await(Ready&& ready, const std::chrono::steady_clock::time_point* deadline = nullptr) {
        return detail::await(*this, static_cast<Ready&&>(ready), deadline);
    }

    /// Announces a waiter; returns the key to pass to wait(). Re-check the
    /// condition after this, then call wait() or cancel_wait().
    WaitKey prepare_wait() noexcept {
        waiters_.announce();
        return WaitKey{epoch_.load(std::memory_order_seq_cst)};
    }
    void cancel_wait() noexcept { waiters_.withdraw(); }

    /// Sleeps unless notified since prepare_wait(); false when `deadline` passed.
    bool wait(WaitKey key, const std::chrono::steady_clock::time_point* deadline = nullptr) noexcept {
        bool woke = true;
        while (epoch_.load(std::memory_order_acquire) == key.epoch) {
            if (!futex_wait(epoch_, key.epoch, shared_, deadline)) {
                woke = false;
                break;
            }
        }
        waiters_.withdraw();
        return woke;
    }

    void notify_one() noexcept { notify(1); }
    void notify_all() noexcept { notify(INT_MAX); }

private:
    void notify(int count) noexcept {
        if (!waiters_.any_after_change()) return;  // the common, free case
        epoch_.fetch_add(1, std::memory_order_seq_cst);
        futex_wake(epoch_, count, shared_);
    }

    std::atomic<std::uint32_t> epoch_{0};
    AnnouncedWaiters waiters_;
    bool shared_;
};

}  // namespace crew::detail
