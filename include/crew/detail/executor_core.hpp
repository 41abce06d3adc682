// crew/detail/executor_core.hpp — what every executor shares: the task queue
// (chosen by the Sync policy), the gate that refuses work after shutdown, and
// error reporting for post(). ThreadExecutor's workers run the queued jobs;
// ProcessExecutor's dispatchers ship them to worker processes. One core serves
// every policy combination.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <iterator>
#include <vector>
#include <exception>
#include <thread>
#include <utility>

#include <crew/detail/demangle.hpp>
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
    void leave() noexcept { state_.fetch_sub(1, std::memory_order_release); }

    /// Shuts the gate, then waits until no submitter is inside; `help` runs
    /// while waiting (a worker closing its own executor keeps draining).
    template <class Help>
    void close(Help help) noexcept {
        state_.fetch_or(closed_bit, std::memory_order_acq_rel);
        while ((state_.load(std::memory_order_acquire) & ~closed_bit) != 0)
            if (!help()) std::this_thread::yield();
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

template <sync::policy Sync>
class ExecutorCore final : public WaitHelper {
public:
    using Queue = typename Sync::template queue<Job*>;

    ExecutorCore(const Options& options, std::size_t queue_capacity)
        : on_error_(options.on_error), queue_(queue_capacity) {}

    /// Queues `job`; throws crew::ExecutorShutdown (leaving `job` to the
    /// caller) after shutdown began. Blocks while the queue is full; a worker
    /// of this executor runs queued work instead of blocking.
    void enqueue(Job* job) {
        if (!gate_.enter()) throw ExecutorShutdown();
        if (!queue_.try_push(std::move(job))) {
            if (current_wait_helper == this) {
                while (!queue_.try_push(std::move(job)))
                    if (!run_one()) std::this_thread::yield();
            } else {
                queue_.push(std::move(job));
            }
        }
        gate_.leave();
    }

    /// Next job for a consumer; blocks; false once closed and drained.
    bool take(Job*& job) { return queue_.pop(job); }
    bool try_take(Job*& job) { return queue_.try_pop(job); }

    /// Refuses new work; with cancel_pending, cancels what has not started;
    /// then lets consumers drain and stop.
    void close(Shutdown how) noexcept {
        gate_.close([this] { return current_wait_helper == this && run_one(); });
        if (how == Shutdown::cancel_pending) {
            Job* job = nullptr;
            while (queue_.try_pop(job)) job->abandon();
        }
        queue_.close();
    }
    [[nodiscard]] bool is_closed() const noexcept { return gate_.is_closed(); }

    /// WaitHelper: a worker blocked on a future runs a queued job instead.
    bool run_one() override {
        Job* job = nullptr;
        if (!queue_.try_pop(job)) return false;
        job->run();
        return true;
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
    std::function<void(std::exception_ptr)> on_error_;
    SubmitGate gate_;
    Queue queue_;
};

}  // namespace crew::detail
