// crew/detail/futex.hpp — sleeping on a 32-bit word, in one process or across
// processes that map the same memory.
//
// std::atomic::wait has no timeout and no process-shared form, so crew talks
// to the Linux futex directly. The `shared` flag selects the non-private futex
// (works on MAP_SHARED memory between processes); private is cheaper.
#pragma once

#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdint>
#include <ctime>

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <crew/detail/deadline.hpp>

namespace crew::detail {

static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t),
              "futex needs a lock-free 32-bit atomic with no extra state");

/// Sleep while `word == expected`, at most until `deadline` (steady clock) when
/// one is given. Returns false when the deadline passed. Spurious wake-ups
/// happen: callers re-check their condition.
inline bool futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected, bool shared = false,
                       const std::chrono::steady_clock::time_point* deadline = nullptr) noexcept {
    int op = shared ? FUTEX_WAIT_BITSET : (FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG);
    // FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC time.
    timespec ts{};
    timespec* tsp = nullptr;
    if (deadline != nullptr) {
        ts = to_timespec(*deadline);
        tsp = &ts;
    }
    long r = ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), op, expected, tsp, nullptr,
                       FUTEX_BITSET_MATCH_ANY);
    return !(r == -1 && errno == ETIMEDOUT);
}

/// Wake up to `count` sleepers on `word`.
inline void futex_wake(std::atomic<std::uint32_t>& word, int count = INT_MAX, bool shared = false) noexcept {
    int op = shared ? FUTEX_WAKE : (FUTEX_WAKE | FUTEX_PRIVATE_FLAG);
    ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), op, count, nullptr, nullptr, 0);
}

/// A short pause for spin loops: tells the CPU we are spinning.
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield" ::: "memory");
#endif
}

}  // namespace crew::detail
