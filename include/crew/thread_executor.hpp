// crew/thread_executor.hpp — crew::ThreadExecutor<Sync>: a pool of threads
// behind crew::Future.
//
// When: I/O-bound work, or CPU-bound work that shares large data; tasks share
// the process's memory, so a crash or a race in one task affects all.
// Cost: one block per submit or post (the task and its future's state are
// one object, recycled from the workers' frees: detail/block_pool.hpp); a
// hand-off through the Sync policy's queue (lock-free by default); idle
// workers spin ~50 us, then sleep. See docs/benchmarks.md.
//
// Any callable works, capturing lambdas included. A task that waits on a
// future (e.g. of a task it submitted itself) runs other queued tasks while it
// waits, so nested waiting never deadlocks the pool, even with one worker.
// With the lock-free policy, what a task submits goes to its worker's own
// deque (newest first; idle workers steal the oldest), so nested fork-join
// runs about as fast as a work-stealing scheduler (docs/design.md, "Nested
// work"); tasks from outside keep their FIFO order.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <exception>
#include <functional>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <ranges>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <crew/detail/block_pool.hpp>
#include <crew/detail/executor_core.hpp>
#include <crew/detail/imap.hpp>
#include <crew/detail/shared_state.hpp>
#include <crew/detail/work_deque.hpp>
#include <crew/errors.hpp>
#include <crew/future.hpp>
#include <crew/options.hpp>
#include <crew/sync/lock_free.hpp>
#include <crew/sync/policy.hpp>

namespace crew {

namespace detail {

/// Runs the call held in `call`, destroys it (what it captured goes now, not
/// when the future goes), then publishes the result into `state`. True when
/// the task returned normally.
template <class R, class Call>
bool invoke_and_publish(SharedState<R>& state, std::optional<Call>& call) noexcept {
    auto invoke = [&] { return std::apply([](auto&... c) { return std::invoke(std::move(c)...); }, *call); };
    if constexpr (std::is_void_v<R>) {
        auto error = capture_exception(invoke);
        call.reset();
        if (error) {
            state.publish_error(std::move(error));
            return false;
        }
        state.publish_value();
        return true;
    } else {
        std::optional<R> value;
        auto error = capture_exception([&] { value.emplace(invoke()); });
        call.reset();
        if (error) {
            state.publish_error(std::move(error));
            return false;
        }
        state.publish_value(std::move(*value));
        return true;
    }
}

/// A submitted task: the callable, its arguments and its future's state in
/// one allocation. References: the future's and the queue's. It runs once:
/// on the worker that takes it from the queue, or on one of its executor's
/// workers that waits for it first (run_here; the queue's reference is then
/// dropped when the queue hands it out).
template <class R, class F, class... Args>
class ThreadTask final : public SharedState<R>, public RunnableJob, public PooledAllocation {
public:
    template <class Fn, class... As>
    explicit ThreadTask(TaskCounters& counters, const WaitHelper& owner, Fn&& f, As&&... args)
        : SharedState<R>(2), counters_(counters), owner_(owner) {
        call_.emplace(std::forward<Fn>(f), std::forward<As>(args)...);
    }

    void run() noexcept override {
        if (this->try_claim()) run_claimed();
        this->release();
    }
    bool run_here(WaitHelper& helper) noexcept override {
        if (&helper != &owner_ || helper.refuses_starts()) return false;
        if (helper.take_back(static_cast<const Job*>(this))) {
            run();  // it was still queued here: the queue's reference is dropped too
            return true;
        }
        if (!this->try_claim()) return false;
        run_claimed();
        return true;
    }
    void abandon() noexcept override {
        this->try_cancel();
        this->release();
    }
    bool try_cancel() noexcept override {
        if (!this->try_claim()) return this->status() == Status::cancelled;
        call_.reset();
        this->publish_cancelled();
        counters_.cancelled();
        return true;
    }

private:
    void run_claimed() noexcept {
        counters_.started();
        const bool ok = invoke_and_publish<R>(*this, call_);
        if (current_wait_helper != &owner_) return;  // the task destroyed its executor (~ThreadExecutor)
        counters_.finished(ok);
    }
    void destroy() noexcept override { delete this; }

