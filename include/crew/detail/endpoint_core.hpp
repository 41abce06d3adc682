// crew/detail/endpoint_core.hpp — what every channel endpoint does the same
// way, whatever carries its bytes: the message framing and its limit, the
// error texts, errors that stick to one direction, and the message a timed
// receive left halfway.
//
// Used by detail::FdStream (crew::ipc::Pipe, crew::ipc::Socket) and, through
// detail::MemoryEndpointCore (crew/detail/memory_endpoint.hpp), by
// crew::ipc::SharedMemory and crew::ipc::MessageQueue. Each piece has one job
// and costs nothing per message beyond the check it makes: no allocation, no
// virtual call, no atomic.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <crew/errors.hpp>
#include <crew/detail/huge_pages.hpp>

namespace crew::detail {

// ---------------------------------------------------------------------------
// The wire format
// ---------------------------------------------------------------------------

/// Every crew channel frames a message the same way: an 8-byte little-endian
/// length, then that many payload bytes.
struct LengthHeader {
    static constexpr std::size_t size = 8;

    template <class Byte>
    static void encode(std::uint64_t length, Byte* header) noexcept {
        for (std::size_t i = 0; i < size; ++i) header[i] = static_cast<Byte>(length >> (8 * i));
    }

    template <class Byte>
    [[nodiscard]] static std::uint64_t decode(const Byte* header) noexcept {
        std::uint64_t length = 0;
        for (std::size_t i = 0; i < size; ++i) length |= std::uint64_t{static_cast<unsigned char>(header[i])} << (8 * i);
        return length;
    }
};

// ---------------------------------------------------------------------------
// Error texts: one function per report, the channel's words filled in
// ---------------------------------------------------------------------------

/// How a channel names itself in its error messages.
struct ChannelWords {
    std::string_view name;     ///< "shm", "mq", "pipe", "socket"
    std::string_view article;  ///< "a" or "an", as in "an mq channel"
    std::string_view carrier;  ///< what a bad length shows to be corrupt: "stream" or "queue"
};

/// How the peer ended, as far as the channel can tell.
enum class PeerEnd : unsigned char {
    closed,  ///< the peer set its side's closed flag (SharedMemory, MessageQueue)
    gone,    ///< the peer's process exited without closing (SharedMemory, MessageQueue)
    eof,     ///< the byte stream ended: closed or exited, a pipe or socket cannot tell which
};

/// An endpoint that was closed or moved from was used.
inline std::string closed_endpoint_text(std::string_view name, const char* action) {
    return std::string("crew: cannot ") + action + " on a closed " + std::string(name) +
           " endpoint; it was closed or moved from, use the endpoint that owns the channel";
}

/// A send of more than the endpoint's limit.
inline std::string too_long_to_send_text(const ChannelWords& words, std::size_t size, std::size_t limit) {
    return "crew: cannot send a message of " + std::to_string(size) + " bytes on " + std::string(words.article) +
           " " + std::string(words.name) + " channel whose limit is " + std::to_string(limit) +
           " bytes; raise Options::max_message_size (or the max_message given to pair() and import_handle()) on "
           "both ends, or send less at a time";
}

/// A received length of more than the endpoint's limit.
inline std::string length_over_limit_text(const ChannelWords& words, std::uint64_t length, std::size_t limit) {
    return "crew: " + std::string(words.article) + " " + std::string(words.name) + " message claims " +
           std::to_string(length) + " bytes, more than this channel's limit of " + std::to_string(limit) +
           " bytes; the " + std::string(words.carrier) +
           " is corrupt, or the peer sends larger messages: raise Options::max_message_size (the max_message of "
           "pair()/import_handle())";
}

/// A send found the peer ended.
inline std::string peer_ended_on_send_text(std::string_view name, PeerEnd end) {
    std::string text = "crew: cannot send on the " + std::string(name) + " channel: ";
    switch (end) {
        case PeerEnd::closed: text += "the peer closed its end (the other process closed the channel)"; break;
        case PeerEnd::eof: text += "the peer closed its end (the other process exited or closed the channel)"; break;
        case PeerEnd::gone:
            text += "the peer process is gone (it exited or was killed without closing the channel)";
            break;
    }
    return text + "; no further message can be sent on it";
}

/// A receive found the peer ended between two messages.
inline std::string peer_ended_text(std::string_view name, PeerEnd end) {
    std::string text;
    switch (end) {
        case PeerEnd::closed:
            text = "crew: the peer closed the " + std::string(name) + " channel (the other process closed its end)";
            break;
        case PeerEnd::eof:
            text = "crew: the peer closed the " + std::string(name) +
                   " channel (the other process exited or closed its end)";
            break;
        case PeerEnd::gone:
            text = "crew: the peer process is gone (it exited or was killed without closing the " +
                   std::string(name) + " channel)";
            break;
    }
    return text + "; no more messages will arrive";
}

/// A receive found the peer ended after `got` bytes of a message's header
/// (`length` unknown: `in_body` false) or of its payload of `length` bytes.
inline std::string middle_of_message_text(std::string_view name, PeerEnd end, std::size_t got, bool in_body,
                                          std::size_t length) {
    const char* who = end == PeerEnd::closed ? "crew: the peer closed the channel"
                      : end == PeerEnd::gone ? "crew: the peer process is gone"
                                             : "crew: peer closed the channel";
    return std::string(who) + " in the middle of a message (" + std::string(name) + ": " + std::to_string(got) +
           " of " + (in_body ? std::to_string(length) + " bytes" : std::string("8 header bytes")) +
           " arrived); the other process probably died while sending";
}

// ---------------------------------------------------------------------------
// State every endpoint keeps
// ---------------------------------------------------------------------------

/// Which half of an endpoint a call or an error belongs to.
enum class Direction : unsigned char { send, receive };

/// The first error of each direction, repeated by every later call in that
/// direction: after a framing error or a lost peer the position in the stream
/// is unknown, and a receive must not decode garbage (nor a send write a
/// message the peer would misread).
class StickyErrors {
public:
    /// Throw the send side's error, if it has one.
    void check_send() const {
        if (!send_.empty()) throw ChannelError(send_);
    }
    /// Throw the receive side's error, if it has one.
    void check_receive() const {
        if (!receive_.empty()) throw ChannelError(receive_);
    }

