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
#include <type_traits>
#include <iterator>
#include <vector>
#include <exception>
#include <thread>
#include <utility>

#include <crew/detail/deadline.hpp>
#include <crew/detail/demangle.hpp>
#include <crew/detail/event_count.hpp>
#include <crew/detail/shared_state.hpp>
#include <crew/errors.hpp>
#include <crew/options.hpp>
#include <crew/sync/policy.hpp>

namespace crew::detail {

/// A queued unit of work, as the core sees it: all it ever does with one is
/// hand it to a consumer, or abandon() it (shutdown, destruction). What a
/// consumer does with it is the executor's: ThreadExecutor runs a
/// RunnableJob, ProcessExecutor and MpiExecutor ship theirs to a worker.
struct Job {
    /// The job will never run: its future gets crew::Cancelled; frees.
    virtual void abandon() noexcept = 0;

protected:
    ~Job() = default;
};

/// A job that runs on the thread that takes it (ThreadExecutor's tasks and
/// posts). Exactly one of run() / abandon() is called, once.
struct RunnableJob : Job {
    /// Runs the job (unless its future was cancelled), publishes, frees.
    virtual void run() noexcept = 0;

protected:
    ~RunnableJob() = default;
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
///
/// The counts of every step are split over `shards` cache lines, and each
/// thread counts on the line of its own slot: a submitter and the workers,
/// or two workers that submit to each other (nested fork-join), never write
/// the same line, which would cost a cache-line transfer per task on every
/// step (measured: 85% of a nested fib(22)). Reading sums the lines, later
/// steps first, so a task counted as ended is always counted as submitted by
/// the time the submissions are read: queued, running and idleness never go
/// negative, and idle is never reported while a task is outstanding.
class TaskCounters {
public:
    void queued() noexcept { mine().submitted.fetch_add(1, std::memory_order_seq_cst); }
    void started() noexcept {
        mine().started.fetch_add(1, std::memory_order_seq_cst);
        room_.notify();
    }
    /// A started task ended; `ok`: with a value.
    void finished(bool ok) noexcept {
        Shard& shard = mine();
        (ok ? shard.completed : shard.failed).fetch_add(1, std::memory_order_seq_cst);
        idle_.notify();
    }
    /// A queued task will never start.
    void cancelled() noexcept {
        cancelled_.fetch_add(1, std::memory_order_seq_cst);
        room_.notify();
        idle_.notify();
    }
    /// A started task was stopped (Shutdown::kill, or cancelled after it
    /// was shipped to a worker process): counted as cancelled.
    void stopped() noexcept {
        stopped_.fetch_add(1, std::memory_order_seq_cst);
        idle_.notify();
    }
    /// A queued task was refused before it counted (enqueue threw).
    void unqueued() noexcept {
        refused_.fetch_add(1, std::memory_order_seq_cst);
        room_.notify();
        idle_.notify();
    }

    [[nodiscard]] Stats snapshot(std::size_t workers) const noexcept {
        // Later stages first: a task counted there is counted in the earlier
        // ones too, so no difference below goes negative.
        const std::size_t completed = sum(&Shard::completed);
        const std::size_t failed = sum(&Shard::failed);
        const std::size_t stopped = stopped_.load(std::memory_order_seq_cst);
        const std::size_t started = sum(&Shard::started);
        const std::size_t cancelled = cancelled_.load(std::memory_order_seq_cst);
        const std::size_t refused = refused_.load(std::memory_order_seq_cst);
        const std::size_t submitted = sum(&Shard::submitted);
        Stats s;
        s.queued = submitted - refused - cancelled - started;
        s.running = started - completed - failed - stopped;
        s.completed = completed;
        s.failed = failed;
        s.cancelled = cancelled + stopped;
        s.workers = workers;
        return s;
    }

    /// Until nothing is queued or running; false at `deadline` (none: null).
    bool wait_idle(const std::chrono::steady_clock::time_point* deadline) {
        return idle_.wait_until([this] { return idle(); }, deadline);
    }

    /// Until fewer than `limit` tasks are queued, or `stop()`.
    template <class Stop>
    void wait_for_room(std::size_t limit, Stop stop) {
        room_.wait_until([&] { return stop() || queued_now() < limit; }, nullptr);
    }
    [[nodiscard]] std::size_t queued_now() const noexcept {
        const std::size_t ended =
            sum(&Shard::started) + cancelled_.load(std::memory_order_seq_cst) + refused_.load(std::memory_order_seq_cst);
        return sum(&Shard::submitted) - ended;
    }
    void wake_room_waiters() { room_.notify(); }

private:
    struct alignas(128) Shard {  // 128: a line and the neighbour the prefetcher pairs with it
        std::atomic<std::size_t> submitted{0}, started{0}, completed{0}, failed{0};
    };
    static constexpr std::size_t shards = 16;

