// crew/detail/fd_stream.hpp — message framing over byte-stream file
// descriptors, shared by crew::ipc::Pipe and crew::ipc::Socket.
//
// Wire format: an 8-byte little-endian length, then that many payload bytes.
// Header and payload leave in one writev()/sendmsg() (the payload is never
// copied); reads take the header, check its length against the endpoint's
// limit before a byte is allocated, then read the payload straight into the
// caller's vector.
//
// Only the current message is ever read: nothing of the next one is buffered
// inside the endpoint, so "the fd polls readable" stays the exact signal for
// "a message (or EOF) may be waiting" that readable_fd() promises. A timed
// receive that gives up halfway keeps what it read (header bytes, payload so
// far) in the endpoint; the next receive continues from there.
//
// Threads: one thread may send while another receives on the same stream
// (the two directions share no state). Two concurrent senders, or two
// concurrent receivers, need a lock around the calls; close() must not race
// with anything.
#pragma once

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <crew/detail/endpoint_core.hpp>
#include <crew/detail/fd_util.hpp>
#include <crew/errors.hpp>

namespace crew::detail {

/// How writes avoid SIGPIPE, and how the stream names itself in errors.
enum class FdKind : unsigned char {
    pipe,    ///< two pipes; SIGPIPE blocked in the writing thread around writev()
    socket,  ///< one socket for both directions; sendmsg(MSG_NOSIGNAL)
};

/// One end of a framed, bidirectional byte stream over one fd (socket) or two
/// (pipe: read end, write end). Move-only; owns its fds and closes them.
class FdStream {
public:
    using Clock = std::chrono::steady_clock;
    static constexpr std::size_t header_size = LengthHeader::size;

    FdStream() noexcept = default;

    /// Takes ownership of `read_fd` and `write_fd` (equal for a socket).
    FdStream(int read_fd, int write_fd, FdKind kind, std::size_t max_message) noexcept
        : read_fd_(read_fd), write_fd_(write_fd), kind_(kind), limit_(max_message) {}

    FdStream(FdStream&& other) noexcept { swap(other); }
    FdStream& operator=(FdStream&& other) noexcept {
        if (this != &other) {
            FdStream gone(std::move(other));
            swap(gone);  // our old fds close with `gone`
        }
        return *this;
    }
    FdStream(const FdStream&) = delete;
    FdStream& operator=(const FdStream&) = delete;
    ~FdStream() { close(); }

    /// Send one whole message; blocks while the peer is slow.
    void send(std::span<const std::byte> payload);

    /// Receive one whole message into `out` (resized to it); blocks.
    void receive(std::vector<std::byte>& out) { (void)receive_impl(out, nullptr); }

    /// As receive(), but gives up at `deadline` and returns false; what was
    /// read of a message so far stays here for the next call.
    bool receive_until(std::vector<std::byte>& out, Clock::time_point deadline) {
        return receive_impl(out, &deadline);
    }

    [[nodiscard]] int read_fd() const noexcept { return read_fd_; }
    [[nodiscard]] int write_fd() const noexcept { return write_fd_; }
    [[nodiscard]] bool is_open() const noexcept { return read_fd_ >= 0; }
    [[nodiscard]] std::size_t max_message() const noexcept { return limit_.value(); }
    [[nodiscard]] FdKind kind() const noexcept { return kind_; }

    /// Close the fds; idempotent. A partly received message is dropped.
    void close() noexcept {
        // close() is not retried on EINTR: on Linux the fd is gone either way,
        // and a retry could close an fd another thread just opened.
        if (read_fd_ >= 0) ::close(read_fd_);
        if (write_fd_ >= 0 && write_fd_ != read_fd_) ::close(write_fd_);
        read_fd_ = write_fd_ = -1;
        in_.reset();
        errors_.clear();
    }

    /// Clear FD_CLOEXEC on the fds so they survive exec().
    void make_inheritable() {
        require_open("export");
        set_cloexec(read_fd_, false, name());
        if (write_fd_ != read_fd_) set_cloexec(write_fd_, false, name());
    }

    [[nodiscard]] const char* name() const noexcept { return kind_ == FdKind::pipe ? "pipe" : "socket"; }
    [[nodiscard]] ChannelWords words() const noexcept { return {name(), "a", "stream"}; }

