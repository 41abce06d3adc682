// crew/detail/executor_core.hpp — what every executor shares: the task queue
// (chosen by the Sync policy), the gate that refuses work after shutdown, and
// error reporting for post(). ThreadExecutor's workers run the queued jobs;
// ProcessExecutor's dispatchers ship them to worker processes. One core serves
// every policy combination.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <iterator>
#include <vector>
#include <exception>
#include <thread>
#include <utility>

#include <crew/detail/deadline.hpp>
#include <crew/detail/demangle.hpp>
#include <crew/detail/event_count.hpp>  // CREW_DETAIL_TSAN
#include <crew/detail/shared_state.hpp>
#include <crew/errors.hpp>
#include <crew/options.hpp>
#include <crew/sync/policy.hpp>

namespace crew::detail {

/// A queued unit of work. Exactly one of run() / abandon() is called, once.
struct Job {
    /// Runs the job (unless its future was cancelled), publishes, frees.
    virtual void run() noexcept = 0;
    /// The job will never run: its future gets crew::Cancelled; frees.
    virtual void abandon() noexcept = 0;

protected:
    ~Job() = default;
};

/// Set on every thread that belongs to a crew executor (a ThreadExecutor
/// worker, a ProcessExecutor dispatcher): such a thread never waits for room
/// in a queue (Options::max_pending), so executors posting into each other
/// cannot deadlock.
inline thread_local bool inside_executor = false;

/// A futex-free wait for a condition another thread makes true: a waiter
/// count lets the notifier skip the lock when nobody waits. The waiter's
/// increment and the notifier's change are seq_cst, so one of them sees the
/// other (no lost wake-up).
class Waitable {
public:
    /// Blocks until `done()` or `deadline` (none: nullptr); true when done().
    template <class Done>
    bool wait_until(Done done, const std::chrono::steady_clock::time_point* deadline) {
        if (done()) return true;
        waiters_.fetch_add(1, std::memory_order_seq_cst);
        bool result;
        {
            std::unique_lock lock(mutex_);
            if (deadline == nullptr) {
                cv_.wait(lock, done);
                result = true;
            } else {
                result = cv_.wait_until(lock, *deadline, done);
            }
        }
        waiters_.fetch_sub(1, std::memory_order_relaxed);
        return result;
    }
    /// Call after changing what waiters test (with a seq_cst store or RMW).
    void notify() {
        if (waiters_.load(std::memory_order_seq_cst) == 0) return;
        std::lock_guard lock(mutex_);
        cv_.notify_all();
    }

private:
    std::atomic<int> waiters_{0};
    std::mutex mutex_;
    std::condition_variable cv_;
};

/// An executor's task counters (stats(), wait_idle(), max_pending). Every
/// task and post passes through: queued -> (started -> finished) | cancelled.
/// Queued and running share one word (low and high half), so each step is a
/// single RMW and wait_idle() waits for that word to be 0.
class TaskCounters {
public:
    void queued() noexcept { active_.fetch_add(one_queued, std::memory_order_seq_cst); }
    void started() noexcept {
        active_.fetch_add(one_running - one_queued, std::memory_order_seq_cst);  // never borrows: it was queued
        room_.notify();
    }
    /// A started task ended; `ok`: with a value.
    void finished(bool ok) noexcept {
        (ok ? completed_ : failed_).fetch_add(1, std::memory_order_relaxed);
        leave(one_running);
    }
    /// A queued task will never start.
    void cancelled() noexcept {
        cancelled_.fetch_add(1, std::memory_order_relaxed);
        leave(one_queued);
        room_.notify();
    }
    /// A started task was stopped (Shutdown::kill, or cancelled after it
    /// was shipped to a worker process): counted as cancelled.
    void stopped() noexcept {
        cancelled_.fetch_add(1, std::memory_order_relaxed);
        leave(one_running);
    }
    /// A queued task was refused before it counted (enqueue threw).
    void unqueued() noexcept {
        leave(one_queued);
        room_.notify();
    }

    [[nodiscard]] Stats snapshot(std::size_t workers) const noexcept {
        const std::uint64_t active = active_.load(std::memory_order_relaxed);
        Stats s;
        s.queued = static_cast<std::size_t>(active & low_half);
        s.running = static_cast<std::size_t>(active >> 32);
        s.completed = completed_.load(std::memory_order_relaxed);
        s.failed = failed_.load(std::memory_order_relaxed);
        s.cancelled = cancelled_.load(std::memory_order_relaxed);
        s.workers = workers;
        return s;
    }

    /// Until nothing is queued or running; false at `deadline` (none: null).
    bool wait_idle(const std::chrono::steady_clock::time_point* deadline) {
        return idle_.wait_until([this] { return active_.load(std::memory_order_seq_cst) == 0; }, deadline);
    }

