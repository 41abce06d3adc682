// crew/detail/work_deque.hpp — one worker's deque of tasks: the owner pushes
// and pops at the bottom (newest first), other workers steal from the top
// (oldest first). The Chase-Lev deque (Chase and Lev 2005; the C11 form of
// Lê, Pop, Cohen and Zappa Nardelli 2013), with a fixed capacity: a full
// deque refuses, and the caller queues the task elsewhere.
//
// Why: in nested fork-join (a task submits a half and waits for it) the task
// a worker waits for is almost always the one it submitted last. Keeping it
// in the worker's own deque makes submit and the wait's take-back two
// uncontended operations on the worker's own cache lines, where a shared
// queue costs a CAS on a line every worker writes, and leaves behind an entry
// that someone must pop later. Thieves take the oldest task, which in a
// fork-join tree is the largest piece of work.
//
// Memory orders: every access to top and bottom is seq_cst (the owner's push
// also pairs with ThreadExecutor's sleeper count, Dekker style), and slots
// are atomics, so ThreadSanitizer checks this as written (it does not model
// the stand-alone fences of the C11 form).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace crew::detail {

template <class T, std::size_t Capacity = 1024>
class WorkDeque {
    static_assert((Capacity & (Capacity - 1)) == 0, "Capacity must be a power of two");
    static_assert(std::atomic<T>::is_always_lock_free);

public:
    /// Owner only: adds `item` at the bottom; false when the deque is full.
    bool push(T item) noexcept {
        const std::int64_t b = bottom_.load(std::memory_order_relaxed);
        const std::int64_t t = top_.load(std::memory_order_seq_cst);
        if (b - t >= static_cast<std::int64_t>(Capacity)) return false;
        slots_[index(b)].store(item, std::memory_order_relaxed);
        bottom_.store(b + 1, std::memory_order_seq_cst);
        return true;
    }

    /// Owner only: takes the newest item; false when empty (or a thief took
    /// the last one first).
    bool pop(T& out) noexcept {
        const std::int64_t b = bottom_.load(std::memory_order_relaxed) - 1;
        bottom_.store(b, std::memory_order_seq_cst);
        std::int64_t t = top_.load(std::memory_order_seq_cst);
        if (t > b) {  // empty
            bottom_.store(b + 1, std::memory_order_relaxed);
            return false;
        }
        out = slots_[index(b)].load(std::memory_order_relaxed);
        if (t < b) return true;  // more than one left: no thief can reach this one
        // The last item: race the thieves for it.
        const bool won = top_.compare_exchange_strong(t, t + 1, std::memory_order_seq_cst, std::memory_order_relaxed);
        bottom_.store(b + 1, std::memory_order_relaxed);
        return won;
    }

    /// Any thread: takes the oldest item; false when empty or when another
    /// thread took it first.
    bool steal(T& out) noexcept {
        std::int64_t t = top_.load(std::memory_order_seq_cst);
        const std::int64_t b = bottom_.load(std::memory_order_seq_cst);
        if (t >= b) return false;
        // Read before the CAS: once top moves on, the owner may reuse the slot.
        const T item = slots_[index(t)].load(std::memory_order_relaxed);
        if (!top_.compare_exchange_strong(t, t + 1, std::memory_order_seq_cst, std::memory_order_relaxed))
            return false;
        out = item;
        return true;
    }

    /// Any thread, approximate: whether it looks empty.
    [[nodiscard]] bool looks_empty() const noexcept {
        return top_.load(std::memory_order_seq_cst) >= bottom_.load(std::memory_order_seq_cst);
    }

private:
    static constexpr std::size_t index(std::int64_t i) noexcept {
        return static_cast<std::size_t>(i) & (Capacity - 1);
    }

    alignas(64) std::atomic<std::int64_t> top_{0};     // thieves
    alignas(64) std::atomic<std::int64_t> bottom_{0};  // the owner
    alignas(64) std::atomic<T> slots_[Capacity] = {};
};

}  // namespace crew::detail