    // -- helpers shared by the channels' import_handle() -------------------

    /// Parse "<name>:<fd>[,<fd>...]" with exactly `fds.size()` decimal fds.
    static void parse_handle(std::string_view text, std::string_view name, std::span<int> fds);

    /// Set or clear FD_CLOEXEC, ChannelError on failure.
    static void set_cloexec(int fd, bool on, const char* name);

    [[noreturn]] static void fail_errno(const std::string& what, int err) {
        throw ChannelError("crew: " + what + ": " + std::system_category().message(err));
    }

private:
    enum class ReadResult { data, eof, timeout };

    void swap(FdStream& o) noexcept {
        std::swap(read_fd_, o.read_fd_);
        std::swap(write_fd_, o.write_fd_);
        std::swap(kind_, o.kind_);
        std::swap(limit_, o.limit_);
        std::swap(in_, o.in_);
        errors_.swap(o.errors_);
    }

    void require_open(const char* action) const {
        if (read_fd_ < 0) throw ChannelError(closed_endpoint_text(name(), action));
    }

    bool receive_impl(std::vector<std::byte>& out, const Clock::time_point* deadline);
    ReadResult read_some(void* buf, std::size_t len, const Clock::time_point* deadline, std::size_t& got);
    bool wait_fd(int fd, short events, const Clock::time_point* deadline);

    int read_fd_ = -1;
    int write_fd_ = -1;
    FdKind kind_ = FdKind::pipe;
    MessageLimit limit_;
    PartialMessage in_;    // survives a timed-out receive
    StickyErrors errors_;  // a framing error leaves the stream at an unknown position
};

// ---------------------------------------------------------------------------
// Implementation
// ---------------------------------------------------------------------------

/// Blocks SIGPIPE in the calling thread for its lifetime, so that a write to a
/// pipe whose reader is gone fails with EPIPE instead of killing the process.
/// The process-wide disposition is never touched (a library must not). If the
/// write raised SIGPIPE, consume() takes it off the pending set before the
/// mask is restored — unless one was already pending before we started, which
/// belongs to someone else and is left alone.
///
/// Cost: two rt_sigprocmask calls per send (docs/benchmarks.md). sigpending()
/// is only needed when the caller had SIGPIPE blocked already: while it is
/// unblocked in this thread, none can be pending for it.
class SigpipeBlock {
public:
    SigpipeBlock() noexcept {
        sigemptyset(&sigpipe_);
        sigaddset(&sigpipe_, SIGPIPE);
        pthread_sigmask(SIG_BLOCK, &sigpipe_, &old_);
        already_blocked_ = sigismember(&old_, SIGPIPE) == 1;
        if (already_blocked_) {
            sigset_t pending;
            sigemptyset(&pending);
            sigpending(&pending);
            was_pending_ = sigismember(&pending, SIGPIPE) == 1;
        }
    }
    SigpipeBlock(const SigpipeBlock&) = delete;
    SigpipeBlock& operator=(const SigpipeBlock&) = delete;
    ~SigpipeBlock() {
        if (!already_blocked_) pthread_sigmask(SIG_SETMASK, &old_, nullptr);
    }

