// crew/detail/byte_ring.hpp — the single-producer/single-consumer byte ring
// crew::ipc::SharedMemory streams through, and the cache-line-sized pieces
// (an index, a wake-up signal) that crew::ipc::MessageQueue's control block
// reuses.
//
// One writer process, one reader process, a fixed power-of-two array of
// bytes. `tail` counts every byte ever written, `head` every byte ever read;
// both only grow (64 bits: they do not wrap in practice), and a position maps
// to `bytes[pos % capacity]`.
//
// Invariants:
//   * head <= tail <= head + capacity. Bytes [head, tail) hold data the reader
//     has not taken; [tail, head + capacity) are free for the writer.
//   * Only the writer stores `tail`, only the reader stores `head`; each reads
//     its own index relaxed (nobody else changes it) and the other's with
//     acquire.
//   * The writer copies bytes into the free part, then publishes them with a
//     release store of `tail`: a reader that loads that tail with acquire sees
//     the bytes. The reader copies bytes out, then frees them with a release
//     store of `head`: a writer that loads that head with acquire is ordered
//     after the reader's copy, so it never overwrites bytes still being read.
//   * Sleeping goes through two process-shared signals: the reader waits
//     on `data` for "tail moved", the writer on `space` for "head moved". The
//     Sync policy picks the signal (crew/detail/shm_signal.hpp): a futex event
//     count (a notify is a fence and a load when nobody sleeps, a futex wake
//     only when someone does), a robust mutex + condition variable, or a
//     counting semaphore; none loses a wake-up.
//   * Indices read from the peer are checked against the invariant before use
//     (by the channel): a peer that scribbles on the mapping gives an error,
//     not a wild copy. copy_in() and copy_out() take the checked bound and
//     assert (debug builds only) that the caller stays inside it.
//
// This is the classic Lamport ring for bytes (as in rigtorp::SPSCQueue, with
// stream positions instead of slots), plus the signals for sleeping.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include <crew/detail/assert.hpp>
#include <crew/detail/shared_signal.hpp>

namespace crew::detail {

/// A cache line: what the hot fields below are aligned to. Fixed at 64 (not
/// std::hardware_destructive_interference_size, which may differ between the
/// compilers of two processes sharing the mapping): the layout is part of the
/// shared memory's format.
inline constexpr std::size_t ring_line_bytes = 64;

/// An index on its own cache line, so the writer's and the reader's stores do
/// not invalidate each other's line on every update.
struct alignas(ring_line_bytes) RingIndex {
    std::atomic<std::uint64_t> value{0};
};

/// A process-shared wake-up signal (crew/detail/shm_signal.hpp: a futex event
/// count, a monitor or a semaphore) on cache lines of its own, so notifying
/// one side does not touch the line the other side's index lives on.
template <class Signal>
struct alignas(ring_line_bytes) CacheLineSignal {
    Signal signal;
};

template <std::size_t Capacity, class Signal = FutexSignal>
struct ByteRing {
    static_assert(Capacity >= 4096 && (Capacity & (Capacity - 1)) == 0, "the ring's size must be a power of two");
    static constexpr std::size_t capacity = Capacity;

    RingIndex head;                 // next byte to read; stored by the reader
    RingIndex tail;                 // next byte to write; stored by the writer
    CacheLineSignal<Signal> data;   // the reader sleeps here, the writer notifies
    CacheLineSignal<Signal> space;  // the writer sleeps here, the reader notifies
    alignas(ring_line_bytes) std::byte bytes[Capacity];

    /// Copy `n` bytes from `src` to ring position `pos` (wrapping).
    /// `read_pos` is `head` as the writer last loaded and checked it: the
    /// bytes must fit in the free part [pos, read_pos + Capacity).
    void copy_in(std::uint64_t pos, const std::byte* src, std::size_t n,
                 [[maybe_unused]] std::uint64_t read_pos) noexcept {
        CREW_DEBUG_ASSERT(pos - read_pos <= Capacity && n <= Capacity - (pos - read_pos),
                          "ByteRing::copy_in: more bytes than the ring has free");
        const std::size_t at = static_cast<std::size_t>(pos & (Capacity - 1));
        const std::size_t first = std::min(n, Capacity - at);
        std::memcpy(bytes + at, src, first);
        if (first < n) std::memcpy(bytes, src + first, n - first);
    }

    /// Copy `n` bytes at ring position `pos` (wrapping) to `dst`.
    /// `write_pos` is `tail` as the reader last loaded and checked it: the
    /// bytes must lie in the unread part [pos, write_pos).
    void copy_out(std::uint64_t pos, std::byte* dst, std::size_t n,
                  [[maybe_unused]] std::uint64_t write_pos) const noexcept {
        CREW_DEBUG_ASSERT(write_pos - pos <= Capacity && n <= write_pos - pos,
                          "ByteRing::copy_out: more bytes than the ring holds");
        const std::size_t at = static_cast<std::size_t>(pos & (Capacity - 1));
        const std::size_t first = std::min(n, Capacity - at);
        std::memcpy(dst, bytes + at, first);
        if (first < n) std::memcpy(dst + first, bytes, n - first);
    }

    /// As copy_out(), appending to `out` (no zeroing first: the vector's
    /// pages are written once, by this copy).
    void append_out(std::uint64_t pos, std::vector<std::byte>& out, std::size_t n,
                    [[maybe_unused]] std::uint64_t write_pos) const {
        CREW_DEBUG_ASSERT(write_pos - pos <= Capacity && n <= write_pos - pos,
                          "ByteRing::append_out: more bytes than the ring holds");
        const std::size_t at = static_cast<std::size_t>(pos & (Capacity - 1));
        const std::size_t first = std::min(n, Capacity - at);
        out.insert(out.end(), bytes + at, bytes + at + first);
        if (first < n) out.insert(out.end(), bytes, bytes + (n - first));
    }
};

// The layout is the point of the struct: each index and each signal on lines
// of its own (no false sharing between the writer's and the reader's stores),
// then the bytes from a line boundary. As rigtorp::SPSCQueue, assert it.
static_assert(offsetof(ByteRing<4096>, head) == 0 && offsetof(ByteRing<4096>, tail) == ring_line_bytes &&
                  offsetof(ByteRing<4096>, data) == 2 * ring_line_bytes &&
                  offsetof(ByteRing<4096>, space) == 3 * ring_line_bytes &&
                  offsetof(ByteRing<4096>, bytes) == 4 * ring_line_bytes,
              "a lock-free ring is head, tail, data and space, each on a cache line of its own, then its bytes");
static_assert(sizeof(RingIndex) == ring_line_bytes && sizeof(CacheLineSignal<FutexSignal>) == ring_line_bytes,
              "an index and a futex signal each fill exactly one cache line");

}  // namespace crew::detail
