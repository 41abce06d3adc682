// crew/detail/huge_pages.hpp — ask the kernel to back a large buffer with
// transparent huge pages before it is first written.
//
// Why: a large argument or result lands in fresh memory on its way (the
// receive buffer, the encode buffer, the decoded std::vector). Each 4 KiB
// page of it costs a page fault, a zero-fill and a memory-cgroup charge; on
// the VMs crew is measured on that is about as much as copying the page
// three times, and it is most of a cold 16 MiB echo. A 2 MiB page is one
// fault for 512 of them (16 MiB echo after idle: 44 -> 34 ms; 64 MiB: 270 ->
// 121 ms, with glibc's own hugetlb tunable standing in for this hint).
//
// Cost: one madvise() on buffers of 4 MiB or more, nothing below. It is a
// hint: where transparent huge pages are off (or "never"), the kernel
// ignores it and nothing changes; the contents are never touched.
#pragma once

#include <cstddef>
#include <cstdint>

#include <sys/mman.h>

namespace crew::detail {

/// Buffers this large or larger get the hint.
inline constexpr std::size_t huge_page_hint_bytes = std::size_t{4} << 20;

/// Mark the whole 2 MiB pages inside [p, p + n) for transparent huge pages.
/// Call it after allocating and before the first write: a region already
/// faulted in with small pages stays as it is.
inline void advise_huge_pages(void* p, std::size_t n) noexcept {
    constexpr std::uintptr_t huge = std::uintptr_t{2} << 20;
    if (p == nullptr || n < huge_page_hint_bytes) return;
    const auto at = reinterpret_cast<std::uintptr_t>(p);
    const std::uintptr_t begin = (at + huge - 1) & ~(huge - 1);
    const std::uintptr_t end = (at + n) & ~(huge - 1);
    if (end > begin) (void)::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
}

}  // namespace crew::detail
