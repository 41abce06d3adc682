// crew/detail/mpi_wire.hpp — how crew talks MPI: the process-wide MPI state
// (crew's own duplicated communicator, with MPI_ERRORS_RETURN), MPI errors as
// crew::ChannelError, messages of any size (parts of at most
// mpi_part_bytes, so over 2^31-1 bytes too), non-blocking sends kept until
// MPI is done with them, the start-up identity check, and how an idle loop
// waits.
//
// Messages (one logical message = one or more MPI messages with the same
// source, destination and tag; MPI keeps them in order):
//   first part = u64 n (bytes after this header), then the first bytes of
//   the payload; further parts carry the rest, in order.
//   payload    = u8 MpiKind, then the kind's fields (see mpi_rank.hpp).
// Rank 0 sends everything to a serving rank with mpi_control_tag (so the rank
// reads it in order); a serving rank answers an executor on that executor's
// tag (so each executor's thread on rank 0 reads only its own answers).
#pragma once

#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1  // Open MPI's deprecated C++ bindings do not build with -Wextra -Werror
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <elf.h>
#include <link.h>

#include <crew/codec.hpp>
#include <crew/detail/futex.hpp>
#include <crew/errors.hpp>

namespace crew::detail {

enum class MpiKind : std::uint8_t {
    open = 1,     ///< rank 0 -> rank: start an executor's local worker processes
    batch = 2,    ///< rank 0 -> rank: tasks for one slot
    kill = 3,     ///< rank 0 -> rank: Shutdown::cancel_pending or kill (u8) on an executor's local workers
    close = 4,    ///< rank 0 -> rank: stop an executor's local workers
    stop = 5,     ///< rank 0 -> rank: the session ends; finalize and exit
    opened = 6,   ///< rank -> rank 0: answer to open (u8 ok, string error)
    results = 7,  ///< rank -> rank 0: finished tasks
    closed = 8,   ///< rank -> rank 0: answer to close
    cancel = 9,   ///< rank 0 -> rank: cancel one task if no worker began it
};

inline constexpr int mpi_control_tag = 0;

/// Largest MPI message crew sends; a longer logical message goes in parts.
/// MPI counts are ints, so a part must stay under 2^31 bytes. A variable so
/// that a test can make it small (set it during static initialisation, so
/// that every rank sees the same value).
inline std::size_t mpi_part_bytes = std::size_t{1} << 30;

/// What crew knows about MPI in this process.
struct MpiState {
    MPI_Comm comm = MPI_COMM_NULL;
    int rank = 0;
    int size = 1;
    int tag_ub = 32767;
    bool owns_mpi = false;      ///< crew called MPI_Init_thread, so crew finalizes
    bool multiple = false;      ///< MPI_THREAD_MULTIPLE: no lock around MPI calls
    std::mutex call_mutex;      ///< around every MPI call when not `multiple`
    std::unique_ptr<std::mutex[]> send_mutex;  ///< per destination: parts of one message stay together
    std::atomic<std::uint32_t> next_executor{0};
    std::atomic<int> executors{0};  ///< live MpiExecutors (rank 0)
};

inline MpiState& mpi_state() {
    static MpiState state;
    return state;
}

/// Holds MPI for one call when the library is not MPI_THREAD_MULTIPLE.
class MpiLock {
public:
    MpiLock() {
        if (!mpi_state().multiple) lock_ = std::unique_lock(mpi_state().call_mutex);
    }

private:
    std::unique_lock<std::mutex> lock_;
};

inline std::string mpi_error_text(int code) {
    char text[MPI_MAX_ERROR_STRING] = {};
    int length = 0;
    if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) return "MPI error " + std::to_string(code);
    return std::string(text, static_cast<std::size_t>(length));
}

/// An MPI call's result as crew::ChannelError. On crew's communicator errors
/// return (MPI_ERRORS_RETURN); without ULFM (Open MPI 4.1) a failed call
/// means the job cannot go on.
inline void mpi_check(int code, const char* call) {
    if (code == MPI_SUCCESS) return;
    throw ChannelError(std::string("crew: ") + call + " failed on crew's MPI communicator: " + mpi_error_text(code) +
                       ". A rank was probably lost; Open MPI 4.1 cannot continue without it: end the job "
                       "(mpirun does so when a rank dies) and start it again");
}

/// Sends posted and not yet finished: the bytes live until MPI is done.
class MpiOutbox {
public:
    MpiOutbox() = default;
    MpiOutbox(const MpiOutbox&) = delete;
    MpiOutbox& operator=(const MpiOutbox&) = delete;
    ~MpiOutbox() {
        // Only reached with sends pending when MPI failed: do not wait on them.
        for (auto& p : pending_)
            for (auto& r : p.requests)
                if (r != MPI_REQUEST_NULL) MPI_Request_free(&r);
    }

