// crew/ipc/shared_memory.hpp — crew::ipc::SharedMemory, a channel made of two
// byte rings (one per direction) in one anonymous shared mapping.
//
// When to use: the fastest channel between a parent and a child it starts
// itself, for small messages (a round trip between two awake processes makes
// no syscall at all; docs/benchmarks.md has the times) and
// for large ones (bytes are copied into the ring and out again by the two
// processes in parallel, no kernel copy). The default of
// crew::ProcessExecutor.
//
// What it costs: one memfd_create() with no name anywhere (nothing to clean
// up after a crash, nothing a stranger can open), 2 MiB of shared memory per
// pair (touched as used), one fd per endpoint (the memfd, kept for
// export_handle()), and a pidfd while waiting for the peer. A message is an
// 8-byte length then the payload, streamed through the 1 MiB ring in parts
// when larger: the receiver copies out while the sender copies in. A waiting
// call spins for up to crew::detail::spin_budget (50 us), then sleeps
// on a process-shared futex; a notify makes a syscall only when the peer
// sleeps. A sleeping call wakes every 100 ms to check that the peer process
// still exists, so an idle endpoint costs ~10 tiny wake-ups per second.
//
// Peers that end: shared memory has no EOF, so each side records the id of
// the process using it in the mapping. close() sets a flag the peer sees at
// once; a peer that dies without closing (crash, SIGKILL) is noticed by a
// waiting send or receive within ~100 ms, and by a send at most ~100 ms after
// the previous check. Bytes the peer sent before it went are still delivered.
// Until the peer process has claimed its side (its first send or receive,
// bind_to_current_process(), or import_handle()), the mapping names the
// creator of the pair there and the peer's death cannot be noticed: call
// bind_to_current_process() first thing in a forked child.
//
// Guarantees: messages arrive whole, in order, exactly once; any size up to
// the pair's `max_message` (checked on both sides before anything is
// allocated). One thread may send while another receives on the same
// endpoint; concurrent senders (or receivers) need a lock. Each direction
// has one writer and one reader: an endpoint must be used by one process at a
// time (a forked child uses its own end, the parent its own).
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <crew/detail/fd_util.hpp>
#include <crew/detail/byte_ring.hpp>
#include <crew/detail/memory_endpoint.hpp>
#include <crew/detail/peer_liveness.hpp>
#include <crew/errors.hpp>
#include <crew/ipc/channel.hpp>
#include <crew/options.hpp>
#include <crew/sync/lock_free.hpp>

namespace crew::detail {

/// Bytes in each direction's ring. 1 MiB: a typical task or result (up to
/// a few hundred KiB) fits whole, so a sender rarely waits for the receiver;
/// both rings together (2 MiB) stay in a desktop or server CPU's L2/L3, so the
/// copy in and the copy out of a large message run at cache speed; larger
/// rings measured no faster for 1-64 MiB messages (docs/benchmarks.md) and
/// cost memory per worker.
inline constexpr std::size_t shm_ring_bytes = std::size_t{1} << 20;

/// How SharedMemory names itself in errors.
inline constexpr ChannelWords shm_words{"shm", "a", "stream"};

/// The sender publishes its progress (and the receiver frees space) every
/// this many bytes of a large message, so the peer starts copying before the
/// whole part is in: the two copies overlap.
inline constexpr std::size_t shm_publish_step = std::size_t{64} << 10;

/// The whole mapping. ring[s] is written by side s and read by side 1 - s;
/// `Signal` is how a side sleeps (crew/detail/shm_signal.hpp).
template <class Signal>
struct BasicShmBlock {
    // "crewshm1" for the futex signal, "crewshm2"/"crewshm3" for the others:
    // an end of one kind cannot be imported as another.
    static constexpr std::uint64_t magic_value = 0x6372'6577'7368'6d30 + Signal::tag;

    std::uint64_t magic = 0;  // set by pair() before any other process maps the block
    std::uint64_t ring_bytes = shm_ring_bytes;
    PeerSide side[2];
    ByteRing<shm_ring_bytes, Signal> ring[2];
};

/// The block of the default (sync::LockFree) channel.
using ShmBlock = BasicShmBlock<FutexSignal>;

/// The mapping's size: the block rounded up to whole pages.
template <class Signal>
inline constexpr std::size_t shm_block_bytes_for = (sizeof(BasicShmBlock<Signal>) + 4095) / 4096 * 4096;
inline constexpr std::size_t shm_block_bytes = shm_block_bytes_for<FutexSignal>;

static_assert(alignof(ShmBlock) == ring_line_bytes && sizeof(PeerSide) == ring_line_bytes &&
                  sizeof(RingIndex) == ring_line_bytes,
              "each index and side must sit on its own cache line");
static_assert(sizeof(ByteRing<shm_ring_bytes>) == 4 * ring_line_bytes + shm_ring_bytes,
              "a lock-free ring is four cache lines of control, then its bytes");

}  // namespace crew::detail

