// crew/lock_free_queue.hpp — crew::LockFreeQueue<T>, a bounded multi-producer
// multi-consumer queue.
//
// What: try_push/try_pop never block and never take a lock (one CAS on the hot
// path); push/pop block by spinning briefly, then sleeping on a futex, so an
// idle consumer uses no CPU.
// When: many threads (or processes, for trivially copyable T) hand items to
// many others and the capacity can be fixed up front.
// Cost: capacity rounded up to a power of two, one cache line per slot; on par
// with moodycamel's queue while the ring is not full, several times slower
// when producers keep it full and both sides fight over the same slot
// (figures in docs/benchmarks.md).
// Guarantees: each pushed item is popped exactly once; items from one
// producer are popped in the order pushed; not linearizable across producers
// (as moodycamel's queue, it promises no global FIFO); try_push may fail while
// a slot is being vacated by a slow consumer.
//
// Algorithm: Dmitry Vyukov's bounded MPMC queue. Each slot carries a sequence
// number: slot i is free for the producer holding ticket t when seq == t, and
// full for the consumer holding ticket t when seq == t + 1; the consumer sets
// seq = t + capacity to hand the slot to the next lap's producer. Tickets come
// from two counters on separate cache lines, claimed by CAS.
//
// In shared memory: the queue holds no pointers, only an offset to its slots,
// so `LockFreeQueue<T>::create_at(memory, capacity, crew::Sharing::between_processes)` places a working
// queue (header + slots, bytes_for(capacity) bytes) in memory mapped by several
// processes; its sleeps then use process-shared futexes.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <optional>
#include <type_traits>
#include <utility>

#include <crew/detail/event_count.hpp>
#include <crew/detail/spin.hpp>
#include <crew/errors.hpp>

// Test hook: a statement run between the queue's atomic steps (and between a
// blocking call's attempt, its look at closed() and its sleep), so a test can
// force other interleavings, e.g. by yielding there
// (tests/lock_free_queue_interleave_test.cpp). Empty, and free, unless defined
// before this header is included; a program must define it the same way in
// every translation unit that includes this header (one definition rule).
#ifndef CREW_DETAIL_LFQ_YIELD
#define CREW_DETAIL_LFQ_YIELD() ((void)0)
#endif

namespace crew {

/// Who sleeps on a LockFreeQueue placed with create_at(): threads of one
/// process (cheaper, private futexes), or processes that map its memory.
enum class Sharing : bool {
    in_process,         ///< threads of the calling process only
    between_processes,  ///< any process mapping the memory (process-shared futexes)
};

namespace detail {
// A fixed 64 rather than std::hardware_destructive_interference_size: that
// constant may differ between translation units built with different -mtune
// (GCC warns), and a queue shared between processes needs one layout.
inline constexpr std::size_t cache_line = 64;
}  // namespace detail

template <class T>
class LockFreeQueue {
    static_assert(std::is_nothrow_move_constructible_v<T> && std::is_nothrow_destructible_v<T>,
                  "crew::LockFreeQueue<T>: T must be nothrow move-constructible and nothrow destructible, "
                  "so that an item is never lost half-moved");

public:
    using value_type = T;

    /// A queue for at least `capacity` items (rounded up to a power of two, 2 at least),
    /// slots on the heap. Throws crew::InvalidArgument for capacity 0.
    explicit LockFreeQueue(std::size_t capacity) : LockFreeQueue(round_up(capacity), nullptr, Sharing::in_process) {}

    /// Bytes create_at() needs for `capacity` items.
    static std::size_t bytes_for(std::size_t capacity) {
        return slots_offset() + round_up(capacity) * sizeof(Slot);
    }

    /// Constructs a queue inside `memory` (bytes_for(capacity) bytes, aligned
    /// to a cache line), e.g. shared memory mapped by several processes; pass
    /// Sharing::between_processes then. Destroy with `q->~LockFreeQueue()`.
    static LockFreeQueue* create_at(void* memory, std::size_t capacity, Sharing sharing = Sharing::in_process) {
        return ::new (memory) LockFreeQueue(round_up(capacity), memory, sharing);
    }

    LockFreeQueue(const LockFreeQueue&) = delete;
    LockFreeQueue& operator=(const LockFreeQueue&) = delete;

    ~LockFreeQueue() {
        // No thread may use the queue now: destroy what is left in place.
        for (std::size_t t = head_.load(std::memory_order_acquire); t != tail_.load(std::memory_order_acquire); ++t) {
            Slot& slot = slots()[t & mask_];
            if (slot.seq.load(std::memory_order_acquire) == t + 1) item_in(slot)->~T();
        }
        for (std::size_t i = 0; i < capacity_; ++i) slots()[i].~Slot();
        if (owns_slots_) ::operator delete(static_cast<void*>(slots()), std::align_val_t{alignof(Slot)});
    }

