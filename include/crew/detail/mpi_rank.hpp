// crew/detail/mpi_rank.hpp — a serving MPI rank (1..N-1): it receives tasks
// from rank 0 and runs them in worker processes of its own (a local
// ProcessExecutor per MpiExecutor on rank 0), so a task that crashes kills a
// worker process, never the rank: it fails alone with crew::WorkerDied.
//
// Messages from rank 0 (tag mpi_control_tag, read in order; see mpi_wire.hpp):
//   open    = u32 executor, i32 tag, u32 workers, u64 max_tasks_per_worker,
//             i64 task_timeout (ns), u64 memory_limit, u64 max_message_size,
//             u8 start (0 default, 1 + crew::Start), u64 n + n bytes: the initializer as a call (n = 0: none)
//   batch   = u32 executor, u32 count, count x { u64 task id, u64 n, n bytes: the encoded call }
//   cancel  = u32 executor, u64 task id
//   kill    = u32 executor
//   close   = u32 executor, u8 crew::Shutdown
//   stop    = (nothing): the session ends
// Messages to rank 0 (the executor's tag):
//   opened  = u8 ok, string error
//   results = u32 count, count x { u64 task id, u8 MpiOutcome, then
//               reply:     u64 n, n bytes: the worker's reply (outcome byte, value or exception)
//               failed:    the failure (mpi_encode_failure)
//               cancelled, refused: nothing }
//   closed  = (nothing)
//
// Waiting: the rank polls MPI (MPI's blocking receive would spin a core) and
// sleeps between polls as MpiIdle says; completions wake it at once.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <crew/codec.hpp>
#include <crew/detail/code_ref.hpp>
#include <crew/detail/mpi_wire.hpp>
#include <crew/detail/remote_call.hpp>
#include <crew/detail/shared_state.hpp>
#include <crew/errors.hpp>
#include <crew/future.hpp>
#include <crew/options.hpp>
#include <crew/process_executor.hpp>

namespace crew::detail {

/// How one task ended on a serving rank.
enum class MpiOutcome : std::uint8_t {
    reply = 0,      ///< the worker process answered (value or the task's exception)
    failed = 1,     ///< no answer: the worker died, timed out, or was stopped (Shutdown::kill)
    cancelled = 2,  ///< cancelled before a worker began it (cancel, or Shutdown::kill)
    refused = 3,    ///< answer to cancel: the task had started (or ended) already
};

/// What a worker process's failure travels as (the exception types rank 0
/// rebuilds; anything else arrives as crew::Error with its message).
enum class MpiFailure : std::uint8_t { worker_died = 0, timeout = 1, cancelled = 2, channel = 3, other = 4 };

inline void mpi_encode_failure(Writer& w, const std::exception_ptr& error) {
    MpiFailure kind = MpiFailure::other;
    std::string what = "crew: unknown failure on a serving rank";
    std::int32_t code = -1, signal = 0;
    try {
        std::rethrow_exception(error);
    } catch (const WorkerDied& e) {
        kind = MpiFailure::worker_died, what = e.what(), code = e.exit_code(), signal = e.signal();
    } catch (const Timeout& e) {
        kind = MpiFailure::timeout, what = e.what();
    } catch (const Cancelled& e) {
        kind = MpiFailure::cancelled, what = e.what();
    } catch (const ChannelError& e) {
        kind = MpiFailure::channel, what = e.what();
    } catch (const std::exception& e) {
        what = e.what();
    } catch (...) {
    }
    w.write_value(static_cast<std::uint8_t>(kind));
    w.write_value(what);
    w.write_value(code);
    w.write_value(signal);
}

inline std::exception_ptr mpi_decode_failure(Reader& r, int rank) {
    const auto kind = static_cast<MpiFailure>(r.read_value<std::uint8_t>());
    auto what = r.read_value<std::string>();
    const auto code = r.read_value<std::int32_t>();
    const auto signal = r.read_value<std::int32_t>();
    what += " (on MPI rank " + std::to_string(rank) + ")";
    switch (kind) {
        case MpiFailure::worker_died: return std::make_exception_ptr(WorkerDied(std::move(what), code, signal));
        case MpiFailure::timeout: return std::make_exception_ptr(Timeout(std::move(what)));
        case MpiFailure::cancelled: return std::make_exception_ptr(Cancelled(std::move(what)));
        case MpiFailure::channel: return std::make_exception_ptr(ChannelError(std::move(what)));
        default: return std::make_exception_ptr(Error(std::move(what)));
    }
}

/// Runs one encoded call (detail::encode_call's bytes) in a worker process
/// and returns the worker's reply after the slot: the outcome byte, then the
/// value or the exception. A plain task of the rank's local ProcessExecutor.
inline std::vector<std::byte> mpi_run_encoded_call(std::vector<std::byte> call) {
    Reader in(call);
    std::vector<std::byte> out;
    run_call(0, in, out);
    out.erase(out.begin(), out.begin() + sizeof(std::uint64_t));
    return out;
}

/// The serving rank's loop. One object per process, on the main thread
/// (every MPI call is made there).
class MpiRankServer {
public:
    [[noreturn]] void run() noexcept {
        int status = 0;
        try {
            loop();
        } catch (const std::exception& e) {
            std::fprintf(stderr, "crew: MPI rank %d stops serving: %s\n", mpi_state().rank, e.what());
            status = 1;
        }
        executors_.clear();  // drains and reaps each rank-local executor's workers
        std::fflush(nullptr);
        if (status != 0) MPI_Abort(MPI_COMM_WORLD, status);
        MPI_Comm_free(&mpi_state().comm);
        if (mpi_state().owns_mpi) MPI_Finalize();
        std::exit(0);
    }

private:
    using Local = ProcessExecutor<>;

