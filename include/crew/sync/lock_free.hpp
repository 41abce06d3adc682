// crew/sync/lock_free.hpp — crew::sync::LockFree, the default policy: a
// bounded CAS-based MPMC ring (crew::LockFreeQueue); idle workers spin
// briefly, then sleep on a futex. Between processes (ProcessExecutor<
// SharedMemory, LockFree>) the shared rings are lock-free and a blocked side
// sleeps on a process-shared futex.
//
// When: short tasks, many submitters; the fastest of the three here.
// Cost: one CAS per push and per pop, plus a fence to look for sleepers.
#pragma once

#include <string_view>

#include <crew/detail/shared_signal.hpp>
#include <crew/lock_free_queue.hpp>
#include <crew/sync/policy.hpp>

namespace crew::sync {

/// Sync policy: crew::LockFreeQueue (Vyukov's bounded MPMC ring).
struct LockFree {
    static constexpr std::string_view name = "lock-free";

    template <class T>
    using queue = LockFreeQueue<T>;

    /// Across processes (crew::ipc::SharedMemory's rings): a lock-free SPSC
    /// ring per direction, a blocked side asleep on a futex event count.
    using shared_signal = detail::FutexSignal;
};

static_assert(policy<LockFree> && detail::shared_signal<LockFree::shared_signal>);

}  // namespace crew::sync