    /// Adds an item unless the queue is full; never blocks.
    template <class... Args>
    bool try_emplace(Args&&... args) {
        std::size_t ticket = tail_.load(std::memory_order_relaxed);
        for (;;) {
            Slot& slot = slots()[ticket & mask_];
            CREW_DETAIL_LFQ_YIELD();
            std::size_t seq = slot.seq.load(std::memory_order_acquire);
            auto lag = static_cast<std::intptr_t>(seq) - static_cast<std::intptr_t>(ticket);
            if (lag == 0) {
                CREW_DETAIL_LFQ_YIELD();
                // Relaxed is enough: the ticket only picks a slot. What
                // orders the item is the slot's seq (acquire above, release
                // below), never the counter.
                if (tail_.compare_exchange_weak(ticket, ticket + 1, std::memory_order_relaxed)) {
                    CREW_DETAIL_LFQ_YIELD();
                    ::new (static_cast<void*>(&slot.storage)) T(std::forward<Args>(args)...);
                    slot.seq.store(ticket + 1, std::memory_order_release);
                    CREW_DETAIL_LFQ_YIELD();
                    not_empty_.notify_one();
                    return true;
                }
            } else if (lag < 0) {
                return false;  // the slot still holds last lap's item: full
            } else {
                ticket = tail_.load(std::memory_order_relaxed);
            }
        }
    }
    bool try_push(const T& item) { return try_emplace(item); }
    bool try_push(T&& item) { return try_emplace(std::move(item)); }

    /// Takes the oldest available item unless the queue is empty; never blocks.
    bool try_pop(T& out) {
        return try_consume([&](T&& item) { out = std::move(item); });
    }
    std::optional<T> try_pop() {
        std::optional<T> out;
        try_consume([&](T&& item) { out.emplace(std::move(item)); });
        return out;
    }

    /// Adds an item, sleeping while the queue is full. Returns false when the
    /// queue is closed; the item is then not moved from (an rvalue passed in
    /// is still the caller's).
    bool push(const T& item) {
        if (closed()) return false;
        CREW_DETAIL_LFQ_YIELD();
        return block_until(not_full_, [&] { return try_push(item); });
    }
    bool push(T&& item) {
        if (closed()) return false;
        CREW_DETAIL_LFQ_YIELD();
        // try_push moves only when it succeeds.
        return block_until(not_full_, [&] { return try_emplace(std::move(item)); });
    }

    /// Takes an item, sleeping while the queue is empty. Returns false when
    /// the queue is closed and empty.
    bool pop(T& out) {
        // block_until gives up when it sees closed() after a failed attempt;
        // an item pushed between that attempt and that look (before close())
        // is still queued, and the last consumer must not leave it there.
        return block_until(not_empty_, [&] { return try_pop(out); }) || try_pop(out);
    }

    /// Wakes every blocked push and pop; afterwards push fails, pop drains
    /// what is left, then fails. try_push still works (the executor that
    /// owns the queue decides who may still add). A push racing close() may
    /// still succeed, after the consumers are gone: to have every item popped,
    /// let producers return before close() (as the executors do).
    void close() noexcept {
        closed_.store(1, std::memory_order_seq_cst);
        CREW_DETAIL_LFQ_YIELD();
        not_empty_.notify_all();
        not_full_.notify_all();
    }
    [[nodiscard]] bool closed() const noexcept { return closed_.load(std::memory_order_acquire) != 0; }

    [[nodiscard]] std::size_t capacity() const noexcept { return capacity_; }
    /// A snapshot; exact only when no thread pushes or pops.
    [[nodiscard]] std::size_t size_approx() const noexcept {
        auto tail = tail_.load(std::memory_order_acquire);
        auto head = head_.load(std::memory_order_acquire);
        return tail > head ? tail - head : 0;
    }

private:
    struct alignas(detail::cache_line) Slot {
        std::atomic<std::size_t> seq;
        alignas(T) unsigned char storage[sizeof(T)];
    };

    static T* item_in(Slot& slot) noexcept { return std::launder(reinterpret_cast<T*>(&slot.storage)); }

