// crew/detail/memory_endpoint.hpp — the part of an endpoint that
// crew::ipc::SharedMemory and crew::ipc::MessageQueue share: both keep their
// state in memory the two processes map, where nothing tells a side that its
// peer ended (no EOF, no EPIPE).
//
// PeerLink holds one side's link to the other: which side it is, whether this
// process speaks for it (SideOwner), the pidfd watches, and the rate-limited
// look at the peer before a send. MemoryEndpointCore adds what every framed
// endpoint keeps (crew/detail/endpoint_core.hpp: limit, sticky errors, the
// message a timed receive left halfway) and the steps and reports both
// channels share, worded with the channel's name. The channel keeps what
// differs: how bytes travel (a ring, queue parts), pair(), export and import,
// and what close() tears down. MemoryEndpoint is the public members the two
// Endpoint classes have in common.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <sys/types.h>
#include <unistd.h>

#include <crew/detail/endpoint_core.hpp>
#include <crew/detail/peer_liveness.hpp>
#include <crew/ipc/channel.hpp>

namespace crew::detail {

/// One side's link to its peer through the two PeerSide records in the shared
/// mapping. Not thread-safe as a whole: the send path uses the send watch and
/// the check time, the receive path the receive watch; claiming is safe from
/// both (SideOwner). Move-only; it owns nothing the mapping's owner frees, so
/// std::swap() of two links is a correct swap.
class PeerLink {
public:
    using Clock = std::chrono::steady_clock;

    PeerLink() noexcept = default;
    /// `sides` is the mapping's PeerSide[2]; this endpoint is `side`.
    PeerLink(PeerSide* sides, int side) noexcept : sides_(sides), side_(side) {}

    [[nodiscard]] bool attached() const noexcept { return sides_ != nullptr; }
    [[nodiscard]] int side() const noexcept { return side_; }
    [[nodiscard]] const PeerSide& peer() const noexcept { return sides_[1 - side_]; }

    SideOwner& owner() noexcept { return owner_; }
    [[nodiscard]] const SideOwner& owner() const noexcept { return owner_; }

    /// Record the calling process as the one using this side.
    void claim() noexcept {
        sides_[side_].pid.store(static_cast<std::int32_t>(::getpid()), std::memory_order_release);
        owner_.claim();
    }

    /// At close(): tell the peer this side is closed, when this process speaks
    /// for it. True when it did (the caller then wakes the peer's waits).
    bool mark_closed() noexcept {
        if (!owner_.speaks_for_side()) return false;
        sides_[side_].closed.store(1, std::memory_order_seq_cst);
        return true;
    }

    /// Before a send: has the peer ended? Its close shows in the mapping at
    /// once. Its death shows nowhere there, and asking the kernel costs a
    /// syscall: look at most once per peer_check_interval (a waiting send
    /// looks on its own). PeerWait::ready when the peer is still there.
    PeerWait look_before_send() {
        const PeerSide& other = peer();
        if (other.closed.load(std::memory_order_acquire) != 0) return PeerWait::peer_closed;
        if (const auto now = Clock::now(); now >= next_send_check_) {
            next_send_check_ = now + peer_check_interval;
            if (send_watch_.gone(static_cast<pid_t>(other.pid.load(std::memory_order_acquire))))
                return PeerWait::peer_gone;
        }
        return PeerWait::ready;
    }

    /// wait_for_peer() with this side's peer and the watch of `direction`.
    template <class Ready, class Signal>
    PeerWait wait(Direction direction, Ready&& ready, Signal& signal, const Clock::time_point* deadline) {
        return wait_for_peer(std::forward<Ready>(ready), signal, peer(),
                             direction == Direction::send ? send_watch_ : receive_watch_, deadline);
    }

    /// Detach (after the mapping is gone) and close the pidfds.
    void reset() noexcept {
        sides_ = nullptr;
        side_ = 0;
        owner_.reset();
        send_watch_.reset();
        receive_watch_.reset();
        next_send_check_ = {};
    }

private:
    PeerSide* sides_ = nullptr;
    int side_ = 0;
    SideOwner owner_;
    PeerWatch send_watch_;
    PeerWatch receive_watch_;
    Clock::time_point next_send_check_{};  // a send looks at the peer's process after this
};

static_assert(std::is_nothrow_move_constructible_v<PeerLink> && std::is_nothrow_move_assignable_v<PeerLink>,
              "endpoints move by swapping their PeerLink");

/// The skeleton of a SharedMemory or MessageQueue endpoint; `Words` names the
/// channel in every report.
template <const ChannelWords& Words>
class MemoryEndpointCore {
public:
    MemoryEndpointCore() noexcept = default;
    MemoryEndpointCore(PeerSide* sides, int side, std::size_t max_message) noexcept
        : link(sides, side), limit(max_message) {}