    /// The calling thread's shard: threads take slots in turn, so the
    /// threads of one process rarely share one.
    Shard& mine() noexcept {
        static std::atomic<std::size_t> next_slot{0};
        static thread_local const std::size_t slot = next_slot.fetch_add(1, std::memory_order_relaxed) % shards;
        return shards_[slot];
    }

    [[nodiscard]] std::size_t sum(std::atomic<std::size_t> Shard::*count) const noexcept {
        std::size_t total = 0;
        for (const Shard& shard : shards_) total += (shard.*count).load(std::memory_order_seq_cst);
        return total;
    }

    // Every task submitted so far has ended: the ends are read first, so a
    // task submitted meanwhile only makes the answer "not idle".
    [[nodiscard]] bool idle() const noexcept {
        const std::size_t ended = sum(&Shard::completed) + sum(&Shard::failed) +
                                  stopped_.load(std::memory_order_seq_cst) +
                                  cancelled_.load(std::memory_order_seq_cst) +
                                  refused_.load(std::memory_order_seq_cst);
        return ended == sum(&Shard::submitted);
    }

    Shard shards_[shards];
    alignas(64) std::atomic<std::size_t> cancelled_{0}, refused_{0}, stopped_{0};  // anyone, rarely
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
        if (state_.fetch_sub(1, std::memory_order_release) == (closed_bit | 1)) emptied_.notify_all();
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
            emptied_.await([&] { return state_.load(std::memory_order_acquire) != s; });
        }
    }
    [[nodiscard]] bool is_closed() const noexcept { return state_.load(std::memory_order_acquire) & closed_bit; }

private:
    static constexpr std::uint64_t closed_bit = std::uint64_t{1} << 63;
    std::atomic<std::uint64_t> state_{0};  // submitters inside, plus closed_bit
    EventCount emptied_;                   // the last submitter left a closed gate
};

/// Workers to start: the argument, else Options::workers, else one per
/// hardware thread.
inline std::size_t resolve_workers(std::size_t requested, const Options& options) {
    std::size_t n = requested != 0 ? requested : options.workers;
    if (n == 0) n = std::thread::hardware_concurrency();
    return n == 0 ? 1 : n;
}

/// What map(f, inputs) returns: std::vector of f's result. A function that
/// returns void is refused here, while the signature is formed, so the
/// static_assert is the first error the user reads, not the last of a page of
/// "forming reference to void".
template <class R, class Callable>
struct map_result {
    using type = std::vector<R>;
};
template <class Callable>
struct map_result<void, Callable> {
    static_assert(!std::is_same_v<Callable, Callable>,
                  "crew::map: the function must return a value; use post() or submit() for functions that return void");
    using type = void;
};
template <class F, class Arg>
using map_result_t = typename map_result<std::invoke_result_t<F, Arg>, F>::type;

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

/// What a post()ed task's exception becomes when no Options::on_error takes
/// it: a line on stderr (never lost silently).
inline void print_post_error(const std::exception_ptr& error) noexcept {
    auto info = describe(error);
    std::fprintf(stderr,
                 "crew: a task given to post() threw %s: %s\n"
                 "crew: (set crew::Options::on_error to handle these yourself)\n",
                 info.type_name.c_str(), info.what.c_str());
}

/// The queue of an executor: the Sync policy's bounded ring, with an
/// overflow list behind it, so the queue is unbounded and no submitter ever
/// blocks on it (Options::max_pending adds back-pressure for outside threads
/// only). While the overflow holds anything, new jobs go behind it (jobs stay
/// in submission order), and each such producer moves what fits from the
/// overflow into the ring; consumers take from the overflow once the ring is
/// empty. The fast path (ring not full, overflow empty) costs one load more
/// than the bare ring.
template <sync::policy Sync>
class ExecutorCore final : public WaitHelper {
public:
    using Queue = typename Sync::template queue<Job*>;

    /// How a waiting worker runs a job it takes (see run_one()); null for
    /// executors whose jobs run elsewhere (processes, MPI ranks).
    using RunJob = void (*)(Job*) noexcept;