    /// One task on this rank: the local future, and what to tell rank 0.
    struct Entry final : Continuation {
        MpiRankServer* server = nullptr;
        std::uint32_t executor = 0;
        std::uint64_t id = 0;
        bool cancel_asked = false;  // main thread only
        Future<std::vector<std::byte>> future;
        void invoke() noexcept override { server->finished(this); }
    };

    struct Executor {
        std::unique_ptr<Local> local;
        int tag = 0;
        std::map<std::uint64_t, Entry*> entries;  // main thread only
    };

    void loop() {
        std::vector<std::byte> in;
        MpiIdle idle;
        for (;;) {
            bool did = outbox_.progress();
            const std::uint32_t seen = wake_.load(std::memory_order_acquire);
            int from = 0;
            while (mpi_try_receive(0, mpi_control_tag, from, in)) {
                did = true;
                if (!handle(in)) return;
            }
            did = send_results() || did;
            if (did || !outbox_.empty()) {
                idle.busy();
                continue;
            }
            sleeping_.store(true, std::memory_order_seq_cst);
            if (!has_done()) idle.idle(wake_, seen);
            sleeping_.store(false, std::memory_order_relaxed);
        }
    }

    bool has_done() {
        std::lock_guard lock(done_mutex_);
        return !done_.empty();
    }

    // A local task ended (on a local dispatcher thread, or inline): queue it
    // for the main thread.
    void finished(Entry* e) noexcept {
        {
            std::lock_guard lock(done_mutex_);
            done_.push_back(e);
        }
        if (sleeping_.load(std::memory_order_seq_cst)) mpi_wake(wake_);
    }

    bool handle(const std::vector<std::byte>& message) {
        Reader r(message);
        const auto kind = static_cast<MpiKind>(r.read_value<std::uint8_t>());
        switch (kind) {
            case MpiKind::open: open(r); return true;
            case MpiKind::batch: batch(r); return true;
            case MpiKind::cancel: cancel(r); return true;
            case MpiKind::kill: {
                auto it = executors_.find(r.read_value<std::uint32_t>());
                const auto how = static_cast<Shutdown>(r.read_value<std::uint8_t>());
                if (how != Shutdown::cancel_pending && how != Shutdown::kill)
                    throw ChannelError("crew: a malformed stop message from rank 0");
                if (it != executors_.end() && it->second.local) it->second.local->shutdown(how);
                send_results();  // what that cancelled or stopped
                return true;
            }
            case MpiKind::close: {
                const auto id = r.read_value<std::uint32_t>();
                const auto how = static_cast<Shutdown>(r.read_value<std::uint8_t>());
                auto it = executors_.find(id);
                if (it == executors_.end()) return true;
                if (it->second.local) it->second.local->shutdown(how);
                send_results();  // what the shutdown finished
                const int tag = it->second.tag;
                executors_.erase(it);
                std::vector<std::byte> out;
                mpi_begin_message(out, MpiKind::closed);
                mpi_end_message(out);
                outbox_.send(0, tag, std::move(out));
                return true;
            }
            case MpiKind::stop: return false;
            default: throw ChannelError("crew: an MPI message of unknown kind reached a serving rank");
        }
    }

    void open(Reader& r) {
        const auto id = r.read_value<std::uint32_t>();
        auto& ex = executors_[id];
        ex.tag = r.read_value<std::int32_t>();
        const auto workers = r.read_value<std::uint32_t>();
        Options options;
        options.max_tasks_per_worker = static_cast<std::size_t>(r.read_value<std::uint64_t>());
        options.task_timeout = std::chrono::nanoseconds(r.read_value<std::int64_t>());
        options.memory_limit = static_cast<std::size_t>(r.read_value<std::uint64_t>());
        options.max_message_size = static_cast<std::size_t>(r.read_value<std::uint64_t>());
        if (const auto start = r.read_value<std::uint8_t>(); start != 0) options.start = static_cast<Start>(start - 1);
        auto initializer = r.read_value<std::vector<std::byte>>();
        std::string error;
        try {
            options.initializer = decode_initializer(std::move(initializer));
            ex.local = std::make_unique<Local>(workers, std::move(options));
        } catch (const std::exception& e) {
            error = "crew: MPI rank " + std::to_string(mpi_state().rank) +
                    " could not start its worker processes: " + e.what();
        }
        std::vector<std::byte> out;
        Writer w = mpi_begin_message(out, MpiKind::opened);
        w.write_value(static_cast<std::uint8_t>(error.empty()));
        w.write_value(error);
        mpi_end_message(out);
        outbox_.send(0, ex.tag, std::move(out));
        if (!error.empty()) executors_.erase(id);
    }

