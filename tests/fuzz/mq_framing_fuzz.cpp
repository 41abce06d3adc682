// libFuzzer target: arbitrary parts appear on a MessageQueue channel where
// crew expects a framed message cut into parts (the first part: an 8-byte
// little-endian length, then the payload's start; then parts of at most
// slot_bytes), with a 64 KiB limit. The parts go raw into the Boost queue the
// peer's end sends on, opened by the name its export_handle() gives. Every
// receive must deliver a whole message within the limit or throw
// crew::ChannelError (peer closed, short or oversized first part, a part
// longer than what is left of its message): never crash, hang, read out of
// bounds, or allocate more than the limit allows. The channel's names must
// be gone from /dev/shm after every input.
//
// Input: records of a 3-byte header, then the part's bytes:
//   byte 0: bits 0-1 the Boost priority of the part (crew sends 0; a higher
//           one overtakes parts already queued), bit 2 the length's bit 16;
//   bytes 1-2: the length's low 16 bits (little-endian); at most slot_bytes;
//   then up to that many bytes of the input, zero-filled when the input ends
//   first (so a large part costs three bytes). At most slot_count parts.
// The sending side is then closed: EOF after the parts.
//
//   clang++ -std=c++20 -fsanitize=fuzzer,address,undefined -Iinclude mq_framing_fuzz.cpp -pthread -lrt
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <boost/interprocess/ipc/message_queue.hpp>

#include <crew/errors.hpp>
#include <crew/ipc/message_queue.hpp>

namespace {

constexpr std::size_t limit = 64 << 10;
using crew::ipc::MessageQueue;

// The names of the input being run, so that a failure found by this target
// does not leave them in /dev/shm (a sanitizer report still may).
std::string current_base;

bool exists(const std::string& shm_name) { return ::access(("/dev/shm/" + shm_name).c_str(), F_OK) == 0; }

[[noreturn]] void fail() {
    for (const char* suffix : {"-0", "-1", "-c"}) ::unlink(("/dev/shm/" + current_base + suffix).c_str());
    std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    namespace bip = boost::interprocess;
    auto ends = MessageQueue::pair(limit);
    // "mq:<base>:1"; the queue side 1 sends on is "<base>-1".
    const std::string handle = ends.second.export_handle();
    const std::string base = handle.substr(3, handle.size() - 3 - 2);
    current_base = base;
    // Claimed here, the end speaks for its side: close() tells the peer.
    ends.second.bind_to_current_process();

    std::size_t parts = 0;
    std::size_t bytes = 0;
    {
        bip::message_queue raw(bip::open_only, (base + "-1").c_str());
        std::vector<std::uint8_t> part;
        while (size >= 3 && parts < MessageQueue::slot_count) {
            const unsigned priority = data[0] & 3u;
            const std::size_t length = std::min<std::size_t>(
                data[1] | std::size_t{data[2]} << 8 | std::size_t{(data[0] >> 2) & 1u} << 16, MessageQueue::slot_bytes);
            data += 3;
            size -= 3;
            const std::size_t given = std::min(length, size);
            // Never empty: Boost copies even 0 bytes with memcpy, from a
            // pointer that must not be null.
            part.assign(std::max<std::size_t>(length, 1), 0);
            if (given > 0) std::memcpy(part.data(), data, given);
            data += given;
            size -= given;
            if (!raw.try_send(part.data(), length, priority)) fail();  // room for slot_count parts
            ++parts;
            bytes += length;
        }
    }
    ends.second.close();  // EOF after the parts

    std::vector<std::byte> out;
    std::size_t received = 0;
    for (std::size_t messages = 0;; ++messages) {
        try {
            ends.first.receive_bytes(out);
        } catch (const crew::ChannelError&) {
            break;
        }
        // A message takes at least one part, and 8 header bytes of it.
        received += 8 + out.size();
        if (out.size() > limit || messages >= parts || received > bytes) fail();
    }
    // Once failed, the endpoint keeps failing (the position in the stream of
    // parts is lost).
    try {
        ends.first.receive_bytes(out);
        fail();
    } catch (const crew::ChannelError&) {
    }
    ends.first.close();
    if (exists(base + "-0") || exists(base + "-1") || exists(base + "-c")) fail();  // a name leaked
    return 0;
}
