// crew/detail/deadline.hpp — deadlines, in one place: "now + d" that
// saturates instead of overflowing (so wait_for(hours::max()) waits for ever
// rather than not at all), a deadline on any clock as a steady_clock one, and
// a steady deadline as the timespec the kernel takes.
#pragma once

#include <chrono>
#include <ctime>
#include <optional>
#include <type_traits>

namespace crew::detail {

/// steady_clock::now() + d, clamped to time_point::max() (and to now() for a
/// negative d). Any duration type: its conversion is checked before it is made.
template <class Rep, class Period>
std::chrono::steady_clock::time_point deadline_after(const std::chrono::duration<Rep, Period>& d) {
    using Clock = std::chrono::steady_clock;
    const auto now = Clock::now();
    if (d <= d.zero()) return now;
    // Compare in long double seconds: no overflow whatever Rep and Period are.
    using Seconds = std::chrono::duration<long double>;
    const Seconds left = std::chrono::duration_cast<Seconds>(Clock::time_point::max() - now);
    if (std::chrono::duration_cast<Seconds>(d) >= left) return Clock::time_point::max();
    return now + std::chrono::ceil<Clock::duration>(d);
}

/// Further away than this (about 95 years) means "never": a caller then
/// blocks without a deadline instead of computing one that could overflow.
inline constexpr double never_seconds = 3.0e9;

/// `deadline` on any clock as a steady_clock deadline; nullopt when it is so
/// far away that it means "never". The distance is measured in double seconds
/// first, so time_point::max() or a coarse duration cannot overflow the
/// nanosecond arithmetic. A clock other than steady_clock can jump: callers
/// re-check it after a steady timeout, as std::timed_mutex does.
template <class Clock, class Duration>
std::optional<std::chrono::steady_clock::time_point> steady_deadline(
    const std::chrono::time_point<Clock, Duration>& deadline) {
    using namespace std::chrono;
    const auto now = Clock::now();
    const double remaining_s =
        duration<double>(deadline.time_since_epoch()).count() - duration<double>(now.time_since_epoch()).count();
    if (remaining_s <= 0) return steady_clock::now();
    if (remaining_s > never_seconds) return std::nullopt;
    if constexpr (std::is_same_v<Clock, steady_clock>) {
        return ceil<steady_clock::duration>(deadline);
    } else {
        return steady_clock::now() + ceil<steady_clock::duration>(deadline - now);
    }
}

/// now + `timeout` as a steady deadline; nullopt for "never" (see above).
template <class Rep, class Period>
std::optional<std::chrono::steady_clock::time_point> steady_deadline_after(
    const std::chrono::duration<Rep, Period>& timeout) {
    if (std::chrono::duration<double>(timeout).count() > never_seconds) return std::nullopt;
    return deadline_after(timeout);
}

/// A steady_clock time as the absolute CLOCK_MONOTONIC timespec that futex()
/// and pthread_mutex_clocklock() take (steady_clock is CLOCK_MONOTONIC on
/// Linux); also any other time since its clock's epoch. Negative clamps to 0.
inline timespec to_timespec(std::chrono::nanoseconds since_epoch) noexcept {
    if (since_epoch.count() < 0) since_epoch = std::chrono::nanoseconds(0);
    timespec ts{};
    ts.tv_sec = static_cast<time_t>(since_epoch.count() / 1'000'000'000);
    ts.tv_nsec = static_cast<long>(since_epoch.count() % 1'000'000'000);
    return ts;
}
inline timespec to_timespec(std::chrono::steady_clock::time_point t) noexcept {
    return to_timespec(std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()));
}

}  // namespace crew::detail
