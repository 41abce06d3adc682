// crew/ipc/message_queue.hpp — crew::ipc::MessageQueue, a channel made of two
// Boost.Interprocess message queues (one per direction).
//
// When to use: where a bounded queue of discrete messages is wanted, or to
// compare with the other channels; it needs names in /dev/shm for a moment,
// which Pipe, Socket and SharedMemory do not. Between a parent and its own
// children crew::ipc::SharedMemory is faster and has no name at all.
//
// What it costs: per pair, two boost::interprocess::message_queue objects of
// `slot_count` slots of `slot_bytes` each (4 MiB of shared memory each,
// touched as used) and a one-page control block, all three named objects in
// /dev/shm (Boost 1.74 creates queues with shm_open); no fd stays open. A
// message is an 8-byte length plus the payload, cut into parts of at most
// `slot_bytes`; every part is copied into the queue and out again under the
// queue's mutex. Waiting: the queues are only used through try_send() and
// try_receive(), never Boost's blocking calls; a waiting call spins for up to
// crew::detail::spin_budget (50 us), then sleeps on a process-shared futex in the control block
// (woken by the peer only when someone sleeps), and wakes every 100 ms to check
// that the peer process still exists. That keeps clear of Boost's waits on
// process-shared condition variables, whose timed form runs on the wall clock
// and which a process killed while waiting can leave inconsistent.
//
// Names: "crew-mq-<pid>-<128 random bits>-{0,1,c}", created with O_EXCL and
// mode 0600 (only this user; never someone else's object). pair() must leave
// them in place: the child's end may be handed to a process started by
// fork()+exec() with export_handle(), and that process can only open the
// queues by name. They are removed as soon as every party has them open:
//   * when the peer's end is claimed by another process (its first send or
//     receive there, bind_to_current_process(), import_handle()),
//   * when any end receives a message (the sender has them open),
//   * when the first endpoint of pair() (the parent's end) is closed or
//     destroyed in the process that called pair().
// A crash of the parent between pair() and the child's first use leaves the
// three names behind until the next pair() of any crew program run by the
// same user: it removes every crew-mq name whose creator process no longer
// exists and that is older than a second (mq_orphan_grace: a creator in
// another pid namespace sharing /dev/shm would look dead, and its handshake
// takes milliseconds). Every other crash leaves nothing.
//
// Peers that end: message queues have no EOF. Each side records its process
// id in the control block; close() sets a flag there that wakes the peer, and
// a peer that dies without closing is noticed by a waiting call within
// ~100 ms (see crew/ipc/shared_memory.hpp, which works the same way). Boost
// 1.74's queue mutex is not robust: a peer killed while copying a part
// inside Boost (microseconds per part) would leave it locked and the other
// side blocked for ever. So every Boost call on a queue runs under a robust
// crew::ipc::Mutex of that direction, in the control block: a peer that dies
// there makes the other side's next call fail with ChannelError (the channel
// is unusable: Boost's lock may be held for ever), and a timed receive gives
// up at its deadline while a stopped (SIGSTOP) peer holds it. Cost: one
// uncontended lock and unlock per part (docs/benchmarks.md).
//
// Guarantees: messages arrive whole, in order, exactly once; any size up to
// the pair's `max_message` (checked on both sides before anything is
// allocated). One thread may send while another receives on the same
// endpoint; concurrent senders (or receivers) need a lock.
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
#include <memory>
#include <new>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <boost/interprocess/creation_tags.hpp>
#include <boost/interprocess/exceptions.hpp>
#include <boost/interprocess/ipc/message_queue.hpp>
#include <boost/interprocess/permissions.hpp>

#include <crew/detail/byte_ring.hpp>
#include <crew/detail/fd_util.hpp>
#include <crew/detail/memory_endpoint.hpp>
#include <crew/detail/peer_liveness.hpp>
#include <crew/detail/random_name.hpp>
#include <crew/detail/shared_signal.hpp>
#include <crew/errors.hpp>
#include <crew/ipc/channel.hpp>
#include <crew/ipc/mutex.hpp>
#include <crew/options.hpp>

