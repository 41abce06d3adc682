// crew/ipc/socket.hpp — crew::ipc::Socket, a channel over an anonymous UNIX
// domain stream socket pair.
//
// When to use: between a parent and a child it starts itself, when messages
// are large or many: with 4 MiB socket buffers a raw socketpair moves 1 MiB
// messages several times faster than 1 MiB pipes (docs/benchmarks.md), it
// needs one fd per end instead of two, and a send costs no signal-mask calls. No name in the file system, nothing to clean up after
// a crash. (Shared memory is faster still for very large messages.)
//
// What it costs: one socketpair() and two fds per pair; SO_SNDBUF/SO_RCVBUF
// are raised to 4 MiB (the kernel caps them at net.core.wmem_max/rmem_max).
// A send is one sendmsg(MSG_NOSIGNAL) with header and payload together (no
// copy in user space, and no SIGPIPE: a dead peer is a crew::ChannelError);
// a receive is two read()s for a small message (a timed receive reads with
// MSG_DONTWAIT and polls only when nothing is waiting). A 64-byte round trip
// is dominated by the wake-up of the sleeping peer.
//
// Guarantees: messages arrive whole, in order, exactly once; any size up to
// the pair's `max_message` (checked on both sides before anything is
// allocated). One thread may send while another receives on the same
// endpoint; concurrent senders (or receivers) need a lock.
#pragma once

#include <chrono>
#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <crew/detail/fd_endpoint.hpp>
#include <crew/detail/fd_stream.hpp>
#include <crew/errors.hpp>
#include <crew/ipc/channel.hpp>
#include <crew/options.hpp>

namespace crew::ipc {

/// A channel over socketpair(AF_UNIX, SOCK_STREAM). Models crew::ipc::channel.
class Socket {
public:
    static constexpr std::string_view name = "socket";

    /// One end: a connected stream socket. Move-only; closes its fd when
    /// destroyed. The fd is close-on-exec until export_handle().
    /// send_bytes(), receive_bytes(), receive_bytes_until(), readable_fd()
    /// (the socket) and close() (a plain close, not shutdown()) come from
    /// detail::FdEndpoint.
    class Endpoint : public detail::FdEndpoint<Endpoint> {
    public:
        /// An empty (closed) endpoint.
        Endpoint() noexcept = default;

        /// Clear FD_CLOEXEC so the socket survives exec(), and return
        /// "socket:<fd>" for import_handle(). Call it in the child between
        /// fork() and exec() (the flag belongs to the fd table of the calling
        /// process), so other children the parent starts meanwhile do not
        /// inherit this end.
        [[nodiscard]] std::string export_handle() {
            std::string text = std::string(name) + ":" + std::to_string(stream_.read_fd());
            stream_.make_inheritable();
            return text;
        }

        /// Rebuild an endpoint from export_handle()'s text in the exec'd
        /// process; takes ownership of the fd and makes it close-on-exec
        /// again. crew::ChannelError if the text is not a socket handle or its
        /// fd is not a UNIX stream socket.
        [[nodiscard]] static Endpoint import_handle(std::string_view text,
                                                    std::size_t max_message = Options{}.max_message_size) {
            int fd = -1;
            detail::FdStream::parse_handle(text, name, std::span<int>(&fd, 1));
            if (!is_unix_stream(fd))
                throw ChannelError("crew: \"" + std::string(text) +
                                   "\" is not a socket handle (its fd is not a UNIX stream socket); pass "
                                   "import_handle() exactly the text export_handle() returned");
            detail::FdStream::set_cloexec(fd, true, "socket");
            return Endpoint(detail::FdStream(fd, fd, detail::FdKind::socket, max_message));
        }

    private:
        friend class Socket;
        explicit Endpoint(detail::FdStream stream) noexcept : FdEndpoint(std::move(stream)) {}

        static bool is_unix_stream(int fd) noexcept {
            struct stat st {};
            if (::fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) return false;
            int value = 0;
            socklen_t len = sizeof value;
            if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &value, &len) != 0 || value != SOCK_STREAM) return false;
            len = sizeof value;
            return ::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &value, &len) == 0 && value == AF_UNIX;
        }
    };

    /// Make a connected pair: first is the parent's end, second the child's.
    /// Messages longer than `max_message` bytes are refused on both sides.
    [[nodiscard]] static std::pair<Endpoint, Endpoint> pair(std::size_t max_message = Options{}.max_message_size) {
        int fds[2];
        // Never on 0-2 (a program started with them closed): see detail/fd_util.hpp.
        if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0 || !detail::above_stdio(fds))
            detail::FdStream::fail_errno("cannot create a socket pair (socketpair)", errno);
        // Large buffers let a big message travel in few wake-ups (1 MiB
        // messages: several times faster with 4 MiB than with the default
        // buffers; docs/benchmarks.md).
        // The kernel caps the size at wmem_max/rmem_max; whatever it grants
        // works, so a refusal is not an error.
        constexpr int wanted = 4 << 20;
        for (int fd : fds) {
            (void)::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &wanted, sizeof wanted);
            (void)::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &wanted, sizeof wanted);
        }
        return {Endpoint(detail::FdStream(fds[0], fds[0], detail::FdKind::socket, max_message)),
                Endpoint(detail::FdStream(fds[1], fds[1], detail::FdKind::socket, max_message))};
    }
};

static_assert(channel<Socket>);

}  // namespace crew::ipc
