// crew/detail/spin.hpp — the one place that decides how a waiting thread spins
// before it sleeps.
//
// Why spin at all: on the machines crew targets a sleeping thread woken from
// another CPU costs tens of microseconds (futex wake + schedule; ANCHORS.md
// and docs/benchmarks.md have the figures), while a task hand-off
// between two awake threads costs well under a microsecond. A short spin turns
// the common "result arrives a few microseconds later" case into no sleep.
// Why bounded: an idle executor must not burn a core. Why yield after a while:
// on two cores a spinning worker would otherwise keep the producer it waits
// for off the CPU.
#pragma once

#include <chrono>
#include <thread>

#include <sched.h>

#include <crew/detail/futex.hpp>

namespace crew::detail {

/// How long a waiter polls before it goes to sleep: about the cost of one
/// cross-CPU wake-up on the target VMs, so a wait that
/// would have been cheaper than sleeping never sleeps. Not yet tuned by a
/// benchmark of its own (see docs/benchmarks.md).
inline constexpr std::chrono::microseconds spin_budget{50};

/// How many polls a wait that involves another process (a channel, a
/// process task's future) spends on CPU pauses before it starts yielding.
/// Pausing pays when the thread it waits for runs on another CPU: a hand-off
/// is caught within a few hundred nanoseconds, with no syscall. With two
/// CPUs or fewer (this process's affinity), such a wait usually involves
/// three runnable threads (a submitter, a dispatcher and a worker process),
/// and every pause keeps the one being waited for off the CPU: there it
/// yields from its first miss. Measured on 2 vCPUs (docs/benchmarks.md,
/// session 7): a ProcessExecutor round trip took 4.3-4.7 us with 64 pauses
/// and 2.5-2.6 us with none. Waits on a thread of this process keep their
/// pauses (pauses_for_local_handoff): with none, a ThreadExecutor round trip
/// went from 0.5 to 0.7-1.9 us.
inline int pauses_before_yield() noexcept {
    static const int pauses = [] {
        cpu_set_t set;
        CPU_ZERO(&set);
        const int cpus = ::sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
        return cpus > 2 ? 64 : 0;
    }();
    return pauses;
}

/// Pauses for a wait on a thread of this process that is running already
/// (a ThreadExecutor worker, a queue's consumer): the hand-off comes within
/// a few hundred nanoseconds, and a yield would cost more than it saves.
inline constexpr int pauses_for_local_handoff = 64;

/// Polls `ready()` for up to `budget`, first `pauses` times with CPU pauses,
/// then yielding the CPU between polls. Returns true as soon as `ready()`
/// does.
template <class Ready>
bool spin_until(Ready&& ready, std::chrono::nanoseconds budget = spin_budget,
                int pauses = pauses_for_local_handoff) {
    for (int i = pauses; i > 0; --i) {
        if (ready()) return true;
        cpu_relax();
    }
    const auto until = std::chrono::steady_clock::now() + budget;
    do {
        for (int i = 0; i < 16; ++i) {
            if (ready()) return true;
            std::this_thread::yield();
        }
    } while (std::chrono::steady_clock::now() < until);
    return ready();
}

}  // namespace crew::detail