    /// Until fewer than `limit` tasks are queued, or `stop()`.
    template <class Stop>
    void wait_for_room(std::size_t limit, Stop stop) {
        room_.wait_until([&] { return stop() || queued_now() < limit; }, nullptr);
    }
    [[nodiscard]] std::size_t queued_now() const noexcept {
        return static_cast<std::size_t>(active_.load(std::memory_order_seq_cst) & low_half);
    }
    void wake_room_waiters() { room_.notify(); }

private:
    static constexpr std::uint64_t one_queued = 1;
    static constexpr std::uint64_t one_running = std::uint64_t{1} << 32;
    static constexpr std::uint64_t low_half = one_running - 1;

    void leave(std::uint64_t one) noexcept {
        if (active_.fetch_sub(one, std::memory_order_seq_cst) == one) idle_.notify();
    }

    std::atomic<std::uint64_t> active_{0};
    alignas(64) std::atomic<std::size_t> completed_{0};
    std::atomic<std::size_t> failed_{0}, cancelled_{0};
    Waitable idle_, room_;
};

/// Lets submitters in until close(), then waits for those already inside, so
/// nothing is queued after the queue is closed.
class SubmitGate {
public:
    bool enter() noexcept {
        if (state_.fetch_add(1, std::memory_order_acquire) & closed_bit) {
            leave();
            return false;
        }
        return true;
    }
    void leave() noexcept {
        if (state_.fetch_sub(1, std::memory_order_release) == (closed_bit | 1)) state_.notify_all();
    }

    /// Shuts the gate, then waits until no submitter is inside; `help` runs
    /// while waiting (a worker closing its own executor keeps draining) and
    /// `wake` wakes submitters that wait for room. Sleeps, never spins long.
    template <class Help, class Wake>
    void close(Help help, Wake wake) noexcept {
        state_.fetch_or(closed_bit, std::memory_order_acq_rel);
        wake();
        for (;;) {
            const std::uint64_t s = state_.load(std::memory_order_acquire);
            if ((s & ~closed_bit) == 0) return;
            if (help()) continue;
            state_.wait(s, std::memory_order_acquire);
        }
    }
    [[nodiscard]] bool is_closed() const noexcept { return state_.load(std::memory_order_acquire) & closed_bit; }

private:
    static constexpr std::uint64_t closed_bit = std::uint64_t{1} << 63;
    std::atomic<std::uint64_t> state_{0};
};

/// Workers to start: the argument, else Options::workers, else one per
/// hardware thread.
inline std::size_t resolve_workers(std::size_t requested, const Options& options) {
    std::size_t n = requested != 0 ? requested : options.workers;
    if (n == 0) n = std::thread::hardware_concurrency();
    return n == 0 ? 1 : n;
}

/// Chunk size for map(): about four chunks per worker balances load without
/// paying a task per element.
inline std::size_t pick_chunk(std::size_t items, std::size_t workers, std::size_t requested) {
    if (requested != 0) return requested;
    std::size_t chunk = items / (workers * 4);
    return chunk == 0 ? 1 : chunk;
}

/// map()'s last step: waits for every chunk, concatenates the results in
/// order, then rethrows the first failure (in input order), if any.
template <class R, class Chunks>
std::vector<R> join_chunks(Chunks& chunks, std::size_t expected, std::exception_ptr first_error) {
    std::vector<R> results;
    results.reserve(expected);
    for (auto& chunk : chunks) {
        chunk.wait();
        if (first_error) continue;
        try {
            auto values = chunk.get();
            std::move(values.begin(), values.end(), std::back_inserter(results));
        } catch (...) {
            first_error = std::current_exception();
        }
    }
    if (first_error) std::rethrow_exception(first_error);
    return results;
}

/// The queue of an executor: the Sync policy's bounded ring, with an
/// overflow list behind it, so the queue is unbounded and no submitter ever
/// blocks on it (Options::max_pending adds back-pressure for outside threads
/// only). While the overflow holds anything, new jobs go behind it, and every
/// consumer that frees a slot moves jobs from the overflow into the ring: jobs
/// stay in submission order, and a consumer asleep on an empty ring is woken
/// by the ring itself.
template <sync::policy Sync>
class ExecutorCore final : public WaitHelper {
public:
    using Queue = typename Sync::template queue<Job*>;

    ExecutorCore(const Options& options, std::size_t queue_capacity)
        : on_error_(options.on_error), max_pending_(options.max_pending), queue_(queue_capacity) {}

    ~ExecutorCore() {
        for (Job* job : overflow_) job->abandon();
    }

