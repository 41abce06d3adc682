// crew/detail/wire.hpp — the protocol between a ProcessExecutor and one of its
// worker processes: what each message holds, and the control words both
// sides share to decide, task by task, whether it starts or was cancelled.
//
// Messages, parent -> worker, each one whole channel message:
//   hello  = u32 hello_magic, i32 pid, i32 fd, u64 dev, u64 ino, u64 n, n bytes
//            first message to a new worker: where its control block is,
//            then the initializer as a call (n = 0: none)
//   batch  = u32 count (1..), then count x { u64 seq, call }
//            call = CodeRef trampoline, u64 n, n bytes of arguments
//   retire = u32 0: the worker exits
// Messages, worker -> parent, one per task of a batch, in order:
//   reply  = u64 seq, u8 outcome, then
//            value:     the encoded result
//            exception: the exception (detail::encode_exception)
//            skipped:   nothing (the task was cancelled before it started)
//
// Control block: a small memfd the parent creates per dispatcher and its
// worker maps (by /proc/<parent>/fd/<fd>, checked against dev/ino), with one
// word per batch position: (seq << 2) | state. The parent arms a word
// `pending` before shipping task `seq`; the worker CASes pending -> running
// before it starts the task; Future::cancel() (or shutdown) CASes pending ->
// cancelled. Exactly one CAS wins, so a task shipped in a batch can still be
// cancelled until the worker begins it, and never runs after cancel() said
// true. A stale seq (a later batch reuses the word) makes every CAS fail.
#pragma once

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <crew/codec.hpp>
#include <crew/errors.hpp>

namespace crew::detail {

inline constexpr std::uint32_t hello_magic = 0x63726577;  // "crew"

/// Most tasks in one batch (and words in a control block).
inline constexpr std::size_t batch_limit = 64;

/// Bytes of framing a batch adds to one task's call (count + seq); a
/// channel's limit is Options::max_message_size plus this, so the limit
/// applies to a task's call, not to a batch.
inline constexpr std::size_t batch_overhead = sizeof(std::uint32_t) + sizeof(std::uint64_t);

/// The control words one dispatcher shares with its worker (see above).
class ControlBlock {
public:
    enum State : std::uint64_t { pending = 0, running = 1, cancelled = 2, recalled = 3 };

    /// Parent side: a fresh block.
    ControlBlock() {
        fd_ = ::memfd_create("crew-control", MFD_CLOEXEC);
        if (fd_ < 0) throw Error(std::string("crew: cannot create a control block (memfd_create): ") + std::strerror(errno));
        if (fd_ < 3) fd_ = move_above_stdio(fd_);
        if (::ftruncate(fd_, bytes) != 0 || !map()) {
            const int err = errno;
            ::close(fd_);
            throw Error(std::string("crew: cannot create a control block: ") + std::strerror(err));
        }
    }

    /// Worker side: the parent's block, from a hello message (what follows
    /// it is left in `hello`).
    static ControlBlock attach(Reader& hello) {
        const auto pid = hello.read_value<std::int32_t>();
        const auto fd = hello.read_value<std::int32_t>();
        const auto dev = hello.read_value<std::uint64_t>();
        const auto ino = hello.read_value<std::uint64_t>();
        const std::string path = "/proc/" + std::to_string(pid) + "/fd/" + std::to_string(fd);
        ControlBlock block(::open(path.c_str(), O_RDWR | O_CLOEXEC));
        struct stat st {};
        if (block.fd_ < 0 || ::fstat(block.fd_, &st) != 0 || static_cast<std::uint64_t>(st.st_dev) != dev ||
            static_cast<std::uint64_t>(st.st_ino) != ino || st.st_size != static_cast<off_t>(bytes) || !block.map())
            throw ChannelError("crew: the worker cannot map its control block from " + path +
                               " (is /proc mounted and the parent alive?)");
        return block;
    }

    ControlBlock(ControlBlock&& o) noexcept : fd_(o.fd_), words_(o.words_) {
        o.fd_ = -1;
        o.words_ = nullptr;
    }
    ControlBlock& operator=(ControlBlock&&) = delete;
    ControlBlock(const ControlBlock&) = delete;
    ~ControlBlock() {
        if (words_ != nullptr) ::munmap(static_cast<void*>(words_), bytes);
        if (fd_ >= 0) ::close(fd_);
    }

    /// Bytes of a hello before the initializer's call (and its length).
    static constexpr std::size_t hello_bytes = 4 + 4 + 4 + 8 + 8 + 8;

    /// The hello message that lets a worker attach.
    void write_hello(Writer& w) const {
        struct stat st {};
        if (::fstat(fd_, &st) != 0) throw Error(std::string("crew: control block: ") + std::strerror(errno));
        w.write_value(hello_magic);
        w.write_value(static_cast<std::int32_t>(::getpid()));
        w.write_value(static_cast<std::int32_t>(fd_));
        w.write_value(static_cast<std::uint64_t>(st.st_dev));
        w.write_value(static_cast<std::uint64_t>(st.st_ino));
    }

    /// Parent, before shipping task `seq`.
    void arm(std::uint64_t seq) noexcept { word(seq).store(seq << 2 | pending, std::memory_order_release); }
    /// Worker, before starting task `seq`: false when it was cancelled.
    bool claim(std::uint64_t seq) noexcept { return transition(seq, running); }
    /// Future::cancel() or shutdown: false when the worker started it.
    bool cancel(std::uint64_t seq) noexcept { return transition(seq, cancelled); }
    /// Parent, after its worker died: takes back a task that never started.
    bool recall(std::uint64_t seq) noexcept { return transition(seq, recalled); }

private:
    static constexpr std::size_t bytes = batch_limit * sizeof(std::uint64_t);
    static_assert(std::atomic<std::uint64_t>::is_always_lock_free, "control words are shared between processes");

    explicit ControlBlock(int fd) noexcept : fd_(fd) {}

    static int move_above_stdio(int fd) noexcept {
        const int moved = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
        ::close(fd);
        return moved;
    }

    bool map() noexcept {
        void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
        if (p == MAP_FAILED) return false;
        words_ = static_cast<std::atomic<std::uint64_t>*>(p);
        return true;
    }

    std::atomic<std::uint64_t>& word(std::uint64_t seq) noexcept { return words_[seq % batch_limit]; }

    bool transition(std::uint64_t seq, State to) noexcept {
        std::uint64_t expected = seq << 2 | pending;
        return word(seq).compare_exchange_strong(expected, seq << 2 | to, std::memory_order_acq_rel,
                                                 std::memory_order_acquire);
    }

    int fd_ = -1;
    std::atomic<std::uint64_t>* words_ = nullptr;
};

}  // namespace crew::detail