namespace crew::detail {

/// Bytes per queue slot: the largest part a message is cut into. 64 KiB
/// parts make the per-part cost (lock, index update, wake-up check) small
/// next to the copy, and keep the copy a peer makes under the queue's mutex
/// short.
inline constexpr std::size_t mq_slot_bytes = std::size_t{64} << 10;

/// Slots per queue: 4 MiB in flight per direction, so a sender streams a
/// large message for a while before it waits for the receiver.
inline constexpr std::size_t mq_slot_count = 64;

/// Counters and wake-up words of one direction (parts sent by side d).
struct MqDirection {
    RingIndex sent;                      // parts put into the queue; stored by the sender
    RingIndex received;                  // parts taken out; stored by the receiver
    CacheLineSignal<FutexSignal> data;   // the receiver sleeps here, the sender notifies
    CacheLineSignal<FutexSignal> space;  // the sender sleeps here, the receiver notifies
    // Held around every Boost call on this direction's queue. Boost's own
    // queue mutex is not robust: a process that dies inside it leaves it
    // locked for ever. This one is: the peer's next call learns of the death
    // (owner_died) instead of blocking in Boost, and a timed receive waits
    // for it no longer than its deadline (a stopped peer).
    ipc::Mutex guard;
};

/// The control block next to the two queues.
struct MqControl {
    static constexpr std::uint64_t magic_value = 0x6372'6577'6d71'6331;  // "crewmqc1"

    std::atomic<std::uint64_t> magic{0};  // stored last by pair() (release)
    std::uint64_t slot_bytes = mq_slot_bytes;
    std::uint64_t slot_count = mq_slot_count;
    PeerSide side[2];
    MqDirection dir[2];  // dir[d]: parts sent by side d
};

inline constexpr std::size_t mq_control_bytes = (sizeof(MqControl) + 4095) / 4096 * 4096;

/// How MessageQueue names itself in errors.
inline constexpr ChannelWords mq_words{"mq", "an", "queue"};

}  // namespace crew::detail

namespace crew::ipc {

/// A channel of two Boost.Interprocess message queues. Models
/// crew::ipc::channel.
///
/// Takes no Sync policy, unlike BasicSharedMemory: its waits are crew's own
/// futex signals around Boost's try_send()/try_receive() (Boost's queue has
/// its own mutex, which no policy replaces), so
/// crew::ipc::with_sync_t<MessageQueue, S> is MessageQueue for every S.
class MessageQueue {
    using Queue = boost::interprocess::message_queue;

public:
    static constexpr std::string_view name = "mq";

    /// The largest part a queue slot holds; longer messages travel in parts.
    static constexpr std::size_t slot_bytes = detail::mq_slot_bytes;
    /// Slots per direction.
    static constexpr std::size_t slot_count = detail::mq_slot_count;

    /// One end: sends on one queue, receives from the other. Move-only;
    /// unmaps its queues when destroyed. receive_bytes(),
    /// receive_bytes_until() and readable_fd() (-1: there is nothing to poll)
    /// come from detail::MemoryEndpoint.
    class Endpoint : public detail::MemoryEndpoint<Endpoint> {
    public:
        /// An empty (closed) endpoint.
        Endpoint() noexcept = default;
        Endpoint(Endpoint&& other) noexcept { swap(other); }
        Endpoint& operator=(Endpoint&& other) noexcept { return this->move_assign(*this, other); }
        ~Endpoint() { close(); }

        /// Send one whole message; blocks while the queue is full.
        /// crew::ChannelError if the peer closed its end or its process is
        /// gone, or the message is longer than max_message.
        void send_bytes(std::span<const std::byte> bytes);

        /// Tell the peer this side is closed (when this process speaks for
        /// it: as for crew::ipc::SharedMemory::Endpoint::close()), remove the
        /// names if this is pair()'s first end in the process that made it,
        /// and unmap; idempotent. A peer blocked in receive wakes and gets
        /// crew::ChannelError once it has taken every message sent before.
        void close() noexcept;

        /// Record the calling process as the one using this side (so the peer
        /// can tell when it dies), and remove the names when this is not the
        /// process that made the pair. Happens by itself on the first send or
        /// receive in a process and in import_handle(); call it first thing
        /// in a forked child that does not exec. A child that will exec must
        /// not: it needs the names for export_handle().
        void bind_to_current_process() {
            core_.require_open("bind");
            claim();
        }

