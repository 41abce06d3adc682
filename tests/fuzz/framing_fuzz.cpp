// libFuzzer target: arbitrary bytes arrive on a Pipe and on a Socket where
// crew expects framed messages (8-byte length, then the payload), with a
// 64 KiB limit. Every receive must deliver a whole message or throw
// crew::ChannelError (EOF, oversized or truncated frame): never crash, hang,
// read out of bounds, or allocate more than the limit allows.
//
//   clang++ -std=c++20 -fsanitize=fuzzer,address,undefined -Iinclude framing_fuzz.cpp
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include <crew/errors.hpp>
#include <crew/ipc/pipe.hpp>
#include <crew/ipc/socket.hpp>

namespace {

constexpr std::size_t limit = 64 << 10;

// The fd through which the far end writes: the last number in its handle
// ("pipe:<read>,<write>" or "socket:<fd>").
int write_fd_of(const std::string& handle) {
    const auto at = handle.find_last_of(":,");
    return std::atoi(handle.c_str() + at + 1);
}

template <class Channel>
void feed(const std::uint8_t* data, std::size_t size) {
    auto ends = Channel::pair(limit);
    const int fd = write_fd_of(ends.second.export_handle());
    // The fuzzer's inputs are small (at most a few KiB): they fit the kernel
    // buffer, so this write cannot block.
    for (std::size_t off = 0; off < size;) {
        const ssize_t n = ::write(fd, data + off, size - off);
        if (n <= 0) std::abort();
        off += static_cast<std::size_t>(n);
    }
    ends.second.close();  // EOF after the bytes
    std::vector<std::byte> out;
    for (int messages = 0;; ++messages) {
        try {
            ends.first.receive_bytes(out);
        } catch (const crew::ChannelError&) {
            return;
        }
        if (out.size() > limit || messages > static_cast<int>(size)) std::abort();
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    feed<crew::ipc::Pipe>(data, size);
    feed<crew::ipc::Socket>(data, size);
    return 0;
}
