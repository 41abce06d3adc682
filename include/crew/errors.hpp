// crew/errors.hpp — the exception types crew throws.
//
// Every error derives from crew::Error (a std::runtime_error), so one
// `catch (const crew::Error&)` sees them all. Each message says what happened
// and what to do about it.
#pragma once

#include <stdexcept>
#include <string>
#include <utility>

namespace crew {

/// Base of every exception crew throws.
class Error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// get() on a future whose task was cancelled before it started.
class Cancelled : public Error {
public:
    Cancelled() : Error("crew: the task was cancelled before it started; it never ran") {}
    using Error::Error;
};

/// A process task ran past Options::task_timeout (its worker was killed).
/// crew's timed waits (wait_for, wait_until, wait) return false instead.
class Timeout : public Error {
public:
    using Error::Error;
};

/// The worker process running this task died (signal, exit, abort); only this
/// task fails, a new worker takes the old one's place.
class WorkerDied : public Error {
public:
    /// `exit_code` is the worker's exit status, or -1 when it was killed by
    /// `signal` (then > 0).
    WorkerDied(std::string what, int exit_code, int signal)
        : Error(std::move(what)), exit_code_(exit_code), signal_(signal) {}

    [[nodiscard]] int exit_code() const noexcept { return exit_code_; }
    [[nodiscard]] int signal() const noexcept { return signal_; }

private:
    int exit_code_;
    int signal_;
};

/// An exception thrown by a task inside a worker process, carried back by
/// dynamic type name and what().
class RemoteError : public Error {
public:
    RemoteError(std::string type_name, std::string message)
        : Error("crew: the task threw " + type_name + " in a worker process: " + message),
          type_name_(std::move(type_name)),
          message_(std::move(message)) {}

    /// The dynamic type of the exception thrown remotely (demangled).
    [[nodiscard]] const std::string& type_name() const noexcept { return type_name_; }
    /// The remote exception's what().
    [[nodiscard]] const std::string& message() const noexcept { return message_; }

private:
    std::string type_name_;
    std::string message_;
};

/// submit()/post()/map() on an executor that has been shut down.
class ExecutorShutdown : public Error {
public:
    ExecutorShutdown()
        : Error("crew: the executor has been shut down and takes no new work; "
                "submit before calling shutdown() or use a new executor") {}
    using Error::Error;
};

/// An IPC channel failed: peer gone, malformed framing, a message over the
/// size limit.
class ChannelError : public Error {
public:
    using Error::Error;
};

/// Bytes that do not decode as the requested type.
class CodecError : public Error {
public:
    using Error::Error;
};

/// An Options field the executor cannot honour (e.g. task_timeout on threads),
/// or an argument out of range.
class InvalidArgument : public Error {
public:
    using Error::Error;
};

}  // namespace crew
