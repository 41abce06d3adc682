// crew/ipc/pipe.hpp — crew::ipc::Pipe, a channel made of two anonymous pipes
// (one per direction).
//
// When to use: the simplest channel between a parent and a child it starts
// itself (fork, or fork+exec with export_handle()); no names, nothing to clean
// up after a crash, works wherever POSIX pipes do. For large messages prefer
// Socket or SharedMemory: every byte is copied into the kernel and out again.
//
// What it costs: two pipe2() calls and four fds per pair. Each pipe's buffer
// is raised to 1 MiB with F_SETPIPE_SZ when /proc/sys/fs/pipe-max-size allows
// (64 KiB pipes move 1 MiB messages several times slower: docs/benchmarks.md).
// A send is one writev()
// (header and payload together, no copy in user space) plus two
// rt_sigprocmask() calls that block SIGPIPE in the calling thread around it,
// so a dead reader gives crew::ChannelError instead of killing the process; a
// receive is two read()s for a small message (one poll() more per read when
// it has a deadline). A 64-byte round trip is dominated by the wake-up of the
// sleeping peer; the three syscalls more than a bare write()+read() add a
// little per message (docs/benchmarks.md has the figures).
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

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <crew/detail/fd_endpoint.hpp>
#include <crew/detail/fd_stream.hpp>
#include <crew/errors.hpp>
#include <crew/ipc/channel.hpp>
#include <crew/options.hpp>

namespace crew::ipc {

/// A channel of two anonymous pipes. Models crew::ipc::channel.
class Pipe {
public:
    static constexpr std::string_view name = "pipe";

    /// One end: reads one pipe, writes the other. Move-only; closes its fds
    /// when destroyed. Fds are close-on-exec until export_handle().
    /// send_bytes(), receive_bytes(), receive_bytes_until(), readable_fd()
    /// (the read end) and close() (both fds) come from detail::FdEndpoint.
    class Endpoint : public detail::FdEndpoint<Endpoint> {
    public:
        /// An empty (closed) endpoint.
        Endpoint() noexcept = default;

        /// Clear FD_CLOEXEC on both fds so they survive exec(), and return
        /// "pipe:<read fd>,<write fd>" for import_handle(). Call it in the
        /// child between fork() and exec() (the flag belongs to the fd table
        /// of the calling process), so other children the parent starts
        /// meanwhile do not inherit this end.
        [[nodiscard]] std::string export_handle() {
            std::string text = std::string(name) + ":" + std::to_string(stream_.read_fd()) + "," +
                               std::to_string(stream_.write_fd());
            stream_.make_inheritable();
            return text;
        }

        /// Rebuild an endpoint from export_handle()'s text in the exec'd
        /// process; takes ownership of the fds and makes them close-on-exec
        /// again. crew::ChannelError if the text is not a pipe handle or its
        /// fds are not a pipe's read end and write end.
        [[nodiscard]] static Endpoint import_handle(std::string_view text,
                                                    std::size_t max_message = Options{}.max_message_size) {
            int fds[2] = {-1, -1};
            detail::FdStream::parse_handle(text, name, fds);
            auto refuse = [&](const char* why) {
                return ChannelError("crew: \"" + std::string(text) + "\" is not a pipe handle (" + why +
                                    "); pass import_handle() exactly the text export_handle() returned");
            };
            if (fds[0] == fds[1]) throw refuse("the read and write fd are the same");
            if (!is_fifo(fds[0]) || !is_fifo(fds[1])) throw refuse("its fds are not pipes");
            if ((::fcntl(fds[0], F_GETFL) & O_ACCMODE) != O_RDONLY) throw refuse("the first fd is not a read end");
            if ((::fcntl(fds[1], F_GETFL) & O_ACCMODE) != O_WRONLY) throw refuse("the second fd is not a write end");
            detail::FdStream::set_cloexec(fds[0], true, "pipe");
            detail::FdStream::set_cloexec(fds[1], true, "pipe");
            return Endpoint(detail::FdStream(fds[0], fds[1], detail::FdKind::pipe, max_message));
        }

    private:
        friend class Pipe;
        explicit Endpoint(detail::FdStream stream) noexcept : FdEndpoint(std::move(stream)) {}

        static bool is_fifo(int fd) noexcept {
            struct stat st {};
            return ::fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode);
        }
    };

    /// Make a connected pair: first is the parent's end, second the child's.
    /// Messages longer than `max_message` bytes are refused on both sides.
    [[nodiscard]] static std::pair<Endpoint, Endpoint> pair(std::size_t max_message = Options{}.max_message_size) {
        int down[2];  // parent writes, child reads
        int up[2];    // child writes, parent reads
        // Never on 0-2 (a program started with them closed): see detail/fd_util.hpp.
        if (::pipe2(down, O_CLOEXEC) != 0 || !detail::above_stdio(down))
            detail::FdStream::fail_errno("cannot create a pipe (pipe2)", errno);
        if (::pipe2(up, O_CLOEXEC) != 0 || !detail::above_stdio(up)) {
            int err = errno;
            ::close(down[0]);
            ::close(down[1]);
            detail::FdStream::fail_errno("cannot create a pipe (pipe2)", err);
        }
        grow(down[1]);
        grow(up[1]);
        return {Endpoint(detail::FdStream(up[0], down[1], detail::FdKind::pipe, max_message)),
                Endpoint(detail::FdStream(down[0], up[1], detail::FdKind::pipe, max_message))};
    }

private:
    // Bigger pipes mean fewer wake-ups per large message (64 KiB pipes move
    // 1 MiB messages several times slower than 1 MiB pipes: docs/benchmarks.md).
    // The kernel refuses
    // sizes above /proc/sys/fs/pipe-max-size for unprivileged users and may
    // refuse when the user's pipe quota is spent; then take the largest size
    // it grants, down to the default, which still works, only slower.
    static void grow(int fd) noexcept {
        for (int size = 1 << 20; size > (1 << 16); size /= 2)
            if (::fcntl(fd, F_SETPIPE_SZ, size) != -1) return;
    }
};

static_assert(channel<Pipe>);

}  // namespace crew::ipc