    /// Queues `job`; throws crew::ExecutorShutdown (leaving `job` to the
    /// caller) after shutdown began. Never blocks, except a thread outside
    /// every executor while Options::max_pending tasks are queued.
    void enqueue(Job* job) {
        if (!gate_.enter()) throw ExecutorShutdown();
        if (max_pending_ != 0 && !inside_executor && counters_.queued_now() >= max_pending_) {
            counters_.wait_for_room(max_pending_, [this] { return gate_.is_closed(); });
            if (gate_.is_closed()) {
                gate_.leave();
                throw ExecutorShutdown();
            }
        }
        counters_.queued();
        if (overflow_size_.load(std::memory_order_seq_cst) != 0 || !queue_.try_push(std::move(job))) {
            try {
                std::lock_guard lock(overflow_mutex_);
                overflow_.push_back(job);
                // seq_cst RMW, then the refill's look at the ring: pairs with after_pop().
                overflow_size_.fetch_add(1, std::memory_order_seq_cst);
#if !defined(CREW_DETAIL_TSAN)
                std::atomic_thread_fence(std::memory_order_seq_cst);
#endif
                refill_locked();
            } catch (...) {
                counters_.unqueued();
                gate_.leave();
                throw;
            }
        }
        gate_.leave();
    }

    /// Next job for a consumer; blocks; false once closed and drained.
    bool take(Job*& job) {
        if (!queue_.pop(job)) return take_overflow(job);
        after_pop();
        return true;
    }
    bool try_take(Job*& job) {
        if (!queue_.try_pop(job)) return take_overflow(job);
        after_pop();
        return true;
    }

    /// Refuses new work; with cancel_pending or kill, cancels what has not
    /// started; then lets consumers drain and stop.
    void close(Shutdown how) noexcept {
        gate_.close([this] { return current_wait_helper == this && run_one(); },
                    [this] { counters_.wake_room_waiters(); });
        if (how != Shutdown::drain) {
            Job* job = nullptr;
            while (try_take(job)) job->abandon();
        }
        queue_.close();
    }
    [[nodiscard]] bool is_closed() const noexcept { return gate_.is_closed(); }

    /// WaitHelper: a worker blocked on a future runs a queued job instead.
    bool run_one() override {
        Job* job = nullptr;
        if (!try_take(job)) return false;
        job->run();
        return true;
    }

    TaskCounters& counters() noexcept { return counters_; }
    const TaskCounters& counters() const noexcept { return counters_; }

    /// wait_idle(): refuses to wait from a thread of this executor (the task
    /// calling it would wait for itself).
    bool wait_idle(const std::chrono::steady_clock::time_point* deadline, bool on_own_thread) {
        if (on_own_thread)
            throw InvalidArgument("crew: wait_idle() called from a task or continuation of the same executor "
                                  "would wait for itself; call it from outside the executor");
        return counters_.wait_idle(deadline);
    }

    /// An exception escaped a post()ed task: Options::on_error, else stderr.
    void report(std::exception_ptr error) noexcept {
        if (on_error_) {
            try {
                on_error_(error);
                return;
            } catch (...) {
                error = std::current_exception();  // the handler itself threw: print that
            }
        }
        auto info = describe(error);
        std::fprintf(stderr,
                     "crew: a task given to post() threw %s: %s\n"
                     "crew: (set crew::Options::on_error to handle these yourself)\n",
                     info.type_name.c_str(), info.what.c_str());
    }

private:
    // A consumer freed a slot: move waiting overflow jobs into the ring. The
    // fence pairs with the one in enqueue's seq_cst increment: either the
    // producer's try_push saw our pop, or we see its overflow.
    void after_pop() {
#if defined(CREW_DETAIL_TSAN)  // TSan does not model fences: an RMW orders the same way
        if (overflow_size_.fetch_add(0, std::memory_order_seq_cst) == 0) return;
#else
        std::atomic_thread_fence(std::memory_order_seq_cst);
        if (overflow_size_.load(std::memory_order_relaxed) == 0) return;
#endif
        std::lock_guard lock(overflow_mutex_);
        refill_locked();
    }
    bool take_overflow(Job*& job) {
        if (overflow_size_.load(std::memory_order_seq_cst) == 0) return false;
        std::lock_guard lock(overflow_mutex_);
        if (overflow_.empty()) return false;
        job = overflow_.front();
        overflow_.pop_front();
        overflow_size_.fetch_sub(1, std::memory_order_seq_cst);
        return true;
    }
    void refill_locked() {
        while (!overflow_.empty()) {
            Job* next = overflow_.front();
            if (!queue_.try_push(std::move(next))) return;
            overflow_.pop_front();
            overflow_size_.fetch_sub(1, std::memory_order_seq_cst);
        }
    }

    std::function<void(std::exception_ptr)> on_error_;
    std::size_t max_pending_;
    SubmitGate gate_;
    TaskCounters counters_;
    Queue queue_;
    std::mutex overflow_mutex_;
    std::deque<Job*> overflow_;
    std::atomic<std::size_t> overflow_size_{0};
};

}  // namespace crew::detail
