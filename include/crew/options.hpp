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
#include <optional>

namespace crew {

/// How shutdown() treats work that was submitted but has not started.
enum class Shutdown {
    drain,           ///< run everything already submitted, then stop
    cancel_pending,  ///< cancel what has not started (get() throws Cancelled)
};

/// How a ProcessExecutor starts its worker processes (Python's
/// multiprocessing contexts). See docs/design.md for what each costs.
enum class Start {
    /// fork() the caller: the cheapest start (~0.1-1 ms), and the worker
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
    /// Processes only: run once in each new worker before its first task.
    /// (Threads: run once at the start of each worker thread.)
    void (*initializer)() = nullptr;
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
    /// Largest message (task, arguments, result) a channel accepts, in bytes;
    /// a longer length read from the wire is a crew::ChannelError.
    std::size_t max_message_size = std::size_t{1} << 32;
};

}  // namespace crew
