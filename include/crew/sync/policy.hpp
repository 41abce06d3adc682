// crew/sync/policy.hpp — what a synchronisation policy is.
//
// A Sync policy (crew::sync::Mutex, Semaphore, LockFree) chooses how an
// executor's task queue is guarded and how idle workers wait. It provides
// `queue<T>`: a bounded FIFO with
//   try_push(T&&) -> bool, try_pop(T&) -> bool    never block
//   push(T) -> bool, pop(T&) -> bool               block; false once closed
//   close()                                        wakes every blocked caller
// a `name` for reports. crew's policies also name `shared_signal`, their
// process-shared form: how a process sleeps until another changed memory they
// share (crew::ipc::SharedMemory's rings). Each policy's header checks it
// against the detail::shared_signal concept of crew/detail/shared_signal.hpp. A
// policy without one gets the lock-free form.
#pragma once

#include <concepts>
#include <cstddef>
#include <string_view>

namespace crew::sync {

template <class Q, class T>
concept task_queue = requires(Q& q, T item, T& out) {
    { q.try_push(static_cast<T&&>(item)) } -> std::same_as<bool>;
    { q.try_pop(out) } -> std::same_as<bool>;
    { q.push(static_cast<T&&>(item)) } -> std::same_as<bool>;
    { q.pop(out) } -> std::same_as<bool>;
    q.close();
    { q.capacity() } -> std::convertible_to<std::size_t>;
};

/// A synchronisation policy: names a bounded task queue of a given kind.
template <class S>
concept policy = requires {
    { S::name } -> std::convertible_to<std::string_view>;
} && task_queue<typename S::template queue<int*>, int*>;

}  // namespace crew::sync
