// crew/detail/deadline.hpp — "now + d" that saturates instead of overflowing,
// so wait_for(hours::max()) waits for ever rather than not at all.
#pragma once

#include <chrono>

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

}  // namespace crew::detail