namespace crew::ipc {

/// A channel of two single-producer/single-consumer byte rings in anonymous
/// shared memory (memfd), where a blocked side sleeps the way `Sync` says:
/// sync::LockFree (crew::ipc::SharedMemory, the default) on a futex,
/// sync::Mutex on a robust process-shared mutex + condition variable,
/// sync::Semaphore on a process-shared counting semaphore. ProcessExecutor<
/// SharedMemory, Sync> uses BasicSharedMemory<Sync>. Models crew::ipc::channel.
template <class Sync>
class BasicSharedMemory {
    using Signal = typename Sync::shared_signal;
    using Block = detail::BasicShmBlock<Signal>;
    static constexpr std::size_t block_bytes = detail::shm_block_bytes_for<Signal>;

public:
    /// "shm" (sync::LockFree), "shm-mutex" or "shm-semaphore".
    static constexpr std::string_view name = Signal::channel_name;

    /// The same channel with another policy's way of waiting.
    template <class OtherSync>
    using with_sync = BasicSharedMemory<OtherSync>;

    /// Bytes in each direction's ring; larger messages are streamed through
    /// it in parts.
    static constexpr std::size_t ring_bytes = detail::shm_ring_bytes;

    /// One end: writes one ring, reads the other. Move-only; unmaps and
    /// closes its memfd when destroyed. The memfd is close-on-exec until
    /// export_handle(). receive_bytes(), receive_bytes_until() and
    /// readable_fd() (-1: there is nothing to poll) come from
    /// detail::MemoryEndpoint.
    class Endpoint : public detail::MemoryEndpoint<Endpoint> {
    public:
        /// An empty (closed) endpoint.
        Endpoint() noexcept = default;
        Endpoint(Endpoint&& other) noexcept { swap(other); }
        Endpoint& operator=(Endpoint&& other) noexcept { return this->move_assign(*this, other); }
        ~Endpoint() { close(); }

        /// Send one whole message; blocks while the ring is full.
        /// crew::ChannelError if the peer closed its end or its process is
        /// gone, or the message is longer than max_message.
        void send_bytes(std::span<const std::byte> bytes);

        /// Tell the peer this side is closed (when this process speaks for
        /// it, see below), then unmap and close the memfd; idempotent. A peer
        /// blocked in receive wakes and gets crew::ChannelError once it has
        /// taken every message sent before. Closing a copy that fork() gave
        /// to a process that never used it (the parent's copy of the child's
        /// end, the child's copy of the parent's end) only unmaps.
        void close() noexcept;

        /// Record the calling process as the one using this side, so the peer
        /// can tell when it dies. Happens by itself on the first send or
        /// receive in a process and in import_handle(); call it first thing
        /// in a forked child, so that the parent notices even a child that
        /// dies before using its end.
        void bind_to_current_process() {
            core_.require_open("bind");
            claim();
        }

        /// Clear FD_CLOEXEC on the memfd so it survives exec(), and return
        /// "shm:<fd>:<side>" for import_handle(). Call it in the child between
        /// fork() and exec() (the flag belongs to the fd table of the calling
        /// process), so other children the parent starts meanwhile do not
        /// inherit this end.
        [[nodiscard]] std::string export_handle();

        /// Rebuild an endpoint from export_handle()'s text in the exec'd
        /// process: maps the memfd, takes ownership of it (close-on-exec
        /// again) and binds the side to this process. crew::ChannelError if
        /// the text is not a shm handle or its fd is not a crew shared-memory
        /// channel; the fd is then left alone.
        [[nodiscard]] static Endpoint import_handle(std::string_view text,
                                                    std::size_t max_message = Options{}.max_message_size);

    private:
        friend class BasicSharedMemory;
        friend class detail::MemoryEndpoint<Endpoint>;
        using Clock = std::chrono::steady_clock;
        using Ring = detail::ByteRing<detail::shm_ring_bytes, Signal>;
        static constexpr std::size_t header_size = detail::LengthHeader::size;

        Endpoint(int fd, Block* block, int side, std::size_t max_message) noexcept
            : fd_(fd), block_(block), core_(block->side, side, max_message) {}

        void swap(Endpoint& o) noexcept {
            std::swap(fd_, o.fd_);
            std::swap(block_, o.block_);
            core_.swap(o.core_);
        }