    TaskCounters& counters_;
    const WaitHelper& owner_;  // the executor's core: only its workers run it inline
    std::optional<std::tuple<F, Args...>> call_;
};

/// A post()ed task: no future; an exception goes to the executor's reporter.
template <class Core, class F, class... Args>
class ThreadPost final : public RunnableJob, public PooledAllocation {
public:
    template <class Fn, class... As>
    explicit ThreadPost(Core& core, Fn&& f, As&&... args)
        : core_(core), call_(std::forward<Fn>(f), std::forward<As>(args)...) {}

    void run() noexcept override {
        Core& core = core_;
        const WaitHelper* const owner = &core;
        core.counters().started();
        auto error = capture_exception([this] { std::apply([](auto&... c) { std::invoke(std::move(c)...); }, call_); });
        delete this;  // what the task captured goes before anyone learns it ran
        if (current_wait_helper != owner) {  // the task destroyed its executor (~ThreadExecutor)
            if (error) print_post_error(error);  // its on_error went with it
            return;
        }
        const bool ok = !error;
        if (!ok) core.report(std::move(error));
        core.counters().finished(ok);
    }
    void abandon() noexcept override {
        core_.counters().cancelled();
        delete this;
    }

private:
    Core& core_;
    std::tuple<F, Args...> call_;
};

}  // namespace detail

/// A pool of worker threads; Sync (crew::sync::LockFree, Mutex or Semaphore)
/// chooses how its task queue is synchronised.
template <class Sync = sync::LockFree>
class ThreadExecutor {
    static_assert(sync::policy<Sync>,
                  "crew::ThreadExecutor<Sync>: Sync must be a sync policy: crew::sync::LockFree, "
                  "crew::sync::Mutex or crew::sync::Semaphore");

public:
    using sync_policy = Sync;

    /// Starts `workers` threads (0: one per hardware thread, or
    /// options.workers). Options that only apply to processes
    /// (max_tasks_per_worker, task_timeout, memory_limit, start) are rejected
    /// with crew::InvalidArgument; options.initializer runs once at the start
    /// of each worker thread.
    explicit ThreadExecutor(std::size_t workers = 0, Options options = {})
        : core_(check(options), queue_capacity, &run_job) {
        const std::size_t n = detail::resolve_workers(workers, options);
        if constexpr (own_deques) {
            deques_ = std::make_unique<Deque[]>(n);
            deque_count_ = n;
            core_.set_local_work(&take_local, &take_back, this);
        }
        threads_.reserve(n);
        try {
            for (std::size_t i = 0; i < n; ++i)
                threads_.emplace_back([this, i, init = options.initializer] { work(i, init); });
        } catch (...) {
            shutdown(Shutdown::cancel_pending);
            throw;
        }
    }

    ThreadExecutor(const ThreadExecutor&) = delete;
    ThreadExecutor& operator=(const ThreadExecutor&) = delete;

    /// shutdown(drain), then joins every worker.
    ~ThreadExecutor() {
        shutdown(Shutdown::drain);
        std::lock_guard lock(join_mutex_);
        if (detail::current_wait_helper == &core_) {
            // Destroyed by one of its own tasks: this worker leaves as soon
            // as that task returns (work() checks), without touching the
            // executor again, and the others must not linger for it.
            detail::current_wait_helper = nullptr;
            if constexpr (own_deques) busy_workers_.fetch_sub(1, std::memory_order_seq_cst);
        }
        for (auto& t : threads_) {
            if (!t.joinable()) continue;
            if (t.get_id() == std::this_thread::get_id())
                t.detach();  // destroyed from one of its own tasks: cannot join itself
            else
                t.join();
        }
    }

    /// Runs `f(args...)` on a worker; the future holds its result. Arguments
    /// are copied (or moved) into the task. Throws crew::ExecutorShutdown
    /// after shutdown().
    template <class F, class... Args>
    auto submit(F&& f, Args&&... args) -> Future<std::invoke_result_t<std::decay_t<F>, std::decay_t<Args>...>> {
        using R = std::invoke_result_t<std::decay_t<F>, std::decay_t<Args>...>;
        using Task = detail::ThreadTask<R, std::decay_t<F>, std::decay_t<Args>...>;
        auto* task = new Task(core_.counters(), core_, std::forward<F>(f), std::forward<Args>(args)...);
        enqueue(task, [task] {
            task->release();
            task->release();
        });
        return detail::make_future<R>(task);
    }

