// crew/options.hpp — construction options shared by both executors.
//
// Use designated initialisers: `crew::Options{.on_error = f}`. Fields that an
// executor cannot honour are rejected by its constructor with
// crew::InvalidArgument, never silently ignored.
#pragma once

#include <chrono>
#include <cstddef>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

namespace crew {

/// What Options::initializer holds: nothing, a function pointer, or a
/// function pointer with arguments (crew::initializer(f, args...), declared
/// in <crew/initializer.hpp>; Python's `initargs`). Converts implicitly from
/// `void (*)()`, so `.initializer = &setup` works.
///
/// On processes the initializer travels to each new worker as an encoded
/// call, like a task: the arguments must be encodable, and the function is
/// checked as a task's is. On threads it runs in each worker thread with the
/// arguments as they were copied into it.
class Initializer {
public:
    Initializer() noexcept = default;
    Initializer(std::nullptr_t) noexcept {}
    Initializer(void (*f)()) noexcept : function_(f) {}  // implicit on purpose: `.initializer = &setup`

    explicit operator bool() const noexcept { return function_ != nullptr || bound_ != nullptr; }
    friend bool operator==(const Initializer& i, std::nullptr_t) noexcept { return !i; }

    /// Runs it here (what a worker thread does).
    void operator()() const {
        if (bound_) {
            bound_->run();
        } else if (function_ != nullptr) {
            function_();
        }
    }

    using Function = void (*)();

    /// The plain function pointer; nullptr for one with arguments.
    [[nodiscard]] Function function() const noexcept { return function_; }

    /// crew's executors: the call a worker process runs, encoded; nullptr for
    /// a plain function pointer (or none).
    [[nodiscard]] const std::vector<std::byte>* encoded_call() const noexcept {
        return bound_ ? &bound_->call : nullptr;
    }

    /// crew's executors: one with arguments, from how to run it here and its
    /// encoded call (see crew::initializer()).
    static Initializer bound(std::function<void()> run, std::vector<std::byte> call) {
        Initializer i;
        i.bound_ = std::make_shared<const Bound>(Bound{std::move(run), std::move(call)});
        return i;
    }

private:
    struct Bound {
        std::function<void()> run;
        std::vector<std::byte> call;
    };
    Function function_ = nullptr;
    std::shared_ptr<const Bound> bound_;  // shared: Options are copied freely
};

/// How shutdown() treats work that was submitted but has not started.
enum class Shutdown {
    drain,           ///< run everything already submitted, then stop
    cancel_pending,  ///< cancel what has not started (get() throws Cancelled)
    /// cancel what has not started and stop what runs: worker processes
    /// running a task are killed and those tasks fail with crew::Cancelled
    /// (threads cannot be killed: their running tasks finish)
    kill,
};

/// How a ProcessExecutor starts its worker processes (Python's
/// multiprocessing contexts). See docs/design.md for what each costs.
enum class Start {
    /// fork() the caller: the cheapest start (docs/benchmarks.md), and the worker
    /// sees the caller's memory as it was; unsafe when the caller runs other
    /// threads (a lock one of them held stays locked in the child).
    fork,
    /// One fresh copy of this program per executor (the fork server, started
    /// like spawn) forks every worker from its clean single-threaded state:
    /// safe with threads, and each later worker costs a fork of a small
    /// process. Workers see the program as it is before main().
    fork_server,
    /// fork()+exec() a fresh copy of this program per worker (the default):
    /// safe with threads; each start pays a program start (a few ms).
    /// Workers see the program as it is before main().
    spawn,
};

/// Options for ThreadExecutor and ProcessExecutor.
struct Options {
    /// Number of workers; 0 means one per hardware thread. The constructor's
    /// `workers` argument, when not 0, wins.
    std::size_t workers = 0;
    /// Receives exceptions escaping post()ed tasks; when empty they are
    /// printed to stderr. Several workers may call it at once: make it
    /// thread-safe.
    std::function<void(std::exception_ptr)> on_error = {};
    /// Run once in each new worker before its first task (threads: at the
    /// start of each worker thread): `&setup`, or
    /// `crew::initializer(&setup, args...)` to pass it arguments.
    Initializer initializer = nullptr;
    /// Processes only: replace a worker after it ran this many tasks (0: never).
    std::size_t max_tasks_per_worker = 0;
    /// Processes only: a task running longer is failed with crew::Timeout and
    /// its worker killed and replaced (0: no limit).
    std::chrono::nanoseconds task_timeout{0};
    /// Processes only: address-space limit per worker in bytes (0: none).
    std::size_t memory_limit = 0;
    /// Processes only: how workers are started; unset means the safe default
    /// (see crew::ProcessExecutor).
    std::optional<Start> start = std::nullopt;
    /// Largest message (one task's encoded call, or one result) a channel
    /// accepts, in bytes; never applied to a batch. An argument over it fails
    /// at submit, a result over it fails that task with crew::ChannelError.
    std::size_t max_message_size = std::size_t{1} << 32;
    /// Back-pressure: at most this many tasks queued and not yet started
    /// (0: unbounded, the default). Only a thread outside the executor waits
    /// for room; a task or continuation of the executor never blocks.
    std::size_t max_pending = 0;
};

/// Options of imap(): `crew::MapOptions{.chunk = 8, .in_flight = 4}`.
struct MapOptions {
    /// Inputs per task (0: picked from the number of workers).
    std::size_t chunk = 0;
    /// Chunks submitted and not yet yielded, at most (0: twice the workers).
    std::size_t in_flight = 0;
};

/// A snapshot of an executor's counters (stats()). Tasks and posts both
/// count; the figures are read one after another, not atomically together.
struct Stats {
    std::size_t queued = 0;     ///< submitted, not started
    std::size_t running = 0;    ///< started, not finished
    std::size_t completed = 0;  ///< finished with a value
    std::size_t failed = 0;     ///< finished with an exception (worker deaths, timeouts included)
    std::size_t cancelled = 0;  ///< cancelled before they started (or stopped by Shutdown::kill)
    std::size_t workers = 0;    ///< size()
};

}  // namespace crew
