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
#pragma once

#include <atomic>
#include <chrono>
#include <climits>
#include <cstdint>

#include <crew/detail/futex.hpp>

// ThreadSanitizer builds (GCC defines the first macro, Clang the feature).
#if defined(__SANITIZE_THREAD__)
#define CREW_DETAIL_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CREW_DETAIL_TSAN 1
#endif
#endif

namespace crew::detail {

/// The notifier's half of a Dekker-style handshake: called after it changed
/// the condition, reads how many waiters announced themselves. Its change
/// must be visible before this read (StoreLoad). ThreadSanitizer does not
/// model fences, so there the read becomes an RMW, which orders the same way
/// through the waiter's RMW on the same counter (release sequence).
inline std::uint32_t waiters_after_change(std::atomic<std::uint32_t>& waiters) noexcept {
#if defined(CREW_DETAIL_TSAN)
    return waiters.fetch_add(0, std::memory_order_seq_cst);
#else
    std::atomic_thread_fence(std::memory_order_seq_cst);
    return waiters.load(std::memory_order_relaxed);
#endif
}

class EventCount {
public:
    explicit EventCount(bool process_shared = false) noexcept : shared_(process_shared) {}

    /// Announces a waiter; returns the key to pass to wait(). Re-check the
    /// condition after this, then call wait() or cancel_wait().
    std::uint32_t prepare_wait() noexcept {
        waiters_.fetch_add(1, std::memory_order_seq_cst);
        return epoch_.load(std::memory_order_seq_cst);
    }
    void cancel_wait() noexcept { waiters_.fetch_sub(1, std::memory_order_seq_cst); }

    /// Sleeps unless notified since prepare_wait(); false when `deadline` passed.
    bool wait(std::uint32_t key, const std::chrono::steady_clock::time_point* deadline = nullptr) noexcept {
        bool woke = true;
        while (epoch_.load(std::memory_order_acquire) == key) {
            if (!futex_wait(epoch_, key, shared_, deadline)) {
                woke = false;
                break;
            }
        }
        waiters_.fetch_sub(1, std::memory_order_seq_cst);
        return woke;
    }

    void notify_one() noexcept { notify(1); }
    void notify_all() noexcept { notify(INT_MAX); }

private:
    void notify(int count) noexcept {
        if (waiters_after_change(waiters_) == 0) return;  // the common, free case
        epoch_.fetch_add(1, std::memory_order_seq_cst);
        futex_wake(epoch_, count, shared_);
    }

    std::atomic<std::uint32_t> epoch_{0};
    std::atomic<std::uint32_t> waiters_{0};
    bool shared_;
};

}  // namespace crew::detail