    /// Runs `f(args...)` on a worker with no future. An exception goes to
    /// Options::on_error, or to stderr when none was given; never lost.
    template <class F, class... Args>
    void post(F&& f, Args&&... args) {
        using Task = detail::ThreadPost<Core, std::decay_t<F>, std::decay_t<Args>...>;
        auto* task = new Task(core_, std::forward<F>(f), std::forward<Args>(args)...);
        enqueue(task, [task] { delete task; });
    }

    /// `f` applied to every input, results in input order. Inputs are split
    /// into chunks of `chunk` (0: about four chunks per worker), one task per
    /// chunk. Returns when all work ended; then rethrows the exception of the
    /// first failed input, if any.
    template <class F, std::ranges::forward_range Range>
    auto map(F&& f, const Range& inputs, std::size_t chunk = 0)
        -> detail::map_result_t<F&, std::ranges::range_reference_t<const Range>> {
        using R = std::invoke_result_t<F&, std::ranges::range_reference_t<const Range>>;
        using It = std::ranges::iterator_t<const Range>;
        const auto n = static_cast<std::size_t>(std::ranges::distance(inputs));
        chunk = detail::pick_chunk(n, size(), chunk);

        // The chunks refer to `f` and `inputs` in place: safe because map()
        // does not return before every chunk has finished.
        std::vector<Future<std::vector<R>>> parts;
        parts.reserve((n + chunk - 1) / chunk);
        std::exception_ptr submit_error;
        It it = std::ranges::begin(inputs);
        for (std::size_t done = 0; done < n;) {
            const std::size_t count = std::min(chunk, n - done);
            try {
                parts.push_back(submit([&f, first = it, count] {
                    std::vector<R> out;
                    out.reserve(count);
                    It at = first;
                    for (std::size_t i = 0; i < count; ++i, ++at) out.push_back(std::invoke(f, *at));
                    return out;
                }));
            } catch (...) {
                submit_error = std::current_exception();
                break;
            }
            std::ranges::advance(it, static_cast<std::ranges::range_difference_t<const Range>>(count));
            done += count;
        }
        return detail::join_chunks<R>(parts, n, submit_error);
    }

    /// `f` over `inputs`, lazily: a single-pass range of results in input
    /// order, each yielded as soon as it and those before it are ready.
    /// Inputs (any input range, a view too) are drawn `options.chunk` at a
    /// time, at most `options.in_flight` chunks ahead, so memory stays
    /// bounded. A failure is thrown when its turn comes, after every earlier
    /// result; the rest is cancelled. An lvalue range is referred to (keep it
    /// alive while iterating); an rvalue one is kept in the range.
    template <class F, std::ranges::input_range Range>
    auto imap(F f, Range&& inputs, MapOptions options = {}) {
        using In = std::ranges::range_value_t<std::remove_cvref_t<Range>>;
        using R = std::decay_t<std::invoke_result_t<F&, In&>>;
        static_assert(!std::is_void_v<R>, "crew::imap: the function must return a value; use post() or submit() "
                                          "for functions that return void");
        return detail::make_imap<R>(
            std::forward<Range>(inputs),
            [this, f](std::vector<In>&& chunk) {
                return submit([f, c = std::move(chunk)]() mutable { return detail::imap_run_chunk<R>(f, c); });
            },
            options, size());
    }

    /// Stops taking work. `drain` runs everything already submitted;
    /// `cancel_pending` cancels what has not started (their futures throw
    /// crew::Cancelled). Waits for the workers to finish, except when called
    /// from one of them (the destructor joins then). Later submit/post/map
    /// throw crew::ExecutorShutdown. Safe to call more than once, from any
    /// thread.
    /// Shutdown::kill is cancel_pending here: a thread cannot be stopped, so
    /// running tasks finish.
    void shutdown(Shutdown how = Shutdown::drain) {
        core_.close(how);
        if (how != Shutdown::drain) cancel_deques();
        if (detail::current_wait_helper == &core_) return;  // a task must not join its own pool
        std::lock_guard lock(join_mutex_);
        for (auto& t : threads_)
            if (t.joinable()) t.join();
    }