    PeerLink link;
    MessageLimit limit;
    StickyErrors errors;
    PartialMessage incoming;

    [[nodiscard]] bool is_open() const noexcept { return link.attached(); }

    void require_open(const char* action) const {
        if (!is_open()) throw ChannelError(closed_endpoint_text(Words.name, action));
    }

    /// The start of every send, before the channel claims its side: open, no
    /// earlier send error, within the limit.
    void check_send(std::size_t size) const {
        require_open("send");
        errors.check_send();
        limit.check_send(Words, size);
    }

    /// After the claim: refuse to send to a peer that ended.
    void check_peer_before_send() { fail_send_if_ended(link.look_before_send()); }

    /// After a send waited for room (no deadline: never a timeout).
    void fail_send_if_ended(PeerWait r) {
        if (r == PeerWait::peer_closed) errors.fail_send(peer_ended_on_send_text(Words.name, PeerEnd::closed));
        if (r == PeerWait::peer_gone) errors.fail_send(peer_ended_on_send_text(Words.name, PeerEnd::gone));
    }

    /// The start of every receive, before the channel claims its side.
    void check_receive() const {
        require_open("receive");
        errors.check_receive();
    }

    /// A receive's wait ended with the peer closed or gone (`why`), `got`
    /// bytes into the current header or payload.
    [[noreturn]] void peer_ended_while_receiving(PeerWait why, std::size_t got) {
        const PeerEnd end = why == PeerWait::peer_closed ? PeerEnd::closed : PeerEnd::gone;
        if (incoming.at_boundary()) errors.fail_receive(peer_ended_text(Words.name, end));
        errors.fail_receive(middle_of_message_text(Words.name, end, got, incoming.in_body, incoming.length));
    }

    void swap(MemoryEndpointCore& o) noexcept {
        std::swap(link, o.link);
        std::swap(limit, o.limit);
        errors.swap(o.errors);
        std::swap(incoming, o.incoming);
    }

    /// After close(): back to the state of a default-constructed endpoint.
    void reset() noexcept {
        link.reset();
        limit = MessageLimit{};
        errors.clear();
        incoming.reset();
    }
};

/// Base of SharedMemory's and MessageQueue's Endpoint (`Derived`, which has
/// receive_impl(out, deadline), swap() and close(), and befriends this
/// class): the receive members, readable_fd(), typed send/receive
/// (ipc::TypedEndpoint), and move assignment by swap.
template <class Derived>
class MemoryEndpoint : public ipc::TypedEndpoint<Derived> {
public:
    /// Receive one whole message into `out`; blocks. crew::ChannelError
    /// when the peer closed its end or its process is gone (after every
    /// message it sent was received), or the framing is broken.
    void receive_bytes(std::vector<std::byte>& out) { (void)self().receive_impl(out, nullptr); }

    /// As receive_bytes(), but returns false once `deadline` passed with no
    /// complete message (`out` is then left empty); what was taken of a
    /// message stays in the endpoint and the next receive continues it. A
    /// deadline in the past still takes a message that is already waiting.
    bool receive_bytes_until(std::vector<std::byte>& out, std::chrono::steady_clock::time_point deadline) {
        return self().receive_impl(out, &deadline);
    }

    /// Always -1: shared memory and message queues have no fd that polls
    /// readable.
    [[nodiscard]] int readable_fd() const noexcept { return -1; }

protected:
    MemoryEndpoint() noexcept = default;

    /// `self = std::move(other)`: the old state of `self` closes with `gone`.
    static Derived& move_assign(Derived& self, Derived& other) noexcept {
        if (&self != &other) {
            Derived gone(std::move(other));
            self.swap(gone);
        }
        return self;
    }

private:
    Derived& self() noexcept { return static_cast<Derived&>(*this); }
};

}  // namespace crew::detail
