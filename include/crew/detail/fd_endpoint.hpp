// crew/detail/fd_endpoint.hpp — the endpoint of a channel over byte-stream
// file descriptors: crew::ipc::Pipe::Endpoint and crew::ipc::Socket::Endpoint
// are this template, plus what differs between them (the export text, the
// checks of an imported fd, pair()).
//
// Every call forwards to one detail::FdStream (crew/detail/fd_stream.hpp),
// which frames the messages; inline, so a forward costs nothing.
#pragma once

#include <chrono>
#include <span>
#include <utility>
#include <vector>

#include <crew/detail/fd_stream.hpp>
#include <crew/ipc/channel.hpp>

namespace crew::detail {

/// Base of `Derived` (Pipe::Endpoint, Socket::Endpoint): the crew::ipc::endpoint
/// members over an FdStream, and typed send/receive (ipc::TypedEndpoint).
/// Move-only; the stream closes its fds when destroyed.
template <class Derived>
class FdEndpoint : public ipc::TypedEndpoint<Derived> {
public:
    /// Send one whole message; blocks while the peer is slow.
    /// crew::ChannelError if the peer closed its end or the message is
    /// longer than max_message.
    void send_bytes(std::span<const std::byte> bytes) { stream_.send(bytes); }

    /// Receive one whole message into `out`; blocks. crew::ChannelError
    /// when the peer closed its end or the framing is broken.
    void receive_bytes(std::vector<std::byte>& out) { stream_.receive(out); }

    /// As receive_bytes(), but returns false once `deadline` passed with no
    /// complete message (`out` is then left empty); a part already read
    /// stays in the endpoint and the next receive continues it. A deadline
    /// in the past still takes a message that is already waiting.
    bool receive_bytes_until(std::vector<std::byte>& out, std::chrono::steady_clock::time_point deadline) {
        return stream_.receive_until(out, deadline);
    }

    /// The fd messages arrive on (a pipe's read end, the socket): polls
    /// readable when a message or EOF may be waiting; -1 once closed.
    [[nodiscard]] int readable_fd() const noexcept { return stream_.read_fd(); }

    /// Close the fds; idempotent. A plain close, not shutdown(): a forked
    /// child may still hold the same socket or pipe and must keep it.
    void close() noexcept { stream_.close(); }

protected:
    FdEndpoint() noexcept = default;
    explicit FdEndpoint(FdStream stream) noexcept : stream_(std::move(stream)) {}

    FdStream stream_;
};

}  // namespace crew::detail