    /// Blocks until every task submitted or posted so far, and every task
    /// those submitted, has finished (or was cancelled); the executor stays
    /// usable. Throws crew::InvalidArgument from one of its own tasks (it
    /// would wait for itself).
    void wait_idle() { core_.wait_idle(nullptr, detail::current_wait_helper == &core_); }

    /// wait_idle() for at most `d`; true when idle.
    template <class Rep, class Period>
    bool wait_idle_for(const std::chrono::duration<Rep, Period>& d) {
        const auto deadline = detail::deadline_after(d);
        return core_.wait_idle(&deadline, detail::current_wait_helper == &core_);
    }

    /// A snapshot of the counters: queued, running, completed, failed,
    /// cancelled, workers.
    [[nodiscard]] Stats stats() const noexcept { return core_.counters().snapshot(size()); }

    /// Number of worker threads.
    [[nodiscard]] std::size_t size() const noexcept { return threads_.size(); }

private:
    using Core = detail::ExecutorCore<Sync>;

    // Big enough that bursts of submits rarely block, small enough to stay in
    // cache (64 KiB of slots for the lock-free ring).
    static constexpr std::size_t queue_capacity = 1024;

    static const Options& check(const Options& o) {
        if (o.max_tasks_per_worker != 0 || o.task_timeout.count() != 0 || o.memory_limit != 0 || o.start ||
            o.max_message_size != Options{}.max_message_size)
            throw InvalidArgument(
                "crew::ThreadExecutor: max_tasks_per_worker, task_timeout, memory_limit, start and "
                "max_message_size apply to worker processes only (a thread cannot be killed or limited alone, "
                "and shares memory instead of sending messages); use crew::ProcessExecutor");
        return o;
    }

    // Every job this executor queues is a ThreadTask or a ThreadPost.
    static void run_job(detail::Job* job) noexcept { static_cast<detail::RunnableJob*>(job)->run(); }

    // Nested work (docs/design.md): with the lock-free policy each worker has
    // a deque of its own (detail/work_deque.hpp). A task that a worker's task
    // submits goes to the bottom of it, the worker takes its newest first,
    // idle workers steal the oldest; outside submitters keep the shared FIFO
    // queue. The Mutex and Semaphore policies queue every task through the
    // policy's own queue.
    static constexpr bool own_deques = std::is_same_v<Sync, sync::LockFree>;
    using Deque = detail::WorkDeque<detail::Job*>;

    template <class Discard>
    void enqueue(detail::RunnableJob* job, Discard discard) {
        if constexpr (own_deques) {
            if (detail::current_wait_helper == &core_) {
                try {
                    if (push_own(job)) return;
                } catch (...) {
                    discard();
                    throw;
                }
                discard();
                throw ExecutorShutdown();
            }
        }
        core_.enqueue(job, discard);
    }

    // A worker of this executor queues a task: into its own deque, or the
    // shared queue when the deque is full; false after shutdown. Idle
    // workers may sleep on the shared queue only after they looked into
    // every deque (work() counts them first), so a push that sees one moves
    // its newest task there.
    bool push_own(detail::Job* job) {
        if (core_.is_closed()) return false;
        core_.counters().queued();
        Deque& mine = deques_[current_worker_];
        if (!mine.push(job)) {
            try {
                core_.push_counted(job);
            } catch (...) {  // no memory for the shared queue's overflow
                core_.counters().unqueued();
                throw;
            }
            return true;
        }
        detail::Job* newest = nullptr;
        if (sleepers_.load(std::memory_order_seq_cst) == 0 || !mine.pop(newest)) return true;
        try {
            core_.push_counted(newest);
        } catch (...) {
            (void)mine.push(newest);  // no memory: it stays here, for this worker or a thief
        }
        return true;
    }

    // ExecutorCore::TakeLocal for the calling worker.
    static bool take_local(void* owner, detail::Job*& job, bool steal) noexcept {
        auto* self = static_cast<ThreadExecutor*>(owner);
        const std::size_t me = current_worker_;
        for (std::size_t k = steal ? 1 : 0; k < (steal ? self->deque_count_ : 1); ++k) {
            Deque& d = self->deques_[(me + k) % self->deque_count_];
            while (steal ? d.steal(job) : d.pop(job)) {
                if (!self->core_.cancelling()) return true;
                job->abandon();  // shutdown(cancel_pending): nothing queued starts
            }
        }
        return false;
    }

