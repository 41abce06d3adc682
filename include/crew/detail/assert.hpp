// crew/detail/assert.hpp — CREW_DEBUG_ASSERT, a precondition check that costs
// nothing in release builds.
//
// For preconditions crew's own code must keep (pushing on a full ring, popping
// an empty one): a broken one is a bug in crew, not bad input, so release
// builds (NDEBUG) do not pay for the check. Bad input from users, peers or the
// environment is never checked with this: it gets a crew exception in every
// build.
#pragma once

#include <cstdio>
#include <cstdlib>

#if defined(NDEBUG)
// Unevaluated (sizeof), so nothing runs, but what the check names still
// counts as used: no unused-parameter warning in release builds.
#define CREW_DEBUG_ASSERT(condition, message) static_cast<void>(sizeof(static_cast<bool>(condition)))
#else
#define CREW_DEBUG_ASSERT(condition, message) \
    ((condition) ? static_cast<void>(0)       \
                 : ::crew::detail::debug_assert_failed(#condition, message, __FILE__, __LINE__))
#endif

namespace crew::detail {

/// Prints what broke and where, then aborts (async-signal-safe enough for a
/// forked child: no allocation).
[[noreturn]] inline void debug_assert_failed(const char* condition, const char* message, const char* file,
                                             int line) noexcept {
    std::fprintf(stderr, "crew: internal precondition failed: %s (%s) at %s:%d\n", message, condition, file, line);
    std::abort();
}

}  // namespace crew::detail