    // Hands the oldest item to `sink` (as T&&) and frees its slot.
    template <class Sink>
    bool try_consume(Sink&& sink) {
        std::size_t ticket = head_.load(std::memory_order_relaxed);
        for (;;) {
            Slot& slot = slots()[ticket & mask_];
            CREW_DETAIL_LFQ_YIELD();
            std::size_t seq = slot.seq.load(std::memory_order_acquire);
            auto lag = static_cast<std::intptr_t>(seq) - static_cast<std::intptr_t>(ticket + 1);
            if (lag == 0) {
                CREW_DETAIL_LFQ_YIELD();
                // Relaxed, as in try_emplace: seq carries the ordering.
                if (head_.compare_exchange_weak(ticket, ticket + 1, std::memory_order_relaxed)) {
                    CREW_DETAIL_LFQ_YIELD();
                    T* item = item_in(slot);
                    sink(std::move(*item));
                    item->~T();
                    slot.seq.store(ticket + capacity_, std::memory_order_release);
                    CREW_DETAIL_LFQ_YIELD();
                    not_full_.notify_one();
                    return true;
                }
            } else if (lag < 0) {
                return false;  // no item published in this slot yet: empty
            } else {
                ticket = head_.load(std::memory_order_relaxed);
            }
        }
    }
    static std::size_t round_up(std::size_t capacity) {
        if (capacity == 0) throw InvalidArgument("crew::LockFreeQueue: capacity must be at least 1");
        // At least 2: with one slot, "full for lap t" (seq == t + 1) would read
        // as "free for lap t + 1" and a producer would overwrite its own item.
        std::size_t c = 2;
        while (c < capacity) c <<= 1;
        return c;
    }

    static constexpr std::size_t slots_offset() {
        return (sizeof(LockFreeQueue) + alignof(Slot) - 1) / alignof(Slot) * alignof(Slot);
    }

    // `placement`: where create_at put us (slots follow the header), or null
    // for slots on the heap. Either way only an offset is stored.
    LockFreeQueue(std::size_t capacity, void* placement, Sharing sharing)
        : capacity_(capacity),
          mask_(capacity - 1),
          owns_slots_(placement == nullptr),
          not_empty_(sharing == Sharing::between_processes),
          not_full_(sharing == Sharing::between_processes) {
        auto* base = placement != nullptr
                         ? static_cast<unsigned char*>(placement) + slots_offset()
                         : static_cast<unsigned char*>(::operator new(capacity * sizeof(Slot), std::align_val_t{alignof(Slot)}));
        slots_offset_ = reinterpret_cast<std::intptr_t>(base) - reinterpret_cast<std::intptr_t>(this);
        for (std::size_t i = 0; i < capacity; ++i) {
            ::new (static_cast<void*>(base + i * sizeof(Slot))) Slot{};
            slots()[i].seq.store(i, std::memory_order_relaxed);
        }
    }

    Slot* slots() const noexcept {
        return std::launder(reinterpret_cast<Slot*>(reinterpret_cast<std::intptr_t>(this) + slots_offset_));
    }

    // Spin briefly, then sleep on `event` until `attempt()` succeeds (true)
    // or the queue is closed (false).
    template <class Attempt>
    bool block_until(detail::EventCount& event, Attempt attempt) {
        bool done = false;
        auto done_or_closed = [&] {
            if ((done = attempt())) return true;
            CREW_DETAIL_LFQ_YIELD();
            return closed();
        };
        if (detail::spin_until(done_or_closed) && done) return true;
        event.await([&] {
            CREW_DETAIL_LFQ_YIELD();
            return done_or_closed();
        });
        return done;
    }

public:
    /// The layout rigtorp's MPMCQueue asserts too: producers (tail_) and
    /// consumers (head_) each own a cache line, the read-mostly fields a
    /// third. offsetof is only defined once the class is complete, so the
    /// check is a function the static_assert below the class calls.
    static constexpr bool layout_ok() {
        return offsetof(LockFreeQueue, head_) - offsetof(LockFreeQueue, tail_) >= detail::cache_line &&
               offsetof(LockFreeQueue, capacity_) - offsetof(LockFreeQueue, head_) >= detail::cache_line;
    }

private:
    // Producers and consumers each touch their own line; the read-mostly
    // fields share a third.
    alignas(detail::cache_line) std::atomic<std::size_t> tail_{0};
    alignas(detail::cache_line) std::atomic<std::size_t> head_{0};
    alignas(detail::cache_line) std::size_t capacity_;
    std::size_t mask_;
    std::intptr_t slots_offset_ = 0;
    bool owns_slots_;
    std::atomic<std::uint32_t> closed_{0};
    detail::EventCount not_empty_;
    detail::EventCount not_full_;
};

static_assert(alignof(LockFreeQueue<int>) >= detail::cache_line,
              "the producer and consumer tickets must sit on separate cache lines");
static_assert(LockFreeQueue<int>::layout_ok(), "tail, head and the read-mostly fields must not share a cache line");

}  // namespace crew