    /// Record `message` for `direction` and throw it.
    [[noreturn]] void fail(Direction direction, std::string message) {
        (direction == Direction::send ? send_ : receive_) = message;
        throw ChannelError(std::move(message));
    }
    [[noreturn]] void fail_send(std::string message) { fail(Direction::send, std::move(message)); }
    [[noreturn]] void fail_receive(std::string message) { fail(Direction::receive, std::move(message)); }

    void swap(StickyErrors& other) noexcept {
        send_.swap(other.send_);
        receive_.swap(other.receive_);
    }
    void clear() noexcept {
        send_.clear();
        receive_.clear();
    }

private:
    std::string send_;     // non-empty: the write side is unusable
    std::string receive_;  // non-empty: the read side is unusable
};

/// The largest payload an endpoint sends or accepts, and the two checks of it.
class MessageLimit {
public:
    MessageLimit() noexcept = default;
    explicit MessageLimit(std::size_t max_message) noexcept : max_(max_message) {}

    [[nodiscard]] std::size_t value() const noexcept { return max_; }

    /// Before a send: a plain ChannelError (not sticky: nothing was sent).
    void check_send(const ChannelWords& words, std::size_t size) const {
        if (size > max_) throw ChannelError(too_long_to_send_text(words, size, max_));
    }

    /// A length just received, checked before anything is allocated: a
    /// corrupt or hostile header must not make us reserve terabytes.
    void check_received(const ChannelWords& words, std::uint64_t length, StickyErrors& errors) const {
        if (length > max_) errors.fail_receive(length_over_limit_text(words, length, max_));
    }

private:
    std::size_t max_ = 0;
};

/// The message being received: its header so far, then its length and, while
/// no call is running (a timed receive gave up), the payload read so far.
struct PartialMessage {
    std::array<std::byte, LengthHeader::size> header{};
    std::size_t header_got = 0;     // header bytes so far (MessageQueue takes the header whole)
    bool in_body = false;           // header complete and checked
    std::size_t length = 0;         // payload length, valid when in_body
    std::vector<std::byte> parked;  // payload so far while no call is running

    /// No byte of a message has arrived: a peer that ends now ended cleanly.
    [[nodiscard]] bool at_boundary() const noexcept { return !in_body && header_got == 0; }

    /// Where the next header bytes go, and how many are missing.
    [[nodiscard]] std::byte* header_end() noexcept { return header.data() + header_got; }
    [[nodiscard]] std::size_t header_missing() const noexcept { return LengthHeader::size - header_got; }
    /// Count `n` more header bytes; true once the header is complete.
    bool add_header_bytes(std::size_t n) noexcept {
        header_got += n;
        return header_got == LengthHeader::size;
    }
    [[nodiscard]] std::uint64_t header_length() const noexcept { return LengthHeader::decode(header.data()); }

    /// The length is known and checked: receive the payload into `out`.
    /// reserve() takes address space only; pages are touched as data arrives,
    /// so a header that lies (within the limit) costs no memory.
    void start_body(std::size_t payload_length, std::vector<std::byte>& out) {
        in_body = true;
        length = payload_length;
        out.clear();
        out.reserve(length);
        advise_huge_pages(out.data(), out.capacity());
    }

    /// At the start of a receive: continue the message a timed-out call began.
    void resume(std::vector<std::byte>& out) {
        if (!in_body) return;
        out = std::move(parked);
        parked = std::vector<std::byte>{};
    }

    /// A timed receive gives up: keep `out` (the payload so far) for the next
    /// call and leave the caller's vector empty.
    void park(std::vector<std::byte>& out) {
        parked = std::move(out);
        out.clear();
    }

    void reset() noexcept { *this = PartialMessage{}; }
};

}  // namespace crew::detail
