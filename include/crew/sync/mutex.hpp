// crew/sync/mutex.hpp — crew::sync::Mutex: a task queue guarded by one mutex,
// idle workers asleep on condition variables. Between processes (Process-
// Executor<SharedMemory, Mutex>) the process-shared form: a robust
// crew::ipc::Mutex and crew::ipc::ConditionVariable in the shared memory.
//
// When: the simplest policy to reason about; fine when tasks are long
// (milliseconds) and contention is low.
// Cost: every push and pop takes the lock; a sleeping consumer is woken
// through the condition variable (a futex) only when one waits.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <string_view>
#include <utility>

#include <crew/detail/ring.hpp>
#include <crew/detail/shm_signal.hpp>
#include <crew/sync/policy.hpp>

namespace crew::sync {

/// Sync policy: std::mutex + std::condition_variable around a bounded ring.
struct Mutex {
    static constexpr std::string_view name = "mutex";

    /// Across processes (crew::ipc::SharedMemory's rings): a blocked side
    /// sleeps on a robust process-shared mutex + condition variable
    /// (crew::ipc::Mutex, crew::ipc::ConditionVariable); every wake-up takes
    /// the mutex.
    using shared_signal = detail::MonitorSignal;

    template <class T>
    class queue {
    public:
        explicit queue(std::size_t capacity) : ring_(capacity) {}

        bool try_push(T&& item) {
            {
                std::lock_guard lock(mutex_);
                if (ring_.full()) return false;
                ring_.push(std::move(item));
            }
            not_empty_.notify_one();
            return true;
        }

        bool try_pop(T& out) {
            {
                std::lock_guard lock(mutex_);
                if (ring_.empty()) return false;
                out = ring_.pop();
            }
            not_full_.notify_one();
            return true;
        }

        bool push(T item) {
            {
                std::unique_lock lock(mutex_);
                not_full_.wait(lock, [&] { return closed_ || !ring_.full(); });
                if (closed_) return false;
                ring_.push(std::move(item));
            }
            not_empty_.notify_one();
            return true;
        }

        bool pop(T& out) {
            {
                std::unique_lock lock(mutex_);
                not_empty_.wait(lock, [&] { return closed_ || !ring_.empty(); });
                if (ring_.empty()) return false;  // closed and drained
                out = ring_.pop();
            }
            not_full_.notify_one();
            return true;
        }

        void close() {
            {
                std::lock_guard lock(mutex_);
                closed_ = true;
            }
            not_empty_.notify_all();
            not_full_.notify_all();
        }

        [[nodiscard]] std::size_t capacity() const noexcept { return ring_.capacity(); }

    private:
        std::mutex mutex_;
        std::condition_variable not_empty_;
        std::condition_variable not_full_;
        detail::Ring<T> ring_;
        bool closed_ = false;
    };
};

static_assert(policy<Mutex> && detail::shared_signal<Mutex::shared_signal>);

}  // namespace crew::sync