        void claim() { core_.link.claim(); }
        void claim_if_needed() {
            if (core_.link.owner().needs_claim()) claim();
        }

        int side() const noexcept { return core_.link.side(); }
        Ring& out_ring() const noexcept { return block_->ring[side()]; }
        Ring& in_ring() const noexcept { return block_->ring[1 - side()]; }

        bool receive_impl(std::vector<std::byte>& out, const Clock::time_point* deadline);
        std::uint64_t wait_readable(const Clock::time_point* deadline, std::size_t got);
        void consume(std::uint64_t n) noexcept;
        void check_indices(std::uint64_t head, std::uint64_t tail, detail::Direction direction);

        int fd_ = -1;
        Block* block_ = nullptr;  // null: closed (and core_ detached)
        detail::MemoryEndpointCore<detail::shm_words> core_;
    };

    /// Make a connected pair: first is the parent's end, second the child's.
    /// Messages longer than `max_message` bytes are refused on both sides.
    /// Both sides initially name the calling process as their user.
    [[nodiscard]] static std::pair<Endpoint, Endpoint> pair(std::size_t max_message = Options{}.max_message_size);

private:
    [[noreturn]] static void fail_errno(const std::string& what, int err) {
        throw ChannelError("crew: " + what + ": " + std::system_category().message(err));
    }
};

/// The default channel of crew::ProcessExecutor: waits lock-free (futex).
using SharedMemory = BasicSharedMemory<sync::LockFree>;

static_assert(channel<SharedMemory>);

// ---------------------------------------------------------------------------
// Implementation
// ---------------------------------------------------------------------------

template <class Sync>
std::pair<typename BasicSharedMemory<Sync>::Endpoint, typename BasicSharedMemory<Sync>::Endpoint>
BasicSharedMemory<Sync>::pair(std::size_t max_message) {
    constexpr std::size_t shm_block_bytes = block_bytes;
    // Sealed against resizing, so neither side can make the other's accesses
    // fault with SIGBUS, and import_handle() can tell our memfd from others.
    // Never on 0-2 (a program started with them closed): see detail/fd_util.hpp.
    const int fd = detail::above_stdio(::memfd_create("crew-shm", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    if (fd < 0) fail_errno("cannot create shared memory for a shm channel (memfd_create)", errno);
    int second_fd = -1;
    void* first_map = MAP_FAILED;
    auto fail = [&](const char* what) {
        const int err = errno;
        if (first_map != MAP_FAILED) ::munmap(first_map, shm_block_bytes);
        if (second_fd >= 0) ::close(second_fd);
        ::close(fd);
        fail_errno(std::string("cannot set up a shm channel (") + what + ")", err);
    };
    if (::ftruncate(fd, static_cast<off_t>(shm_block_bytes)) != 0) fail("ftruncate");
    // Reserved now: tmpfs hands out pages on first touch, and one it cannot
    // find then (memory cgroup limit) would be a SIGBUS in the middle of a
    // send instead of this error.
    if (const int rc = ::posix_fallocate(fd, 0, static_cast<off_t>(shm_block_bytes)); rc != 0) {
        errno = rc;
        fail(rc == ENOSPC || rc == ENOMEM ? "not enough free memory to reserve its 2 MiB (posix_fallocate)"
                                          : "posix_fallocate");
    }
    if (::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) fail("F_ADD_SEALS");
    first_map = ::mmap(nullptr, shm_block_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (first_map == MAP_FAILED) fail("mmap");
    // Each endpoint owns its own fd and mapping, so either can be closed,
    // moved or exported on its own.
    second_fd = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (second_fd < 0) fail("dup");
    void* second_map = ::mmap(nullptr, shm_block_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, second_fd, 0);
    if (second_map == MAP_FAILED) fail("mmap");

    // Default-initialised: the rings' bytes are not touched (memfd pages are
    // zero and allocated on first write).
    Block* block = nullptr;
    try {
        block = ::new (first_map) Block;
    } catch (const std::exception& e) {  // a robust mutex the system would not initialise
        errno = ENOMEM;
        fail(e.what());
    }
    const auto me = static_cast<std::int32_t>(::getpid());
    block->side[0].pid.store(me, std::memory_order_relaxed);
    block->side[1].pid.store(me, std::memory_order_relaxed);
    block->magic = Block::magic_value;

    std::pair<Endpoint, Endpoint> ends{
        Endpoint(fd, block, 0, max_message),
        Endpoint(second_fd, std::launder(static_cast<Block*>(second_map)), 1, max_message)};
    ends.first.core_.link.owner().created();
    ends.second.core_.link.owner().created();
    return ends;
}

template <class Sync>
void BasicSharedMemory<Sync>::Endpoint::close() noexcept {
    if (block_ == nullptr) return;
    if (core_.link.mark_closed()) {
        // Wake a peer that waits for data from us or for space we would free.
        out_ring().data.signal.notify_all();
        in_ring().space.signal.notify_all();
    }
    ::munmap(block_, block_bytes);
    // close() is not retried on EINTR: on Linux the fd is gone either way.
    ::close(fd_);
    fd_ = -1;
    block_ = nullptr;
    core_.reset();
}

template <class Sync>
void BasicSharedMemory<Sync>::Endpoint::check_indices(std::uint64_t head, std::uint64_t tail,
                                                      detail::Direction direction) {
    if (tail - head <= detail::shm_ring_bytes) return;  // also catches head > tail (unsigned wrap)
    core_.errors.fail(direction, "crew: the shm channel's ring is inconsistent (read position " +
                                     std::to_string(head) + ", write position " + std::to_string(tail) +
                                     "): something other than crew wrote to the shared memory; the channel "
                                     "cannot be used any more");
}

template <class Sync>
void BasicSharedMemory<Sync>::Endpoint::send_bytes(std::span<const std::byte> payload) {
    core_.check_send(payload.size());
    claim_if_needed();
    core_.check_peer_before_send();

    std::array<std::byte, header_size> header{};
    detail::LengthHeader::encode(static_cast<std::uint64_t>(payload.size()), header.data());

    auto& ring = out_ring();
    std::uint64_t tail = ring.tail.value.load(std::memory_order_relaxed);  // ours alone
    std::uint64_t head = ring.head.value.load(std::memory_order_acquire);
    check_indices(head, tail, detail::Direction::send);
    std::uint64_t published = tail;
    auto publish = [&] {
        if (published == tail) return;
        ring.tail.value.store(tail, std::memory_order_release);
        published = tail;
        ring.data.signal.notify_one();
    };
    auto put = [&](const std::byte* src, std::size_t n) {
        while (n > 0) {
            std::uint64_t free = detail::shm_ring_bytes - (tail - head);
            if (free == 0) {
                publish();  // the reader may be waiting for exactly these bytes
                core_.fail_send_if_ended(core_.link.wait(
                    detail::Direction::send,
                    [&] {
                        head = ring.head.value.load(std::memory_order_acquire);
                        return tail - head != detail::shm_ring_bytes;
                    },
                    ring.space.signal, nullptr));
                check_indices(head, tail, detail::Direction::send);
                continue;
            }
            const std::size_t k = static_cast<std::size_t>(
                std::min<std::uint64_t>({n, free, detail::shm_publish_step - (tail - published)}));
            ring.copy_in(tail, src, k, head);
            tail += k;
            src += k;
            n -= k;
            if (tail - published >= detail::shm_publish_step) publish();
        }
    };
    put(header.data(), header.size());
    put(payload.data(), payload.size());
    publish();
}

// Bytes waiting in the incoming ring, after waiting for some; 0 when the
// deadline passed first.
template <class Sync>
std::uint64_t BasicSharedMemory<Sync>::Endpoint::wait_readable(const Clock::time_point* deadline, std::size_t got) {
    auto& ring = in_ring();
    const std::uint64_t head = ring.head.value.load(std::memory_order_relaxed);  // ours alone
    std::uint64_t tail = ring.tail.value.load(std::memory_order_acquire);
    if (tail == head) {
        auto r = core_.link.wait(
            detail::Direction::receive,
            [&] {
                tail = ring.tail.value.load(std::memory_order_acquire);
                return tail != head;
            },
            ring.data.signal, deadline);
        if (r == detail::PeerWait::timeout) return 0;
        if (r != detail::PeerWait::ready) core_.peer_ended_while_receiving(r, got);
    }
    check_indices(head, tail, detail::Direction::receive);
    return tail - head;
}

// Free `n` bytes the reader has copied out, and wake a writer waiting for them.
template <class Sync>
void BasicSharedMemory<Sync>::Endpoint::consume(std::uint64_t n) noexcept {
    auto& ring = in_ring();
    ring.head.value.store(ring.head.value.load(std::memory_order_relaxed) + n, std::memory_order_release);
    ring.space.signal.notify_one();
}

template <class Sync>
bool BasicSharedMemory<Sync>::Endpoint::receive_impl(std::vector<std::byte>& out, const Clock::time_point* deadline) {
    core_.check_receive();
    claim_if_needed();
    auto& ring = in_ring();
    detail::PartialMessage& in = core_.incoming;

    in.resume(out);
    while (!in.in_body) {
        const std::uint64_t avail = wait_readable(deadline, in.header_got);
        if (avail == 0) {
            out.clear();
            return false;
        }
        const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(avail, in.header_missing()));
        const std::uint64_t head = ring.head.value.load(std::memory_order_relaxed);  // ours alone
        ring.copy_out(head, in.header_end(), n, head + avail);
        consume(n);
        if (!in.add_header_bytes(n)) continue;

        const std::uint64_t length = in.header_length();
        core_.limit.check_received(detail::shm_words, length, core_.errors);
        in.start_body(static_cast<std::size_t>(length), out);
    }

    while (out.size() < in.length) {
        const std::uint64_t avail = wait_readable(deadline, out.size());
        if (avail == 0) {
            in.park(out);
            return false;
        }
        std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(avail, in.length - out.size()));
        const std::uint64_t tail = ring.head.value.load(std::memory_order_relaxed) + avail;
        while (n > 0) {
            // Free space in steps, so the writer refills while we copy
            // (straight from the ring into `out`: no zeroing).
            const std::size_t k = std::min(n, detail::shm_publish_step);
            ring.append_out(ring.head.value.load(std::memory_order_relaxed), out, k, tail);
            consume(k);
            n -= k;
        }
    }
    in.reset();
    return true;
}

template <class Sync>
std::string BasicSharedMemory<Sync>::Endpoint::export_handle() {
    core_.require_open("export");
    int flags = ::fcntl(fd_, F_GETFD);
    if (flags == -1 || ::fcntl(fd_, F_SETFD, flags & ~FD_CLOEXEC) == -1)
        BasicSharedMemory::fail_errno("cannot clear FD_CLOEXEC on a shm channel's memfd", errno);
    core_.link.owner().exported();
    return std::string(name) + ":" + std::to_string(fd_) + ":" + std::to_string(side());
}

template <class Sync>
typename BasicSharedMemory<Sync>::Endpoint BasicSharedMemory<Sync>::Endpoint::import_handle(std::string_view text,
                                                                                         std::size_t max_message) {
    constexpr std::size_t shm_block_bytes = block_bytes;
    auto refuse = [&](const std::string& why) {
        return ChannelError("crew: \"" + std::string(text) + "\" is not a " + std::string(name) + " handle (" + why +
                            "); pass import_handle() exactly the text export_handle() returned");
    };
    std::string_view rest = text;
    if (rest.size() <= name.size() || rest.substr(0, name.size()) != name || rest[name.size()] != ':')
        throw refuse("it must start with \"" + std::string(name) + ":\"");
    rest.remove_prefix(name.size() + 1);
    int fd = -1;
    if (rest.empty() || rest.front() < '0' || rest.front() > '9') throw refuse("expected a decimal fd number");
    auto [end, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), fd);
    if (ec != std::errc{} || fd < 0) throw refuse("fd number out of range");
    rest.remove_prefix(static_cast<std::size_t>(end - rest.data()));
    if (rest.size() != 2 || rest[0] != ':' || (rest[1] != '0' && rest[1] != '1'))
        throw refuse("expected \":0\" or \":1\" (the side) after the fd");
    const int side = rest[1] - '0';

    const int fd_flags = ::fcntl(fd, F_GETFD);
    if (fd_flags == -1) throw refuse("its file descriptor is not open in this process");
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || static_cast<std::size_t>(st.st_size) != shm_block_bytes)
        throw refuse("its fd is not a crew shared-memory channel");
    const int seals = ::fcntl(fd, F_GET_SEALS);
    if (seals == -1 || (seals & (F_SEAL_SHRINK | F_SEAL_GROW)) != (F_SEAL_SHRINK | F_SEAL_GROW))
        throw refuse("its fd is not a crew shared-memory channel (not a sealed memfd)");
    void* p = ::mmap(nullptr, shm_block_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) BasicSharedMemory::fail_errno("cannot map a shm channel (mmap)", errno);
    auto* block = std::launder(static_cast<Block*>(p));
    if (block->magic != Block::magic_value || block->ring_bytes != detail::shm_ring_bytes) {
        ::munmap(p, shm_block_bytes);
        throw refuse("its memory is not a crew " + std::string(name) +
                     " channel of this crew version (another crew version, or another Sync policy's channel)");
    }
    if (::fcntl(fd, F_SETFD, fd_flags | FD_CLOEXEC) == -1) {
        const int err = errno;
        ::munmap(p, shm_block_bytes);
        BasicSharedMemory::fail_errno("cannot set FD_CLOEXEC on a shm channel's memfd", err);
    }
    Endpoint e(fd, block, side, max_message);
    e.claim();
    return e;
}

}  // namespace crew::ipc
