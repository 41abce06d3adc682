// Replaces global new/delete to record the largest single allocation request,
// so a test can prove that an oversized length is refused before anything is
// allocated. Include it in exactly one file of a test program.
//
// Every non-aligned form of new and delete is replaced, so that they pair up
// (the sanitizers check); the aligned forms keep the runtime's own pair.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <new>

namespace crew_test {

/// The largest size passed to operator new since it was last set to 0.
inline std::atomic<std::size_t> largest_allocation{0};

inline void* counted_malloc(std::size_t n) noexcept {
    std::size_t seen = largest_allocation.load(std::memory_order_relaxed);
    while (n > seen && !largest_allocation.compare_exchange_weak(seen, n, std::memory_order_relaxed)) {
    }
    return std::malloc(n == 0 ? 1 : n);
}

}  // namespace crew_test

// These replacements pair malloc with free by design; GCC's -O2 inlining
// check cannot see that the pairs match.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
void* operator new(std::size_t n) {
    if (void* p = crew_test::counted_malloc(n)) return p;
    throw std::bad_alloc();
}
void* operator new[](std::size_t n) {
    if (void* p = crew_test::counted_malloc(n)) return p;
    throw std::bad_alloc();
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return crew_test::counted_malloc(n); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return crew_test::counted_malloc(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
