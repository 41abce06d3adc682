// crew/ipc/channel.hpp — what every IPC channel offers, and typed send/receive
// on top of it.
//
// A channel (crew::ipc::Pipe, Socket, MessageQueue, SharedMemory) connects two
// processes with a pair of endpoints: create the pair in the parent, hand the
// child its end (by fork, or by export_handle() text across exec), then each
// side sends and receives whole messages — bytes, or any type crew::Codec can
// encode:
//
//     auto [parent, child] = crew::ipc::Pipe::pair();
//     parent.send(42);                          // in one process
//     int n = child.receive<int>();             // in the other
//
// Use this header to write code generic over channels (the process executor
// does); a user picking one channel includes its header instead. Typed calls
// cost one encode (one allocation plus a copy into it) or one decode on top of
// the channel's own transfer.
#pragma once

#include <chrono>
#include <concepts>
#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <crew/codec.hpp>
#include <crew/errors.hpp>

namespace crew::ipc {

/// One end of a bidirectional, message-framed, reliable, ordered connection
/// between two processes.
///
/// - `send_bytes(bytes)`: sends one whole message; blocks while the peer is
///   slow; crew::ChannelError if the peer is gone.
/// - `receive_bytes(out)`: blocks until a whole message arrived, `out` is
///   resized to it; crew::ChannelError on EOF, malformed framing, or a length
///   over the endpoint's maximum (checked before anything is allocated).
/// - `receive_bytes_until(out, deadline)`: false when the deadline passed with
///   no complete message; a message read in part is kept inside the endpoint
///   and the next receive continues it.
/// - `readable_fd()`: an fd that polls readable when a message (or EOF) may be
///   waiting, or -1 if the channel has none.
/// - `close()`: idempotent.
/// - `export_handle()`: makes the endpoint survive exec() and describes it as
///   text for the channel's `Endpoint::import_handle()`.
template <class E>
concept endpoint = std::movable<E> && requires(E& e, const E& ce, std::span<const std::byte> bytes,
                                               std::vector<std::byte>& out,
                                               std::chrono::steady_clock::time_point deadline) {
    e.send_bytes(bytes);
    e.receive_bytes(out);
    { e.receive_bytes_until(out, deadline) } -> std::same_as<bool>;
    { ce.readable_fd() } -> std::same_as<int>;
    e.close();
    { e.export_handle() } -> std::convertible_to<std::string>;
};

/// A way to connect two processes: `C::pair(max_message)` makes the two
/// endpoints (first: the parent's, second: the child's),
/// `C::Endpoint::import_handle(text, max_message)` rebuilds an exported
/// endpoint in an exec'd child, `C::name` names the channel ("pipe", ...).
template <class C>
concept channel = endpoint<typename C::Endpoint> && requires(std::size_t max_message) {
    { C::pair(max_message) } -> std::same_as<std::pair<typename C::Endpoint, typename C::Endpoint>>;
    { C::Endpoint::import_handle(std::string_view{}, max_message) } -> std::same_as<typename C::Endpoint>;
    { C::name } -> std::convertible_to<std::string_view>;
};

// T is deliberately not constrained with crew::encodable: an unencodable T
// then fails inside crew::encode with the codec's message naming the type,
// rather than as an unreadable "no matching function".

/// Encode `value` with crew::Codec and send it as one message.
template <endpoint E, class T>
void send(E& end, const T& value) {
    const std::vector<std::byte> bytes = crew::encode(value);
    end.send_bytes(std::span<const std::byte>(bytes));
}

/// Receive one message and decode it as `T`; crew::CodecError if the bytes
/// are not a `T`.
template <class T, endpoint E>
T receive(E& end) {
    std::vector<std::byte> bytes;
    end.receive_bytes(bytes);
    return crew::decode<T>(std::span<const std::byte>(bytes));
}

/// Base for channel endpoints: gives `Derived` the members
/// `end.send(value)` and `end.receive<T>()`, which call the free functions.
template <class Derived>
class TypedEndpoint {
public:
    /// Same as crew::ipc::send(*this, value).
    template <class T>
    void send(const T& value) {
        ipc::send(static_cast<Derived&>(*this), value);
    }

    /// Same as crew::ipc::receive<T>(*this).
    template <class T>
    T receive() {
        return ipc::receive<T>(static_cast<Derived&>(*this));
    }

protected:
    // Only a base: not to be used or destroyed on its own.
    TypedEndpoint() = default;
    ~TypedEndpoint() = default;
    TypedEndpoint(const TypedEndpoint&) = default;
    TypedEndpoint(TypedEndpoint&&) noexcept = default;
    TypedEndpoint& operator=(const TypedEndpoint&) = default;
    TypedEndpoint& operator=(TypedEndpoint&&) noexcept = default;
};

/// The channel ProcessExecutor<Channel, Sync> really uses. A channel whose
/// shared structures crew guards itself (SharedMemory's rings) offers
/// `with_sync<Sync>`, its form for that policy; channels the kernel or Boost
/// synchronises (Pipe, Socket, MessageQueue), and policies with no process-
/// shared form, use the channel as it is.
template <class Channel, class Sync>
struct with_sync {
    using type = Channel;
};
template <class Channel, class Sync>
    requires requires { typename Sync::shared_signal; typename Channel::template with_sync<Sync>; }
struct with_sync<Channel, Sync> {
    using type = typename Channel::template with_sync<Sync>;
};
template <class Channel, class Sync>
using with_sync_t = typename with_sync<Channel, Sync>::type;

}  // namespace crew::ipc