        /// Return "mq:<name>:<side>" for import_handle() in a process started
        /// with exec(). The queues must still have their names (see the top
        /// of this header): call it in the child between fork() and exec(),
        /// before the channel is used there. crew::ChannelError when the
        /// names are already gone.
        [[nodiscard]] std::string export_handle();

        /// Open the queues named by export_handle()'s text, bind the side to
        /// this process and remove the names. crew::ChannelError if the text is
        /// not an mq handle, or names no crew queues of this user (a handle
        /// is good for one import).
        [[nodiscard]] static Endpoint import_handle(std::string_view text,
                                                    std::size_t max_message = Options{}.max_message_size);

    private:
        friend class MessageQueue;
        friend class detail::MemoryEndpoint<Endpoint>;
        using Clock = std::chrono::steady_clock;
        static constexpr std::size_t header_size = detail::LengthHeader::size;

        /// Attach to `control` (this endpoint's own mapping of it) as `side`.
        void attach(detail::MqControl* control, int side, std::string base, std::size_t max_message) noexcept {
            control_ = control;
            base_name_ = std::move(base);
            core_ = detail::MemoryEndpointCore<detail::mq_words>(control->side, side, max_message);
        }

        void swap(Endpoint& o) noexcept {
            std::swap(out_queue_, o.out_queue_);
            std::swap(in_queue_, o.in_queue_);
            std::swap(control_, o.control_);
            std::swap(base_name_, o.base_name_);
            core_.swap(o.core_);
            names_removed_.store(o.names_removed_.exchange(names_removed_.load(std::memory_order_relaxed),
                                                           std::memory_order_relaxed),
                                 std::memory_order_relaxed);
            std::swap(send_stage_, o.send_stage_);
            std::swap(receive_stage_, o.receive_stage_);
        }

        void claim() {
            core_.link.claim();
            // This process and the creator both have the names open.
            if (!core_.link.owner().in_creator()) remove_names();
        }
        void claim_if_needed() {
            if (core_.link.owner().needs_claim()) claim();
        }

        /// Remove the three names; errors (already gone) do not matter.
        void remove_names() noexcept;

        int side() const noexcept { return core_.link.side(); }

        bool receive_impl(std::vector<std::byte>& out, const Clock::time_point* deadline);
        /// Take one part into `buffer` (room for slot_bytes); its size, or
        /// npos when the deadline passed first.
        std::size_t receive_part(std::byte* buffer, const Clock::time_point* deadline, std::size_t got);
        void send_part(const std::byte* data, std::size_t size);
        template <class Op>
        bool guarded(detail::MqDirection& dir, const Clock::time_point* deadline, detail::Direction direction,
                     Op op);
        /// Run `attempt` (a try_send or try_receive) until it succeeds, trying
        /// again each time the peer moves `progress`; wait_for_peer() decides.
        template <class Attempt>
        detail::PeerWait retry_on_progress(detail::Direction direction, const detail::RingIndex& progress,
                                           detail::CacheLineSignal<detail::FutexSignal>& signal,
                                           const Clock::time_point* deadline, Attempt attempt);

        std::unique_ptr<Queue> out_queue_;  // parts this side sends
        std::unique_ptr<Queue> in_queue_;   // parts the peer sends
        detail::MqControl* control_ = nullptr;  // null: closed (and core_ detached)
        std::string base_name_;                 // "crew-mq-<pid>-<hex>"
        detail::MemoryEndpointCore<detail::mq_words> core_;
        std::atomic<bool> names_removed_{false};  // this object removed them (others may have)
        std::vector<std::byte> send_stage_;     // the first part: header and the payload's start
        std::vector<std::byte> receive_stage_;  // a part smaller than the room left in `out`
    };

    /// Make a connected pair: first is the parent's end, second the child's.
    /// Messages longer than `max_message` bytes are refused on both sides.
    /// Both sides initially name the calling process as their user.
    [[nodiscard]] static std::pair<Endpoint, Endpoint> pair(std::size_t max_message = Options{}.max_message_size);

private:
    [[noreturn]] static void fail_errno(const std::string& what, int err) {
        throw ChannelError("crew: " + what + ": " + std::system_category().message(err));
    }