    /// Sends `message` (built by mpi_begin_message / mpi_end_message) to
    /// `dest` with `tag`; returns at once.
    void send(int dest, int tag, std::vector<std::byte> message) {
        auto& state = mpi_state();
        Pending p;
        p.bytes = std::move(message);
        const std::size_t part = std::clamp<std::size_t>(mpi_part_bytes, 64, INT_MAX);
        {
            std::lock_guard order(state.send_mutex[static_cast<std::size_t>(dest)]);
            MpiLock lock;
            for (std::size_t at = 0; at < p.bytes.size(); at += part) {
                const auto n = static_cast<int>(std::min(part, p.bytes.size() - at));
                MPI_Request r = MPI_REQUEST_NULL;
                const int code = MPI_Isend(p.bytes.data() + at, n, MPI_BYTE, dest, tag, state.comm, &r);
                if (code != MPI_SUCCESS) {
                    for (auto& q : p.requests) MPI_Request_free(&q);
                    mpi_check(code, "MPI_Isend");
                }
                p.requests.push_back(r);
            }
        }
        pending_.push_back(std::move(p));
    }

    /// Drops the sends MPI finished; true when one finished.
    bool progress() {
        bool any = false;
        while (!pending_.empty()) {
            auto& p = pending_.front();
            int done = 0;
            {
                MpiLock lock;
                mpi_check(MPI_Testall(static_cast<int>(p.requests.size()), p.requests.data(), &done,
                                      MPI_STATUSES_IGNORE),
                          "MPI_Testall");
            }
            if (!done) break;  // in order: later sends to the same rank wait behind it anyway
            pending_.pop_front();
            any = true;
        }
        return any;
    }

    [[nodiscard]] bool empty() const noexcept { return pending_.empty(); }

private:
    struct Pending {
        std::vector<std::byte> bytes;
        std::vector<MPI_Request> requests;
    };
    std::deque<Pending> pending_;
};

/// Starts a message: room for the length, then the kind.
inline Writer mpi_begin_message(std::vector<std::byte>& out, MpiKind kind) {
    out.clear();
    Writer w(out);
    w.write_value(std::uint64_t{0});
    w.write_value(static_cast<std::uint8_t>(kind));
    return w;
}

/// Fills in the length.
inline void mpi_end_message(std::vector<std::byte>& out) {
    const std::uint64_t n = out.size() - sizeof(std::uint64_t);
    std::memcpy(out.data(), &n, sizeof n);
}

/// Largest logical message a receiver accepts (a batch of 64 tasks of up to
/// Options::max_message_size each stays well under it).
inline constexpr std::uint64_t mpi_max_message = std::uint64_t{1} << 40;

/// Receives one whole message from `source` (or MPI_ANY_SOURCE) with `tag`
/// when one has arrived; `out` then holds the payload after the length
/// (starting with the kind) and `from` the sender. Does not block when none
/// has arrived; once the first part is here, waits for the rest.
inline bool mpi_try_receive(int source, int tag, int& from, std::vector<std::byte>& out) {
    auto& state = mpi_state();
    MPI_Message message = MPI_MESSAGE_NULL;
    MPI_Status status{};
    int found = 0, count = 0;
    {
        MpiLock lock;
        mpi_check(MPI_Improbe(source, tag, state.comm, &found, &message, &status), "MPI_Improbe");
        if (!found) return false;
        mpi_check(MPI_Get_count(&status, MPI_BYTE, &count), "MPI_Get_count");
        out.resize(static_cast<std::size_t>(count));
        mpi_check(MPI_Mrecv(out.data(), count, MPI_BYTE, &message, MPI_STATUS_IGNORE), "MPI_Mrecv");
    }
    from = status.MPI_SOURCE;
    std::uint64_t n = 0;
    if (out.size() < sizeof n + 1) throw ChannelError("crew: a malformed MPI message (too short) reached crew's communicator");
    std::memcpy(&n, out.data(), sizeof n);
    if (n > mpi_max_message || n + sizeof n < out.size())
        throw ChannelError("crew: a malformed MPI message (bad length) reached crew's communicator");
    std::size_t have = out.size();
    out.resize(static_cast<std::size_t>(n + sizeof n));
    while (have < out.size()) {  // the remaining parts, in order
        MPI_Status part{};
        MpiLock lock;
        mpi_check(MPI_Probe(from, tag, state.comm, &part), "MPI_Probe");
        mpi_check(MPI_Get_count(&part, MPI_BYTE, &count), "MPI_Get_count");
        if (static_cast<std::size_t>(count) > out.size() - have)
            throw ChannelError("crew: a malformed MPI message (parts longer than announced) reached crew's communicator");
        mpi_check(MPI_Recv(out.data() + have, count, MPI_BYTE, from, tag, state.comm, MPI_STATUS_IGNORE), "MPI_Recv");
        have += static_cast<std::size_t>(count);
    }
    out.erase(out.begin(), out.begin() + sizeof n);
    return true;
}