    /// Call after a write failed with EPIPE: drop the SIGPIPE it generated.
    void consume() noexcept {
        if (was_pending_) return;
        timespec zero{};
        while (sigtimedwait(&sigpipe_, nullptr, &zero) == -1 && errno == EINTR) {
        }
    }

private:
    sigset_t sigpipe_{};
    sigset_t old_{};
    bool already_blocked_ = false;
    bool was_pending_ = false;
};

inline void FdStream::send(std::span<const std::byte> payload) {
    require_open("send");
    errors_.check_send();
    limit_.check_send(words(), payload.size());

    std::array<unsigned char, header_size> header{};
    LengthHeader::encode(static_cast<std::uint64_t>(payload.size()), header.data());

    std::array<iovec, 2> iov{};
    iov[0] = {header.data(), header_size};
    // writev() takes non-const pointers but only reads through them.
    iov[1] = {const_cast<std::byte*>(payload.data()), payload.size()};
    std::size_t first = 0;
    std::size_t count = payload.empty() ? 1 : 2;

    std::optional<SigpipeBlock> guard;
    if (kind_ == FdKind::pipe) guard.emplace();

    while (first < count) {
        ssize_t n;
        if (kind_ == FdKind::socket) {
            msghdr msg{};
            msg.msg_iov = iov.data() + first;
            msg.msg_iovlen = count - first;
            n = ::sendmsg(write_fd_, &msg, MSG_NOSIGNAL);
        } else {
            n = ::writev(write_fd_, iov.data() + first, static_cast<int>(count - first));
        }
        if (n < 0) {
            int err = errno;
            if (err == EINTR) continue;
            if (err == EAGAIN || err == EWOULDBLOCK) {
                // Someone made the fd non-blocking; wait instead of spinning.
                (void)wait_fd(write_fd_, POLLOUT, nullptr);
                continue;
            }
            if (guard && err == EPIPE) guard->consume();
            if (err == EPIPE || err == ECONNRESET) errors_.fail_send(peer_ended_on_send_text(name(), PeerEnd::eof));
            errors_.fail_send(std::string("crew: writing to the ") + name() +
                      " channel failed: " + std::system_category().message(err));
        }
        // Advance past what the kernel took; a partial write leaves the rest.
        auto done = static_cast<std::size_t>(n);
        while (first < count && done >= iov[first].iov_len) {
            done -= iov[first].iov_len;
            ++first;
        }
        if (first < count) {
            iov[first].iov_base = static_cast<char*>(iov[first].iov_base) + done;
            iov[first].iov_len -= done;
        }
    }
}

inline bool FdStream::receive_impl(std::vector<std::byte>& out, const Clock::time_point* deadline) {
    require_open("receive");
    errors_.check_receive();

    in_.resume(out);
    while (!in_.in_body) {
        std::size_t got = 0;
        auto r = read_some(in_.header_end(), in_.header_missing(), deadline, got);
        if (r == ReadResult::timeout) {
            out.clear();
            return false;
        }
        if (r == ReadResult::eof) {
            if (in_.at_boundary()) errors_.fail_receive(peer_ended_text(name(), PeerEnd::eof));
            errors_.fail_receive(middle_of_message_text(name(), PeerEnd::eof, in_.header_got, false, 0));
        }
        if (!in_.add_header_bytes(got)) continue;

        const std::uint64_t length = in_.header_length();
        limit_.check_received(words(), length, errors_);
        in_.start_body(static_cast<std::size_t>(length), out);
    }

    // Grow the vector in steps ahead of the data, not all at once (see
    // PartialMessage::start_body). A parked payload was cut back to what
    // was read, so its size is the count so far.
    constexpr std::size_t min_step = std::size_t{1} << 20;
    std::size_t body_got = out.size();
    while (body_got < in_.length) {
        if (out.size() == body_got) {
            std::size_t step = std::max(min_step, body_got);
            out.resize(body_got + std::min(step, in_.length - body_got));
        }
        std::size_t got = 0;
        auto r = read_some(out.data() + body_got, out.size() - body_got, deadline, got);
        if (r == ReadResult::timeout) {
            out.resize(body_got);
            in_.park(out);
            return false;
        }
        if (r == ReadResult::eof)
            errors_.fail_receive(middle_of_message_text(name(), PeerEnd::eof, body_got, true, in_.length));
        body_got += got;
    }
    out.resize(in_.length);
    in_.reset();
    return true;
}

// Read up to `len` bytes (len > 0) once. With a deadline the read must not
// block past it: a socket reads with MSG_DONTWAIT and polls only when nothing
// is there; a pipe has no per-call non-blocking read, so it polls first.
inline FdStream::ReadResult FdStream::read_some(void* buf, std::size_t len, const Clock::time_point* deadline,
                                                std::size_t& got) {
    for (;;) {
        ssize_t n;
        if (deadline == nullptr) {
            n = ::read(read_fd_, buf, len);
        } else if (kind_ == FdKind::socket) {
            n = ::recv(read_fd_, buf, len, MSG_DONTWAIT);
        } else {
            if (!wait_fd(read_fd_, POLLIN, deadline)) return ReadResult::timeout;
            n = ::read(read_fd_, buf, len);
        }
        if (n > 0) {
            got = static_cast<std::size_t>(n);
            return ReadResult::data;
        }
        if (n == 0) return ReadResult::eof;
        int err = errno;
        if (err == EINTR) continue;
        if (err == EAGAIN || err == EWOULDBLOCK) {
            // Nothing there yet (or someone made the fd non-blocking).
            if (deadline == nullptr) {
                (void)wait_fd(read_fd_, POLLIN, nullptr);
            } else if (kind_ == FdKind::socket && !wait_fd(read_fd_, POLLIN, deadline)) {
                return ReadResult::timeout;
            }
            continue;
        }
        if (err == ECONNRESET) return ReadResult::eof;  // socket peer died with unread data
        errors_.fail_receive(std::string("crew: reading from the ") + name() +
                     " channel failed: " + std::system_category().message(err));
    }
}

// poll() until `fd` is ready for `events` (or hung up / in error, which the
// following read or write reports), or until the deadline: false then.
inline bool FdStream::wait_fd(int fd, short events, const Clock::time_point* deadline) {
    for (;;) {
        int timeout_ms = -1;
        if (deadline != nullptr && *deadline != Clock::time_point::max()) {
            // Compare before subtracting: `deadline - now` could overflow for
            // a deadline near time_point::min().
            auto now = Clock::now();
            if (*deadline <= now) {
                timeout_ms = 0;  // still look once: a waiting message is taken
            } else {
                // Round up so we never wake just before the deadline and spin.
                auto ms = std::chrono::ceil<std::chrono::milliseconds>(*deadline - now).count();
                timeout_ms = static_cast<int>(std::min<decltype(ms)>(ms, INT_MAX));
            }
        }
        pollfd p{fd, events, 0};
        int r = ::poll(&p, 1, timeout_ms);
        if (r > 0) {
            if ((p.revents & POLLNVAL) != 0)
                throw ChannelError(std::string("crew: the ") + name() +
                                   " channel's file descriptor was closed behind crew's back; do not close "
                                   "fds you do not own");
            return true;
        }
        if (r == 0) {
            if (timeout_ms == 0) return false;
            continue;  // re-check the clock: poll may wake a little early
        }
        if (errno == EINTR) continue;
        fail_errno(std::string("poll() on the ") + name() + " channel failed", errno);
    }
}

inline void FdStream::parse_handle(std::string_view text, std::string_view name, std::span<int> fds) {
    auto bad = [&](const char* why) -> ChannelError {
        return ChannelError("crew: \"" + std::string(text) + "\" is not a " + std::string(name) + " handle (" +
                            why + "); pass import_handle() exactly the text export_handle() returned");
    };
    if (text.size() <= name.size() || text.substr(0, name.size()) != name || text[name.size()] != ':')
        throw bad("it must start with the channel's name and a colon");
    std::string_view rest = text.substr(name.size() + 1);
    for (std::size_t i = 0; i < fds.size(); ++i) {
        if (i > 0) {
            if (rest.empty() || rest.front() != ',') throw bad("too few file descriptors");
            rest.remove_prefix(1);
        }
        if (rest.empty() || rest.front() < '0' || rest.front() > '9') throw bad("expected a decimal fd number");
        int fd = -1;
        auto [end, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), fd);
        if (ec != std::errc{} || fd < 0) throw bad("fd number out of range");
        rest.remove_prefix(static_cast<std::size_t>(end - rest.data()));
        if (::fcntl(fd, F_GETFD) == -1) throw bad("a file descriptor in it is not open in this process");
        fds[i] = fd;
    }
    if (!rest.empty()) throw bad("unexpected text after the file descriptors");
}

inline void FdStream::set_cloexec(int fd, bool on, const char* name) {
    int flags = ::fcntl(fd, F_GETFD);
    if (flags == -1) fail_errno(std::string("cannot read the flags of a ") + name + " channel fd", errno);
    int want = on ? (flags | FD_CLOEXEC) : (flags & ~FD_CLOEXEC);
    if (want != flags && ::fcntl(fd, F_SETFD, want) == -1)
        fail_errno(std::string("cannot change FD_CLOEXEC on a ") + name + " channel fd", errno);
}

}  // namespace crew::detail
