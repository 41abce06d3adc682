// libFuzzer target: arbitrary bytes appear in a SharedMemory channel's ring
// where crew expects framed messages (8-byte little-endian length, then the
// payload), with a 64 KiB limit, and optionally the ring's indices are
// corrupt too. Every receive must deliver a whole message within the limit or
// throw crew::ChannelError (peer closed, oversized or truncated frame,
// inconsistent indices): never crash, hang, read out of bounds, or allocate
// more than the limit allows.
//
// Input: the first byte picks where the bytes go, the rest is the stream.
//   mode % 3 == 0: the ring as pair() leaves it (head = tail = 0);
//   mode % 3 == 1: the stream starts at a position taken from the next 8
//                  bytes (so it wraps around the ring's end, and the indices
//                  are large);
//   mode % 3 == 2: head and tail are the next 16 bytes, unchecked (corrupt
//                  indices; the stream is still copied in at head).
// The writer's side is then marked closed: EOF after the bytes.
//
//   clang++ -std=c++20 -fsanitize=fuzzer,address,undefined -Iinclude shm_framing_fuzz.cpp
#include <sys/mman.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include <crew/errors.hpp>
#include <crew/ipc/shared_memory.hpp>

namespace {

constexpr std::size_t limit = 64 << 10;

// The memfd of an endpoint: the number in its handle "shm:<fd>:<side>".
int fd_of(const std::string& handle) { return std::atoi(handle.c_str() + handle.find(':') + 1); }

std::uint64_t take_u64(const std::uint8_t*& data, std::size_t& size) {
    std::uint64_t v = 0;
    for (int i = 0; i < 8 && size > 0; ++i, ++data, --size) v |= std::uint64_t{*data} << (8 * i);
    return v;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using crew::detail::ShmBlock;
    using crew::detail::shm_block_bytes;
    if (size == 0) return 0;
    const unsigned mode = data[0] % 3;
    ++data;
    --size;
    std::uint64_t head = 0;
    std::uint64_t tail = 0;
    if (mode == 1) {
        head = take_u64(data, size);
    } else if (mode == 2) {
        head = take_u64(data, size);
        tail = take_u64(data, size);
    }
    if (size > crew::ipc::SharedMemory::ring_bytes) size = crew::ipc::SharedMemory::ring_bytes;
    if (mode != 2) tail = head + size;

    auto ends = crew::ipc::SharedMemory::pair(limit);
    // A second mapping of the writer's memfd, as another process would have.
    void* map = ::mmap(nullptr, shm_block_bytes, PROT_READ | PROT_WRITE, MAP_SHARED,
                       fd_of(ends.second.export_handle()), 0);
    if (map == MAP_FAILED) std::abort();
    auto* block = static_cast<ShmBlock*>(map);
    auto& ring = block->ring[1];  // written by side 1, read by ends.first
    ring.copy_in(head, reinterpret_cast<const std::byte*>(data), size, head);
    ring.head.value.store(head, std::memory_order_relaxed);
    ring.tail.value.store(tail, std::memory_order_release);
    block->side[1].closed.store(1, std::memory_order_seq_cst);  // EOF after the bytes

    std::vector<std::byte> out;
    for (std::size_t messages = 0;; ++messages) {
        try {
            ends.first.receive_bytes(out);
        } catch (const crew::ChannelError&) {
            break;
        }
        // Each message takes at least its 8-byte header from the stream
        // (with corrupt indices the stream is [head, tail), at most a ring).
        const std::uint64_t stream = mode == 2 ? tail - head : size;
        if (out.size() > limit || messages >= crew::ipc::SharedMemory::ring_bytes / 8 || messages >= stream / 8)
            std::abort();
    }
    // Once failed, the endpoint keeps failing (the stream position is lost).
    try {
        ends.first.receive_bytes(out);
        std::abort();
    } catch (const crew::ChannelError&) {
    }
    ::munmap(map, shm_block_bytes);
    return 0;
}
