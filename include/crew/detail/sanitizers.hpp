// crew/detail/sanitizers.hpp — the one place that detects sanitizer builds.
//
// GCC defines __SANITIZE_THREAD__ / __SANITIZE_ADDRESS__; Clang answers
// __has_feature(...). Code that must behave differently under a sanitizer
// (TSan does not model fences, nor intercept pthread_mutex_clocklock) tests
// the constants below instead of repeating the macro dance.
#pragma once

#if defined(__SANITIZE_THREAD__)
#define CREW_DETAIL_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CREW_DETAIL_TSAN 1
#endif
#endif

#if defined(__SANITIZE_ADDRESS__)
#define CREW_DETAIL_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CREW_DETAIL_ASAN 1
#endif
#endif

namespace crew::detail {

/// Built with ThreadSanitizer.
#if defined(CREW_DETAIL_TSAN)
inline constexpr bool under_tsan = true;
#else
inline constexpr bool under_tsan = false;
#endif

/// Built with AddressSanitizer.
#if defined(CREW_DETAIL_ASAN)
inline constexpr bool under_asan = true;
#else
inline constexpr bool under_asan = false;
#endif

}  // namespace crew::detail
