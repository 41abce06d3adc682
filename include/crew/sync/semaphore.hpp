// crew/sync/semaphore.hpp — crew::sync::Semaphore: the classic bounded buffer.
//
// Two counting semaphores count free and used slots, a binary semaphore guards
// the ring itself (Dijkstra's producer/consumer). A blocked producer or
// consumer sleeps on its semaphore: crew::ipc::Semaphore, a futex that is
// woken only when someone sleeps (and works between processes too). Not
// std::counting_semaphore: GCC 12's can sleep forever after a release
// (libstdc++ PR 104928), which hung this policy under ThreadSanitizer.
// Between processes (ProcessExecutor<SharedMemory, Semaphore>) a blocked
// side of a shared ring sleeps on a process-shared ipc::Semaphore.
// When: to see the textbook solution at work, or when producers must be
// throttled by capacity with no busy waiting at all.
// Cost: three semaphore operations per push and per pop.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <utility>

#include <crew/detail/ring.hpp>
#include <crew/detail/shm_signal.hpp>
#include <crew/ipc/semaphore.hpp>
#include <crew/sync/policy.hpp>

namespace crew::sync {

/// Sync policy: counting semaphores for free/used slots + a binary semaphore.
struct Semaphore {
    static constexpr std::string_view name = "semaphore";

    /// Across processes (crew::ipc::SharedMemory's rings): a blocked side
    /// sleeps on a process-shared crew::ipc::Semaphore that its peer posts.
    using shared_signal = detail::SemaphoreSignal;

    template <class T>
    class queue {
    public:
        explicit queue(std::size_t capacity)
            : ring_(capacity), free_(static_cast<std::uint32_t>(capacity)), used_(0), guard_(1) {}

        bool try_push(T&& item) {
            if (!free_.try_acquire()) return false;
            return put(std::move(item));
        }
        bool try_pop(T& out) {
            if (!used_.try_acquire()) return false;
            return take(out);
        }
        bool push(T item) {
            free_.acquire();
            if (closed_.load(std::memory_order_acquire)) {
                free_.release();  // pass the wake-up on to the next blocked producer
                return false;
            }
            return put(std::move(item));
        }
        bool pop(T& out) {
            used_.acquire();
            return take(out);
        }

        // close() adds one "closing" token to each semaphore; whoever takes it
        // while the ring is empty (or closed, for producers) gives it back, so
        // every blocked caller wakes in turn.
        void close() {
            closed_.store(true, std::memory_order_release);
            used_.release();
            free_.release();
        }

        [[nodiscard]] std::size_t capacity() const noexcept { return ring_.capacity(); }

    private:
        // Holding one `free` token: a slot, or (after close) the closing
        // token, which must not let an item into a full ring: then it is
        // passed on and the push refused.
        bool put(T&& item) {
            guard_.acquire();
            if (ring_.full()) {
                guard_.release();
                free_.release();
                return false;
            }
            ring_.push(std::move(item));
            guard_.release();
            used_.release();
            return true;
        }
        // Holding one `used` token: an item, or the closing token.
        bool take(T& out) {
            guard_.acquire();
            if (ring_.empty()) {
                guard_.release();
                used_.release();
                return false;
            }
            out = ring_.pop();
            guard_.release();
            free_.release();
            return true;
        }

        detail::Ring<T> ring_;
        ipc::Semaphore free_;
        ipc::Semaphore used_;
        ipc::Semaphore guard_;  // binary: 1 while the ring is free
        std::atomic<bool> closed_{false};
    };
};

static_assert(policy<Semaphore> && detail::shared_signal<Semaphore::shared_signal>);

}  // namespace crew::sync