    ExecutorCore(const Options& options, std::size_t queue_capacity, RunJob run_job = nullptr)
        : on_error_(options.on_error), max_pending_(options.max_pending), run_job_(run_job), queue_(queue_capacity) {}

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
        try {
            push_counted(job);
        } catch (...) {
            counters_.unqueued();
            gate_.leave();
            throw;
        }
        gate_.leave();
    }

    /// Puts a job that was already counted as queued (it waited in a
    /// worker's own deque) into the shared queue, where any worker takes it.
    void push_counted(Job* job) {
        if (overflow_size_.load(std::memory_order_seq_cst) != 0 || !queue_.try_push(std::move(job))) {
            std::lock_guard lock(overflow_mutex_);
            overflow_.push_back(job);
            overflow_size_.fetch_add(1, std::memory_order_seq_cst);
            refill_locked();  // a consumer asleep on an empty ring wakes here
        }
    }

    /// Where a waiting worker looks for work besides the shared queue
    /// (ThreadExecutor's own deques): `take(owner, job, steal)` takes from
    /// the calling worker's deque (steal false) or from the others' (true);
    /// `take_back(owner, job)` takes `job` from the calling worker's deque
    /// when it is the newest there.
    using TakeLocal = bool (*)(void* owner, Job*& job, bool steal) noexcept;
    using TakeBack = bool (*)(void* owner, const void* job) noexcept;
    void set_local_work(TakeLocal local, TakeBack back, void* owner) noexcept {
        take_local_ = local;
        take_back_ = back;
        local_owner_ = owner;
    }

    /// As enqueue(job), but a refused job is handed to `discard()` (which
    /// frees it) before the exception goes on: the core counts a job only
    /// once it is queued.
    template <class Discard>
    void enqueue(Job* job, Discard discard) {
        try {
            enqueue(job);
        } catch (...) {
            discard();
            throw;
        }
    }

    /// Next job for a consumer; blocks; false once closed and drained. The
    /// overflow is looked at only when the ring is empty (its jobs are newer
    /// than the ring's); a consumer asleep on an empty ring is woken by the
    /// producer that refills the ring from the overflow.
    bool take(Job*& job) {
        if (queue_.try_pop(job) || take_overflow(job)) return true;
        return queue_.pop(job) || take_overflow(job);
    }
    bool try_take(Job*& job) { return queue_.try_pop(job) || take_overflow(job); }

    /// Refuses new work; with cancel_pending or kill, cancels what has not
    /// started; then lets consumers drain and stop.
    void close(Shutdown how) noexcept {
        if (how != Shutdown::drain) cancelling_.store(true, std::memory_order_seq_cst);
        gate_.close([this] { return current_wait_helper == this && run_one(); },
                    [this] { counters_.wake_room_waiters(); });
        if (how != Shutdown::drain) {
            Job* job = nullptr;
            while (try_take(job)) job->abandon();
        }
        queue_.close();
    }
    [[nodiscard]] bool is_closed() const noexcept { return gate_.is_closed(); }
    /// shutdown(cancel_pending or kill) began: queued jobs must not start.
    [[nodiscard]] bool cancelling() const noexcept { return cancelling_.load(std::memory_order_seq_cst); }

    /// WaitHelper: a worker blocked on a future runs a queued job instead
    /// (only where jobs run here: a run_job was given): its own newest, then
    /// the shared queue's oldest, then one stolen from another worker.
    [[gnu::noinline]] bool run_one() override {
        Job* job = nullptr;
        if (run_job_ == nullptr) return false;
        if (!take_local(job, false) && !try_take(job) && !take_local(job, true)) return false;
        run_job_(job);
        return true;
    }
    [[nodiscard]] bool refuses_starts() const noexcept override { return cancelling(); }
    bool take_back(const void* job) noexcept override {
        return take_back_ != nullptr && take_back_(local_owner_, job);
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
        print_post_error(error);
    }

private:
    bool take_local(Job*& job, bool steal) noexcept {
        return take_local_ != nullptr && take_local_(local_owner_, job, steal);
    }

    // The ring is empty: take the oldest overflow job, and move what fits of
    // the rest into the ring (one lock for up to a ringful of jobs).
    bool take_overflow(Job*& job) {
        if (overflow_size_.load(std::memory_order_seq_cst) == 0) return false;
        std::lock_guard lock(overflow_mutex_);
        if (overflow_.empty()) return false;
        job = overflow_.front();
        overflow_.pop_front();
        overflow_size_.fetch_sub(1, std::memory_order_seq_cst);
        refill_locked();
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
    RunJob run_job_;
    TakeLocal take_local_ = nullptr;
    TakeBack take_back_ = nullptr;
    void* local_owner_ = nullptr;
    std::atomic<bool> cancelling_{false};
    SubmitGate gate_;
    TaskCounters counters_;
    Queue queue_;
    std::mutex overflow_mutex_;
    std::deque<Job*> overflow_;
    std::atomic<std::size_t> overflow_size_{0};
};

}  // namespace crew::detail

#ifdef CREW_SEPARATE_COMPILATION
// The default policy's core is compiled once, in the translation unit that
// includes <crew/compiled.hpp>, instead of in every one that uses it.
#include <crew/sync/lock_free.hpp>
namespace crew::detail {
extern template class ExecutorCore<sync::LockFree>;
}  // namespace crew::detail
#endif