    void batch(Reader& r) {
        const auto id = r.read_value<std::uint32_t>();
        const auto count = r.read_value<std::uint32_t>();
        auto it = executors_.find(id);
        if (it == executors_.end()) throw ChannelError("crew: a batch for an executor this rank does not know");
        auto& ex = it->second;
        for (std::uint32_t i = 0; i < count; ++i) {
            auto* e = new Entry;
            e->server = this;
            e->executor = id;
            e->id = r.read_value<std::uint64_t>();
            const auto n = r.read_value<std::uint64_t>();
            auto bytes = r.take(static_cast<std::size_t>(n));
            std::vector<std::byte> call(bytes.begin(), bytes.end());
            ex.entries[e->id] = e;
            try {
                e->future = ex.local->submit(mpi_run_encoded_call, std::move(call));
            } catch (...) {
                // The local executor was shut down (Shutdown::kill): the task never starts.
                e->cancel_asked = true;
                finished(e);
                continue;
            }
            if (!FutureAccess::state(e->future)->add_continuation(e)) e->invoke();
        }
    }

    void cancel(Reader& r) {
        const auto id = r.read_value<std::uint32_t>();
        const auto task = r.read_value<std::uint64_t>();
        auto it = executors_.find(id);
        if (it == executors_.end()) return;
        auto found = it->second.entries.find(task);
        if (found != it->second.entries.end()) {
            Entry* e = found->second;
            e->cancel_asked = true;  // before cancel(): it may finish the entry inline
            if (e->future.valid() && e->future.cancel()) return;  // its result says "cancelled"
            e->cancel_asked = false;
        }
        // Started, or done already: say so, so rank 0 stops waiting.
        refused_.emplace_back(id, task);
    }

    // Sends what finished since the last call, one message per executor.
    bool send_results() {
        std::vector<Entry*> done;
        {
            std::lock_guard lock(done_mutex_);
            done.swap(done_);
        }
        if (done.empty() && refused_.empty()) return false;
        std::map<std::uint32_t, std::pair<std::uint32_t, std::vector<std::byte>>> messages;
        auto message_for = [&](std::uint32_t executor) -> std::pair<std::uint32_t, std::vector<std::byte>>& {
            auto& m = messages[executor];
            if (m.second.empty()) {
                Writer w = mpi_begin_message(m.second, MpiKind::results);
                w.write_value(std::uint32_t{0});  // count, filled in below
            }
            return m;
        };
        for (Entry* e : done) {
            auto it = executors_.find(e->executor);
            if (it != executors_.end()) {
                it->second.entries.erase(e->id);
                auto& [count, bytes] = message_for(e->executor);
                Writer w(bytes);
                w.write_value(e->id);
                auto* state = e->future.valid() ? FutureAccess::state(e->future) : nullptr;
                if (state != nullptr && state->status() == Status::value) {
                    const auto& reply = state->value();
                    w.write_value(static_cast<std::uint8_t>(MpiOutcome::reply));
                    w.write_value(static_cast<std::uint64_t>(reply.size()));
                    w.write(reply.data(), reply.size());
                } else if (e->cancel_asked || state == nullptr) {
                    w.write_value(static_cast<std::uint8_t>(MpiOutcome::cancelled));
                } else {
                    w.write_value(static_cast<std::uint8_t>(MpiOutcome::failed));
                    mpi_encode_failure(w, state->error());
                }
                ++count;
            }
            delete e;
        }
        for (auto [executor, task] : refused_) {
            if (!executors_.count(executor)) continue;
            auto& [count, bytes] = message_for(executor);
            Writer w(bytes);
            w.write_value(task);
            w.write_value(static_cast<std::uint8_t>(MpiOutcome::refused));
            ++count;
        }
        refused_.clear();
        for (auto& [executor, m] : messages) {
            std::memcpy(m.second.data() + sizeof(std::uint64_t) + 1, &m.first, sizeof m.first);
            mpi_end_message(m.second);
            outbox_.send(0, executors_[executor].tag, std::move(m.second));
        }
        return true;
    }

    std::map<std::uint32_t, Executor> executors_;
    std::vector<std::pair<std::uint32_t, std::uint64_t>> refused_;
    MpiOutbox outbox_;
    std::mutex done_mutex_;
    std::vector<Entry*> done_;
    std::atomic<std::uint32_t> wake_{0};
    std::atomic<bool> sleeping_{false};
};

}  // namespace crew::detail