    // ExecutorCore::TakeBack for the calling worker: pops `job` when it is
    // the newest of this worker's deque.
    static bool take_back(void* owner, const void* job) noexcept {
        auto* self = static_cast<ThreadExecutor*>(owner);
        Deque& mine = self->deques_[current_worker_];
        detail::Job* newest = nullptr;
        if (!mine.pop(newest)) return false;
        if (newest == job) return true;
        (void)mine.push(newest);  // just popped: there is room
        return false;
    }

    // shutdown(cancel_pending): what waits in the deques is cancelled too.
    void cancel_deques() noexcept {
        if constexpr (own_deques) {
            detail::Job* job = nullptr;
            for (std::size_t i = 0; i < deque_count_; ++i)
                while (deques_[i].steal(job)) job->abandon();
        }
    }

    void work(std::size_t index, const Initializer& initializer) {
        detail::current_wait_helper = &core_;
        detail::inside_executor = true;
        current_worker_ = index;
        if (initializer) {
            try {
                initializer();
            } catch (...) {
                core_.report(std::current_exception());
            }
        }
        detail::Job* job = nullptr;
        if constexpr (own_deques) {
            busy_workers_.fetch_add(1, std::memory_order_seq_cst);
            for (;;) {
                if (take_local(this, job, false) || core_.try_take(job) || take_local(this, job, true)) {
                    if (!run_and_stay(job)) return;
                    continue;
                }
                // About to sleep on the shared queue: count as a sleeper,
                // then look into the deques once more (see push_own).
                sleepers_.fetch_add(1, std::memory_order_seq_cst);
                const bool stole = take_local(this, job, true);
                const bool got = stole || core_.take(job);
                sleepers_.fetch_sub(1, std::memory_order_seq_cst);
                if (!got && !linger(job)) break;
                if (!run_and_stay(job)) return;
            }
        } else {
            while (core_.take(job))
                if (!run_and_stay(job)) return;
        }
        detail::current_wait_helper = nullptr;
    }

    // Runs a job on this worker; false when the job destroyed this executor
    // (the destructor cleared current_wait_helper): the worker must leave
    // without touching `this` again.
    bool run_and_stay(detail::Job* job) {
        const detail::WaitHelper* const mine = &core_;
        run_job(job);
        return detail::current_wait_helper == mine;
    }

    // The shared queue is closed and drained, but a task still running on
    // another worker may yet push into its deque (push_own checks
    // is_closed() before its push, not atomically with it) and then wait for
    // that task by other means than its future. So a worker leaves only once
    // no worker is busy: then no task runs, no push can come, and every deque
    // is empty (a worker empties its own before it gets here). Until then it
    // steals, polling with a growing pause (up to 10 ms; only during
    // shutdown while another worker's task runs). True with a job to run.
    bool linger(detail::Job*& job) {
        busy_workers_.fetch_sub(1, std::memory_order_seq_cst);
        auto pause = std::chrono::microseconds(50);
        for (;;) {
            if (take_local(this, job, true) || core_.try_take(job)) {
                busy_workers_.fetch_add(1, std::memory_order_seq_cst);
                return true;
            }
            if (busy_workers_.load(std::memory_order_seq_cst) == 0) return false;
            std::this_thread::sleep_for(pause);
            pause = std::min(pause * 2, std::chrono::microseconds(10'000));
        }
    }

    // Which worker of its executor the calling thread is.
    static inline thread_local std::size_t current_worker_ = 0;

    Core core_;
    std::unique_ptr<Deque[]> deques_;
    std::size_t deque_count_ = 0;
    alignas(64) std::atomic<std::size_t> sleepers_{0};
    std::atomic<std::size_t> busy_workers_{0};  // started and not lingering (see linger)
    std::mutex join_mutex_;
    std::vector<std::thread> threads_;
};

#ifdef CREW_SEPARATE_COMPILATION
// Compiled once, by <crew/compiled.hpp> (docs/guide.md, "Compile times").
extern template class ThreadExecutor<sync::LockFree>;
#endif

}  // namespace crew
