// crew/detail/shared_signal.hpp — what a Sync policy's process-shared form is
// (the shared_signal concept), and the lock-free one, FutexSignal.
//
// Kept apart from crew/detail/shm_signal.hpp, which holds the Mutex and
// Semaphore policies' forms: those need crew::ipc::Mutex, ConditionVariable
// and Semaphore, which a program on the default policy (a ThreadExecutor<>,
// a ProcessExecutor<>) should not have to compile.
#pragma once

#include <concepts>
#include <cstdint>
#include <string_view>

#include <crew/detail/event_count.hpp>

namespace crew::detail {

/// The process-shared form of a Sync policy: a wait_signal that lives in
/// memory several processes map (no pointers, no per-process state), names
/// the channel kind it makes (`channel_name`, the handle prefix a spawned
/// worker recognises) and a `tag` that keeps one kind's mapping from being
/// imported as another's.
template <class S>
concept shared_signal = wait_signal<S> && std::default_initializable<S> && requires {
    { S::channel_name } -> std::convertible_to<std::string_view>;
    { S::tag } -> std::convertible_to<std::uint64_t>;
};

/// sync::LockFree's form: a futex event count (no lock anywhere).
struct FutexSignal : EventCount {
    static constexpr std::string_view channel_name = "shm";
    static constexpr std::uint64_t tag = 1;
    FutexSignal() noexcept : EventCount(/*process_shared=*/true) {}
};

static_assert(shared_signal<FutexSignal>);

}  // namespace crew::detail