    static std::string queue_name(const std::string& base, int side) { return base + "-" + std::to_string(side); }
    static std::string control_name(const std::string& base) { return "/" + base + "-c"; }

    /// "crew-mq-<pid>-<32 hex digits from getrandom()>".
    static std::string unique_base_name();

    /// Maps the control block of an open shm fd.
    static detail::MqControl* map_control(int fd) {
        void* p = ::mmap(nullptr, detail::mq_control_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) fail_errno("cannot map an mq channel's control block (mmap)", errno);
        return static_cast<detail::MqControl*>(p);
    }
};

static_assert(channel<MessageQueue>);

}  // namespace crew::ipc

namespace crew::detail {

/// Names younger than this are never taken for orphans (see the header).
inline constexpr std::chrono::seconds mq_orphan_grace{1};

/// Removes /dev/shm/crew-mq-<pid>-<32 hex>-{0,1,c} left by creators that died
/// between pair() and their peer's first use: only this user's, only when
/// process <pid> is gone, only when older than mq_orphan_grace. Costs one
/// directory scan; errors are ignored (the names are then left, as before).
inline void remove_orphaned_mq_names() noexcept {
    DIR* dir = ::opendir("/dev/shm");
    if (dir == nullptr) return;
    const uid_t me = ::geteuid();
    const pid_t self = ::getpid();
    const auto now = std::chrono::system_clock::now();
    constexpr std::string_view prefix = "crew-mq-";
    while (const dirent* entry = ::readdir(dir)) {
        const std::string_view name = entry->d_name;
        if (name.substr(0, prefix.size()) != prefix) continue;
        // <pid>-<32 hex>-<0|1|c>
        std::string_view rest = name.substr(prefix.size());
        int pid = 0;
        const auto [end, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), pid);
        if (ec != std::errc{} || pid <= 0 || pid == self) continue;
        rest.remove_prefix(static_cast<std::size_t>(end - rest.data()));
        if (rest.size() != 1 + 32 + 2 || rest[0] != '-' || rest[33] != '-') continue;
        if (!std::all_of(rest.begin() + 1, rest.begin() + 33,
                         [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }))
            continue;
        if (rest[34] != '0' && rest[34] != '1' && rest[34] != 'c') continue;
        struct stat st {};
        if (::fstatat(::dirfd(dir), entry->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
        if (!S_ISREG(st.st_mode) || st.st_uid != me) continue;
        const auto modified = std::chrono::system_clock::time_point(
            std::chrono::duration_cast<std::chrono::system_clock::duration>(
                std::chrono::seconds(st.st_mtim.tv_sec) + std::chrono::nanoseconds(st.st_mtim.tv_nsec)));
        if (now - modified < mq_orphan_grace) continue;
        if (::kill(pid, 0) == 0 || errno != ESRCH) continue;  // alive (or not ours to ask): keep
        ::unlinkat(::dirfd(dir), entry->d_name, 0);
    }
    ::closedir(dir);
}

}  // namespace crew::detail

namespace crew::ipc {

// ---------------------------------------------------------------------------
// Implementation
// ---------------------------------------------------------------------------

inline std::string MessageQueue::unique_base_name() {
    return detail::unique_name<ChannelError>("crew-mq-", "a name for an mq channel");
}

inline std::pair<MessageQueue::Endpoint, MessageQueue::Endpoint> MessageQueue::pair(std::size_t max_message) {
    namespace bip = boost::interprocess;
    detail::remove_orphaned_mq_names();
    const std::string base = unique_base_name();
    const std::string control = control_name(base);

    // O_EXCL: never adopt an object someone else made under this name.
    // tmpfs reserves nothing: a queue whose pages /dev/shm cannot supply
    // later is a SIGBUS in the sender (and Boost's constructor touches a page
    // per slot). So: look before creating, and reserve everything after.
    // (Boost keeps its exact size private: a slot, its header and index entry.)
    const std::size_t needed = 2 * (slot_count * (slot_bytes + 128) + 8192) + detail::mq_control_bytes;
    auto no_space = [&] {
        return ChannelError("crew: not enough free space in /dev/shm for an mq channel (" + std::to_string(needed) +
                            " bytes for its two queues and control block); free some (df /dev/shm), mount "
                            "/dev/shm larger, or use a channel with no names (SharedMemory, Pipe, Socket)");
    };
    if (struct statvfs vfs {}; ::statvfs("/dev/shm", &vfs) == 0 && vfs.f_blocks != 0 &&
                               static_cast<unsigned long long>(vfs.f_bavail) * vfs.f_frsize < needed)
        throw no_space();
    int fd = detail::above_stdio(::shm_open(control.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (fd < 0) fail_errno("cannot create an mq channel's control block (shm_open \"" + control + "\")", errno);
    detail::MqControl* maps[2] = {nullptr, nullptr};
    std::unique_ptr<Queue> queues[2][2];  // [endpoint][0: sends on, 1: receives from]
    auto cleanup = [&] {
        if (fd >= 0) ::close(fd);
        for (auto& row : queues)
            for (auto& q : row) q.reset();
        for (auto* m : maps)
            if (m != nullptr) ::munmap(m, detail::mq_control_bytes);
        Queue::remove(queue_name(base, 0).c_str());
        Queue::remove(queue_name(base, 1).c_str());
        ::shm_unlink(control.c_str());
    };
    try {
        // shm_open's mode is filtered by the umask; fchmod makes it exactly 0600.
        if (::fchmod(fd, 0600) != 0) fail_errno("cannot set the mode of an mq channel's control block", errno);
        if (::ftruncate(fd, static_cast<off_t>(detail::mq_control_bytes)) != 0)
            fail_errno("cannot size an mq channel's control block (ftruncate)", errno);
        if (const int rc = ::posix_fallocate(fd, 0, static_cast<off_t>(detail::mq_control_bytes)); rc != 0) {
            if (rc == ENOSPC) throw no_space();
            fail_errno("cannot reserve an mq channel's control block (posix_fallocate)", rc);
        }
        maps[0] = map_control(fd);
        maps[1] = map_control(fd);
        ::close(fd);  // the mappings keep the memory; no descriptor to leak
        fd = -1;

        auto* block = ::new (maps[0]) detail::MqControl;
        const auto me = static_cast<std::int32_t>(::getpid());
        block->side[0].pid.store(me, std::memory_order_relaxed);
        block->side[1].pid.store(me, std::memory_order_relaxed);
        block->magic.store(detail::MqControl::magic_value, std::memory_order_release);

        const bip::permissions owner_only(0600);
        for (int side = 0; side < 2; ++side)
            queues[side][0] = std::make_unique<Queue>(bip::create_only, queue_name(base, side).c_str(),
                                                      slot_count, slot_bytes, owner_only);
        // Each endpoint maps the queues on its own, so either can be closed
        // or moved on its own.
        queues[0][1] = std::make_unique<Queue>(bip::open_only, queue_name(base, 1).c_str());
        queues[1][1] = std::make_unique<Queue>(bip::open_only, queue_name(base, 0).c_str());
        // Reserve every page of both queues now (see above).
        for (int side = 0; side < 2; ++side) {
            const std::string object = "/" + queue_name(base, side);
            const int q = detail::above_stdio(::shm_open(object.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW, 0));
            if (q < 0) fail_errno("cannot open an mq channel's queue to reserve it (shm_open \"" + object + "\")", errno);
            struct stat qs {};
            int rc = ::fstat(q, &qs) == 0 ? 0 : errno;
            if (rc == 0) rc = ::posix_fallocate(q, 0, qs.st_size);
            ::close(q);
            if (rc == ENOSPC) throw no_space();
            if (rc != 0) fail_errno("cannot reserve an mq channel's queue (posix_fallocate)", rc);
        }
    } catch (const bip::interprocess_exception& e) {
        cleanup();
        throw ChannelError(std::string("crew: cannot create the message queues of an mq channel: ") + e.what() +
                           "; check free space in /dev/shm and the limit on open files");
    } catch (...) {
        cleanup();
        throw;
    }

    std::pair<Endpoint, Endpoint> ends;
    for (int side = 0; side < 2; ++side) {
        Endpoint& e = side == 0 ? ends.first : ends.second;
        e.out_queue_ = std::move(queues[side][0]);
        e.in_queue_ = std::move(queues[side][1]);
        e.attach(std::launder(maps[side]), side, base, max_message);
        e.core_.link.owner().created();
    }
    return ends;
}

inline void MessageQueue::Endpoint::remove_names() noexcept {
    // Once per object, also when a sending and a receiving thread get here together.
    if (base_name_.empty() || names_removed_.exchange(true, std::memory_order_relaxed)) return;
    try {
        Queue::remove(queue_name(base_name_, 0).c_str());
        Queue::remove(queue_name(base_name_, 1).c_str());
    } catch (...) {
        // Boost reports failure by return value; nothing else to do here.
    }
    ::shm_unlink(control_name(base_name_).c_str());
}

inline void MessageQueue::Endpoint::close() noexcept {
    if (control_ == nullptr) return;
    if (core_.link.mark_closed()) {
        // Wake a peer that waits for parts from us or for slots we would free.
        control_->dir[side()].data.signal.notify_all();
        control_->dir[1 - side()].space.signal.notify_all();
    }
    if (side() == 0 && core_.link.owner().in_creator()) remove_names();
    out_queue_.reset();
    in_queue_.reset();
    ::munmap(control_, detail::mq_control_bytes);
    control_ = nullptr;
    base_name_.clear();
    core_.reset();
    names_removed_.store(false, std::memory_order_relaxed);
    send_stage_ = {};
    receive_stage_ = {};
}

template <class Op>
bool MessageQueue::Endpoint::guarded(detail::MqDirection& dir, const Clock::time_point* deadline,
                                     detail::Direction direction, Op op) {
    ipc::Mutex& guard = dir.guard;
    try {
        if (deadline == nullptr) {
            guard.lock();
        } else if (!guard.try_lock_until(*deadline)) {
            return false;  // a stopped peer holds it: the caller's deadline decides
        }
    } catch (const Error& e) {  // unrecoverable: a death we reported before
        core_.errors.fail(direction, std::string("crew: the mq channel is unusable: ") + e.what());
    }
    if (guard.previous_owner_died()) {
        guard.mark_consistent();
        guard.unlock();
        core_.errors.fail(direction,
                          "crew: the peer process died in the middle of an operation on the mq channel's queue "
                          "(Boost's queue lock may be held for ever); the channel cannot be used any more");
    }
    bool ok = false;
    try {
        ok = op();
    } catch (...) {
        guard.unlock();
        throw;
    }
    guard.unlock();
    return ok;
}

template <class Attempt>
detail::PeerWait MessageQueue::Endpoint::retry_on_progress(detail::Direction direction,
                                                           const detail::RingIndex& progress,
                                                           detail::CacheLineSignal<detail::FutexSignal>& signal,
                                                           const Clock::time_point* deadline, Attempt attempt) {
    std::uint64_t seen = progress.value.load(std::memory_order_acquire);
    if (attempt()) return detail::PeerWait::ready;
    return core_.link.wait(
        direction,
        [&] {
            const std::uint64_t now = progress.value.load(std::memory_order_acquire);
            if (now == seen) return false;
            seen = now;
            return attempt();
        },
        signal.signal, deadline);
}

inline void MessageQueue::Endpoint::send_part(const std::byte* data, std::size_t size) {
    auto& dir = control_->dir[side()];
    // Full: try again each time the receiver takes a part.
    core_.fail_send_if_ended(retry_on_progress(detail::Direction::send, dir.received, dir.space, nullptr, [&] {
        return guarded(dir, nullptr, detail::Direction::send, [&] {
            try {
                return out_queue_->try_send(data, size, 0);
            } catch (const boost::interprocess::interprocess_exception& e) {
                core_.errors.fail_send(std::string("crew: sending on the mq channel failed: ") + e.what());
            }
        });
    }));
    dir.sent.value.store(dir.sent.value.load(std::memory_order_relaxed) + 1, std::memory_order_release);
    dir.data.signal.notify_one();
}

inline void MessageQueue::Endpoint::send_bytes(std::span<const std::byte> payload) {
    core_.check_send(payload.size());
    claim_if_needed();
    core_.check_peer_before_send();

    // First part: the length, then as much payload as fits; then full slots.
    const std::size_t first = std::min(payload.size(), slot_bytes - header_size);
    send_stage_.resize(header_size + first);
    detail::LengthHeader::encode(static_cast<std::uint64_t>(payload.size()), send_stage_.data());
    if (first > 0) std::memcpy(send_stage_.data() + header_size, payload.data(), first);
    send_part(send_stage_.data(), send_stage_.size());
    for (std::size_t off = first; off < payload.size(); off += slot_bytes)
        send_part(payload.data() + off, std::min(slot_bytes, payload.size() - off));
}

inline std::size_t MessageQueue::Endpoint::receive_part(std::byte* buffer, const Clock::time_point* deadline,
                                                        std::size_t got) {
    auto& dir = control_->dir[1 - side()];
    std::size_t size = 0;
    // Empty: try again each time the sender puts a part in.
    const auto r = retry_on_progress(detail::Direction::receive, dir.sent, dir.data, deadline, [&] {
        boost::interprocess::message_queue::size_type received = 0;
        unsigned int priority = 0;
        const bool ok = guarded(dir, deadline, detail::Direction::receive, [&] {
            try {
                return in_queue_->try_receive(buffer, slot_bytes, received, priority);
            } catch (const boost::interprocess::interprocess_exception& e) {
                core_.errors.fail_receive(std::string("crew: receiving from the mq channel failed: ") + e.what());
            }
        });
        if (ok) size = static_cast<std::size_t>(received);
        return ok;
    });
    if (r == detail::PeerWait::timeout) return static_cast<std::size_t>(-1);
    if (r != detail::PeerWait::ready) core_.peer_ended_while_receiving(r, got);
    dir.received.value.store(dir.received.value.load(std::memory_order_relaxed) + 1, std::memory_order_release);
    dir.space.signal.notify_one();
    // The sender has the names open (it put this part in): nobody needs them.
    if (!names_removed_.load(std::memory_order_relaxed)) remove_names();
    return size;
}

inline bool MessageQueue::Endpoint::receive_impl(std::vector<std::byte>& out, const Clock::time_point* deadline) {
    constexpr std::size_t timed_out = static_cast<std::size_t>(-1);
    core_.check_receive();
    claim_if_needed();
    if (receive_stage_.size() < slot_bytes) receive_stage_.resize(slot_bytes);
    detail::PartialMessage& in = core_.incoming;

    if (in.in_body) {
        in.resume(out);
    } else {
        const std::size_t size = receive_part(receive_stage_.data(), deadline, 0);
        if (size == timed_out) {
            out.clear();
            return false;
        }
        if (size < header_size)
            core_.errors.fail_receive("crew: the mq channel delivered a first part of " + std::to_string(size) +
                                      " bytes, shorter than the 8-byte length; the queue is corrupt");
        const std::uint64_t length = detail::LengthHeader::decode(receive_stage_.data());
        core_.limit.check_received(detail::mq_words, length, core_.errors);
        if (size - header_size > length)
            core_.errors.fail_receive(
                "crew: the mq channel delivered a first part longer than its message; the queue is corrupt");
        in.start_body(static_cast<std::size_t>(length), out);
        out.insert(out.end(), receive_stage_.begin() + header_size,
                   receive_stage_.begin() + static_cast<std::ptrdiff_t>(size));
    }

    while (out.size() < in.length) {
        const std::size_t have = out.size();
        const std::size_t left = in.length - have;
        std::size_t size;
        if (left >= slot_bytes) {
            // Room for any part: take it straight into `out`.
            out.resize(have + slot_bytes);
            size = receive_part(out.data() + have, deadline, have);
            out.resize(size == timed_out ? have : have + size);
        } else {
            size = receive_part(receive_stage_.data(), deadline, have);
            if (size != timed_out && size <= left)
                out.insert(out.end(), receive_stage_.begin(), receive_stage_.begin() + static_cast<std::ptrdiff_t>(size));
        }
        if (size == timed_out) {
            in.park(out);
            return false;
        }
        if (size == 0 || size > left)
            core_.errors.fail_receive("crew: the mq channel delivered a part of " + std::to_string(size) + " bytes where " +
                         std::to_string(left) + " bytes of the message were left; the queue is corrupt");
    }
    in.reset();
    return true;
}

inline std::string MessageQueue::Endpoint::export_handle() {
    core_.require_open("export");
    // The importer opens the queues by name: they must still be there.
    const int fd = detail::above_stdio(::shm_open(control_name(base_name_).c_str(), O_RDONLY | O_CLOEXEC, 0));
    if (fd < 0)
        throw ChannelError(
            "crew: cannot export this mq endpoint: its queues' names were already removed (the channel was used or "
            "bound in another process, or a message was received); call export_handle() in the child before "
            "anything else uses the channel, or use a channel with no names (SharedMemory, Pipe, Socket)");
    ::close(fd);
    core_.link.owner().exported();
    return std::string(name) + ":" + base_name_ + ":" + std::to_string(side());
}

inline MessageQueue::Endpoint MessageQueue::Endpoint::import_handle(std::string_view text,
                                                                    std::size_t max_message) {
    namespace bip = boost::interprocess;
    auto refuse = [&](const std::string& why) {
        return ChannelError("crew: \"" + std::string(text) + "\" is not an mq handle (" + why +
                            "); pass import_handle() exactly the text export_handle() returned, once");
    };
    // "mq:crew-mq-<pid>-<32 hex>:<side>", nothing else: the name must not
    // point anywhere but at crew's own queues.
    std::string_view rest = text;
    const std::string_view prefix = "mq:crew-mq-";
    if (rest.substr(0, prefix.size()) != prefix) throw refuse("it must start with \"mq:crew-mq-\"");
    rest.remove_prefix(prefix.size());
    std::size_t digits = 0;
    while (digits < rest.size() && rest[digits] >= '0' && rest[digits] <= '9') ++digits;
    if (digits == 0 || digits > 10 || digits >= rest.size() || rest[digits] != '-')
        throw refuse("expected the creator's pid after \"crew-mq-\"");
    rest.remove_prefix(digits + 1);
    if (rest.size() != 32 + 2 || rest[32] != ':' || (rest[33] != '0' && rest[33] != '1'))
        throw refuse("expected 32 hex digits, then \":0\" or \":1\" (the side)");
    for (std::size_t i = 0; i < 32; ++i)
        if (!((rest[i] >= '0' && rest[i] <= '9') || (rest[i] >= 'a' && rest[i] <= 'f')))
            throw refuse("expected 32 lower-case hex digits");
    const int side = rest[33] - '0';
    const std::string base(text.substr(3, text.size() - 3 - 2));

    const std::string control = control_name(base);
    const int fd = detail::above_stdio(::shm_open(control.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW, 0));
    if (fd < 0) {
        const int err = errno;
        throw refuse("no such queues: " + std::system_category().message(err) +
                     "; they are removed once the peer's end was closed or someone imported them");
    }
    struct stat st {};
    const bool ours = ::fstat(fd, &st) == 0 && st.st_uid == ::geteuid() &&
                      static_cast<std::size_t>(st.st_size) == detail::mq_control_bytes;
    detail::MqControl* control_block = nullptr;
    if (ours) {
        try {
            control_block = std::launder(map_control(fd));
        } catch (...) {
            ::close(fd);
            throw;
        }
    }
    ::close(fd);
    if (control_block == nullptr ||
        control_block->magic.load(std::memory_order_acquire) != detail::MqControl::magic_value ||
        control_block->slot_bytes != slot_bytes || control_block->slot_count != slot_count) {
        if (control_block != nullptr) ::munmap(control_block, detail::mq_control_bytes);
        throw refuse("it names something that is not a crew mq channel of this crew version");
    }

    Endpoint e;
    e.attach(control_block, side, base, max_message);  // from here on `e` cleans up
    try {
        e.out_queue_ = std::make_unique<Queue>(bip::open_only, queue_name(base, side).c_str());
        e.in_queue_ = std::make_unique<Queue>(bip::open_only, queue_name(base, 1 - side).c_str());
    } catch (const bip::interprocess_exception& ex) {
        e.names_removed_.store(true);  // a failed import leaves the names to their owner
        throw refuse(std::string("cannot open its queues: ") + ex.what());
    }
    for (const Queue* q : {e.out_queue_.get(), e.in_queue_.get()})
        if (q->get_max_msg_size() != slot_bytes || q->get_max_msg() != slot_count) {
            e.names_removed_.store(true);
            throw refuse("its queues are not a crew mq channel's");
        }
    e.claim();  // records our pid and removes the names
    return e;
}

}  // namespace crew::ipc
