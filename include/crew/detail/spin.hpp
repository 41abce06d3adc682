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

#include <crew/detail/futex.hpp>

namespace crew::detail {

/// How long a waiter polls before it goes to sleep: about the cost of one
/// cross-CPU wake-up on the target VMs, so a wait that
/// would have been cheaper than sleeping never sleeps. Not yet tuned by a
/// benchmark of its own (see docs/benchmarks.md).
inline constexpr std::chrono::microseconds spin_budget{50};

/// Polls `ready()` for up to `budget`, first with CPU pauses, then yielding the
/// CPU between polls. Returns true as soon as `ready()` does.
template <class Ready>
bool spin_until(Ready&& ready, std::chrono::nanoseconds budget = spin_budget) {
    for (int i = 0; i < 64; ++i) {
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