/// How a loop that polls MPI waits when there is nothing to do: it keeps
/// polling for `spin` after the last thing that happened (a reply to a short
/// task arrives within it, at MPI speed), then sleeps on `wake` (which
/// submitters or completions bump) for 10 us, doubling up to 1 ms. MPI's own
/// blocking receive busy-polls a core, so crew never blocks in MPI.
class MpiIdle {
public:
    static constexpr std::chrono::microseconds spin{200};
    static constexpr std::chrono::microseconds first_sleep{10};
    static constexpr std::chrono::microseconds longest_sleep{1000};

    /// Something happened: poll again at once.
    void busy() noexcept {
        last_ = std::chrono::steady_clock::now();
        sleep_ = first_sleep;
    }

    /// Nothing happened: spin, or sleep a little (returns early when `wake`
    /// changes from `seen`).
    void idle(std::atomic<std::uint32_t>& wake, std::uint32_t seen) noexcept {
        const auto now = std::chrono::steady_clock::now();
        if (now - last_ < spin) {
            std::this_thread::yield();
            return;
        }
        const auto until = now + sleep_;
        futex_wait(wake, seen, false, &until);
        if (sleep_ < longest_sleep) sleep_ = std::min<std::chrono::microseconds>(sleep_ * 2, longest_sleep);
    }

private:
    std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
    std::chrono::microseconds sleep_ = first_sleep;
};

/// Bumps a wake word and wakes its sleeper.
inline void mpi_wake(std::atomic<std::uint32_t>& wake) noexcept {
    wake.fetch_add(1, std::memory_order_release);
    futex_wake(wake, 1);
}

// ---- start-up check: every rank runs the same program on the same kind of machine

/// The main program's GNU build-id note (the linker's hash of the binary),
/// or, without one, a hash of the executable's bytes.
inline std::uint64_t mpi_build_id() {
    std::uint64_t h = 1469598103934665603ull;  // FNV-1a
    auto mix = [&h](const unsigned char* p, std::size_t n) {
        for (std::size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
    };
    bool found = false;
    struct Search {
        decltype(mix)* hash;
        bool* found;
    } search{&mix, &found};
    dl_iterate_phdr(
        [](dl_phdr_info* info, std::size_t, void* data) -> int {
            auto& s = *static_cast<Search*>(data);
            for (int i = 0; i < info->dlpi_phnum; ++i) {
                const auto& ph = info->dlpi_phdr[i];
                if (ph.p_type != PT_NOTE) continue;
                auto* p = reinterpret_cast<const unsigned char*>(info->dlpi_addr + ph.p_vaddr);
                const auto* end = p + ph.p_memsz;
                while (p + sizeof(ElfW(Nhdr)) <= end) {
                    ElfW(Nhdr) note;
                    std::memcpy(&note, p, sizeof note);
                    const auto* name = p + sizeof note;
                    const auto* desc = name + ((note.n_namesz + 3) & ~3u);
                    if (desc + note.n_descsz > end) break;
                    if (note.n_type == NT_GNU_BUILD_ID && note.n_namesz == 4 && std::memcmp(name, "GNU", 4) == 0) {
                        (*s.hash)(desc, note.n_descsz);
                        *s.found = true;
                        return 1;
                    }
                    p = desc + ((note.n_descsz + 3) & ~3u);
                }
            }
            return 1;  // the main program is listed first: stop after it
        },
        &search);
    if (found) return h;
    std::ifstream exe("/proc/self/exe", std::ios::binary);
    char buffer[1 << 16];
    while (exe.read(buffer, sizeof buffer) || exe.gcount() > 0)
        mix(reinterpret_cast<const unsigned char*>(buffer), static_cast<std::size_t>(exe.gcount()));
    return h;
}

/// What every rank must agree on, compared byte for byte (so a machine of
/// the other byte order differs in `order`).
struct MpiIdentity {
    std::uint64_t build_id = 0;
    std::uint32_t order = 0x01020304;
    std::uint8_t sizes[8] = {sizeof(void*),       sizeof(long),    sizeof(long long),      sizeof(std::size_t),
                             sizeof(long double), sizeof(wchar_t), alignof(std::max_align_t), 3 /* wire version */};
    char host[44] = {};
};
static_assert(sizeof(MpiIdentity) == 64, "MpiIdentity travels as 64 bytes");

/// Why ranks differ, or empty when they all match rank 0.
inline std::string mpi_identity_mismatch(const std::vector<MpiIdentity>& all) {
    std::string why;
    for (std::size_t r = 1; r < all.size(); ++r) {
        const auto& a = all[0];
        const auto& b = all[r];
        std::string what;
        if (std::memcmp(&a.order, &b.order, sizeof a.order) != 0) what = "byte order differs";
        else if (std::memcmp(a.sizes, b.sizes, sizeof a.sizes) != 0) what = "type sizes or crew's wire version differ";
        else if (a.build_id != b.build_id) what = "it runs another program (or another build of it)";
        if (what.empty()) continue;
        why += "\ncrew:   rank " + std::to_string(r) + " on " + std::string(b.host, strnlen(b.host, sizeof b.host)) +
               ": " + what;
    }
    return why;
}

}  // namespace crew::detail
