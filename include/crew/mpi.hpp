// crew/mpi.hpp — crew::MpiExecutor<Sync>: the executor API over MPI ranks,
// on this machine or others (Open MPI). Not part of <crew/crew.hpp>: only
// programs that use MPI need it installed.
//
// When: one machine is not enough. Change one type (ThreadExecutor ->
// ProcessExecutor -> MpiExecutor) and launch with mpirun:
//
//     int main(int argc, char** argv) {
//         crew::Session session(argc, argv);   // ranks 1..N-1 serve from here
//         crew::MpiExecutor<> ex;              // rank 0 only gets here
//         auto f = ex.submit(square, 7);
//     }
//     mpirun -n 4 ./app        (see docs/guide.md for a hostfile)
//
// Rank 0 runs main(); ranks 1..N-1 never return from crew::Session: they
// serve tasks, then finalize MPI with rank 0 when the Session ends. Each
// serving rank runs tasks in worker processes of its own (a ProcessExecutor),
// so a task that crashes fails alone with crew::WorkerDied and the job goes
// on; Options::task_timeout, memory_limit, max_tasks_per_worker and start
// apply to those processes. Tasks, arguments and results are those of
// ProcessExecutor (same identity, same crew::Codec bytes). A task shipped to
// a rank can be cancelled until a worker begins it (cancel() asks the rank
// and waits for its answer).
//
// What MPI cannot survive: a rank lost (killed, crashed, its machine gone).
// Open MPI 4.1 has no fault tolerance (ULFM); its mpirun ends the whole job
// with a message naming the rank. An MPI error seen by crew (its own
// communicator returns errors) fails the affected tasks with
// crew::ChannelError and stops the executor; it never hangs.
//
// How it works: one communication thread per MpiExecutor on rank 0 takes
// tasks from the Sync policy's queue and ships them, in batches like
// ProcessExecutor's (a fair share of what waits, up to 64), to the rank of
// each idle worker slot; it finishes the futures from the answers (so
// continuations run on that thread: keep them short, never block in one on
// another task of the same executor). Idle loops never block in MPI (Open
// MPI's blocking receive spins a core): they poll for 200 us after the last
// message, then sleep 10 us, doubling up to 1 ms, between polls; a submit
// or a finished task wakes them at once.
//
// Threads: MPI is initialised with MPI_THREAD_MULTIPLE when the library
// offers it (Open MPI does); otherwise crew serialises its own MPI calls. A
// program that makes MPI calls of its own uses its own communicator.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <memory>
#include <mutex>
#include <ranges>
#include <string>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include <unistd.h>

#include <crew/codec.hpp>
#include <crew/detail/executor_core.hpp>
#include <crew/detail/imap.hpp>
#include <crew/detail/mpi_rank.hpp>
#include <crew/detail/mpi_wire.hpp>
#include <crew/detail/remote_call.hpp>
#include <crew/detail/remote_exception.hpp>
#include <crew/detail/shared_state.hpp>
#include <crew/errors.hpp>
#include <crew/executor.hpp>
#include <crew/initializer.hpp>
#include <crew/future.hpp>
#include <crew/options.hpp>
#include <crew/session.hpp>
#include <crew/sync/lock_free.hpp>
#include <crew/sync/policy.hpp>

namespace crew {

namespace detail {

/// Where a shipped task's cancel() sends its request: outlives the executor
/// (each task holds it), so a late cancel() finds it closed, not freed.
struct MpiJob;
struct MpiCancelBox {
    std::mutex mutex;
    std::vector<MpiJob*> requests;
    bool closed = false;
    std::atomic<std::uint32_t>* wake = nullptr;  // valid while !closed
};

/// The MpiExecutor whose communication thread this is (continuations of its
/// futures run here), or null.
inline thread_local const void* current_mpi_communicator = nullptr;

/// A task queued on rank 0.
struct MpiJob : Job {
    enum Phase : std::uint32_t { queued = 0, shipped = 1, cancelled_queued = 2 };
    enum Answer : std::uint32_t { none = 0, asking = 1, yes = 2, no = 3 };

    std::vector<std::byte> call;
    std::uint64_t id = 0;
    std::size_t slot = 0;
    std::atomic<std::uint32_t> phase{queued};
    std::atomic<std::uint32_t> answer{none};

    /// queued -> shipped; false when cancel() came first.
    bool ship() noexcept {
        std::uint32_t expected = queued;
        return phase.compare_exchange_strong(expected, shipped, std::memory_order_acq_rel);
    }
    /// The worker answered with a value in `r`; false when it did not decode.
    virtual bool complete(Reader& r) noexcept = 0;
    virtual void fail(std::exception_ptr error) noexcept = 0;
    /// The rank says no worker began it, and none will.
    virtual void cancelled_remotely() noexcept = 0;
    /// Leaves the queue after cancel() (no publication left to make).
    virtual void drop() noexcept = 0;

protected:
    ~MpiJob() = default;
};

template <class R>
class MpiTask final : public SharedState<R>, public MpiJob {
public:
    // Its result comes from another process, through a dispatcher thread.
    [[nodiscard]] int wait_pauses() const noexcept override { return pauses_before_yield(); }
    MpiTask(std::vector<std::byte> encoded, TaskCounters& counters, std::shared_ptr<MpiCancelBox> box)
        : SharedState<R>(2), counters_(counters), box_(std::move(box)) {
        call = std::move(encoded);
    }

    bool try_cancel() noexcept override {
        std::uint32_t p = queued;
        if (phase.compare_exchange_strong(p, cancelled_queued, std::memory_order_acq_rel)) {
            if (this->try_claim()) this->publish_cancelled();
            return true;
        }
        if (p == cancelled_queued || this->is_ready() || current_mpi_communicator != nullptr)
            return this->status() == Status::cancelled;  // a continuation must not wait for the rank
        // Shipped: ask the rank, which cancels it if no worker began it.
        answer.store(asking, std::memory_order_seq_cst);
        {
            std::lock_guard lock(box_->mutex);
            if (box_->closed) return this->status() == Status::cancelled;
            box_->requests.push_back(this);
            mpi_wake(*box_->wake);
        }
        for (std::uint32_t a; (a = answer.load(std::memory_order_acquire)) == asking;) futex_wait(answer, a);
        return this->status() == Status::cancelled;
    }

    bool complete(Reader& r) noexcept override {
        this->try_claim();
        auto error = capture_exception([&] {
            if constexpr (std::is_void_v<R>) {
                r.expect_end();
                this->publish_value();
            } else {
                auto value = r.read_value<R>();
                r.expect_end();
                this->publish_value(std::move(value));
            }
        });
        if (error) this->publish_error(std::move(error));
        const bool ok = !error;
        answer_no();
        this->release();
        return ok;
    }
    void fail(std::exception_ptr error) noexcept override {
        this->try_claim();
        this->publish_error(std::move(error));
        answer_no();
        this->release();
    }
    void cancelled_remotely() noexcept override {
        if (this->try_claim()) this->publish_cancelled();
        answer.store(yes, std::memory_order_release);
        futex_wake(answer);
        this->release();
    }
    void drop() noexcept override { this->release(); }
    void abandon() noexcept override {
        std::uint32_t p = queued;
        if (phase.compare_exchange_strong(p, cancelled_queued, std::memory_order_acq_rel) && this->try_claim())
            this->publish_cancelled();
        counters_.cancelled();
        this->release();
    }

private:
    void answer_no() noexcept {
        if (answer.load(std::memory_order_acquire) == none) return;
        answer.store(no, std::memory_order_release);
        futex_wake(answer);
    }
    void destroy() noexcept override { delete this; }

    TaskCounters& counters_;
    std::shared_ptr<MpiCancelBox> box_;
};

template <class Core>
class MpiPost final : public MpiJob {
public:
    MpiPost(Core& core, std::vector<std::byte> encoded) : core_(core) { call = std::move(encoded); }
    bool complete(Reader&) noexcept override {
        delete this;
        return true;
    }
    void fail(std::exception_ptr error) noexcept override {
        core_.report(std::move(error));
        delete this;
    }
    void cancelled_remotely() noexcept override { delete this; }
    void drop() noexcept override { delete this; }
    void abandon() noexcept override {
        core_.counters().cancelled();
        delete this;
    }

private:
    Core& core_;
};

// ---- the Session hook: MPI starts and ends with crew::Session

inline void mpi_fail_start(const std::string& why) {
    auto& state = mpi_state();
    if (state.rank == 0) std::fprintf(stderr, "%s\n", why.c_str());
    std::fflush(nullptr);
    // Rank 0 ends the job; the others give it time to, so the message is
    // printed once (concurrent aborts garble mpirun's report).
    if (state.rank != 0) std::this_thread::sleep_for(std::chrono::seconds(10));
    MPI_Abort(MPI_COMM_WORLD, 1);
    std::_Exit(1);
}

// Every rank: MPI_Init_thread, crew's communicator, the identity check. Ranks
// other than 0 then serve and end the process.
inline void mpi_session_enter(int& argc, char**& argv) {
    auto& state = mpi_state();
    int initialised = 0, provided = 0;
    MPI_Initialized(&initialised);
    if (!initialised) {
        if (MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS) {
            std::fprintf(stderr, "crew: MPI_Init_thread failed; is this program started by mpirun?\n");
            std::exit(1);
        }
        state.owns_mpi = true;
    } else {
        MPI_Query_thread(&provided);
    }
    if (provided < MPI_THREAD_SERIALIZED) {
        std::fprintf(stderr, "crew: this MPI library offers no thread support (MPI_THREAD_SERIALIZED or better); "
                             "crew::MpiExecutor needs it: use an MPI built with threads (Debian's Open MPI is)\n");
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    state.multiple = provided >= MPI_THREAD_MULTIPLE;
    MPI_Comm_dup(MPI_COMM_WORLD, &state.comm);
    MPI_Comm_set_errhandler(state.comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(state.comm, &state.rank);
    MPI_Comm_size(state.comm, &state.size);
    int* tag_ub = nullptr;
    int found = 0;
    MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &tag_ub, &found);
    if (found && tag_ub != nullptr) state.tag_ub = *tag_ub;
    state.send_mutex = std::make_unique<std::mutex[]>(static_cast<std::size_t>(state.size));

    // Every rank must run this very program on the same kind of machine:
    // task identities are code offsets, and values travel as bytes.
    MpiIdentity mine;
    mine.build_id = mpi_build_id();
    ::gethostname(mine.host, sizeof mine.host - 1);
    std::vector<MpiIdentity> all(static_cast<std::size_t>(state.size));
    MPI_Request request = MPI_REQUEST_NULL;
    if (MPI_Iallgather(&mine, sizeof mine, MPI_BYTE, all.data(), sizeof mine, MPI_BYTE, state.comm, &request) !=
        MPI_SUCCESS)
        mpi_fail_start("crew: the MPI start-up check (MPI_Iallgather) failed");
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    for (int done = 0; !done;) {
        MPI_Test(&request, &done, MPI_STATUS_IGNORE);
        if (done) break;
        if (std::chrono::steady_clock::now() > deadline)
            mpi_fail_start("crew: not every MPI rank joined crew's start-up check within 60 s: every rank must run "
                           "the same crew program (mpirun -n N ./app), and each must create crew::Session first "
                           "thing in main()");
        std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    if (auto why = mpi_identity_mismatch(all); !why.empty())
        mpi_fail_start("crew: the MPI ranks do not all run the same program on the same kind of machine:" + why +
                       "\ncrew: every rank must run the same binary (same build), e.g. mpirun -n N ./app; on "
                       "several machines, install the very same file on each");
    if (state.rank != 0) {
        // Workers a serving rank starts (Start::spawn) need a Session: this is it.
        session_registry().sessions.fetch_add(1, std::memory_order_release);
        MpiRankServer server;
        server.run();  // never returns
    }
}

// Rank 0, when the Session ends: the serving ranks stop, everyone finalizes.
inline void mpi_session_leave() {
    auto& state = mpi_state();
    if (state.comm == MPI_COMM_NULL || state.rank != 0) return;
    if (state.executors.load() != 0)
        std::fprintf(stderr, "crew: an MpiExecutor outlives crew::Session; destroy it before main() returns\n");
    {
        MpiOutbox outbox;
        for (int r = 1; r < state.size; ++r) {
            std::vector<std::byte> out;
            mpi_begin_message(out, MpiKind::stop);
            mpi_end_message(out);
            outbox.send(r, mpi_control_tag, std::move(out));
        }
        MpiIdle idle;
        while (!outbox.empty()) {
            if (outbox.progress()) continue;
            std::atomic<std::uint32_t> never{0};
            idle.idle(never, 0);
        }
    }
    MPI_Comm_free(&state.comm);
    state.comm = MPI_COMM_NULL;
    if (state.owns_mpi) MPI_Finalize();
}

// Registered during static initialisation of every program that includes
// this header; runs when main() creates its crew::Session.
inline const bool mpi_session_hook_registered =
    register_session_hook(SessionHook{&mpi_session_enter, &mpi_session_leave});

}  // namespace detail

/// An executor whose workers are processes started by MPI ranks 1..N-1
/// (`mpirun -n N ./app`). Sync (crew::sync::LockFree, Mutex, Semaphore)
/// guards the queue of tasks waiting on rank 0.
template <class Sync = sync::LockFree>
class MpiExecutor {
    static_assert(sync::policy<Sync>,
                  "crew::MpiExecutor<Sync>: Sync must be a sync policy: crew::sync::LockFree, crew::sync::Mutex or "
                  "crew::sync::Semaphore");

public:
    using sync_policy = Sync;

    /// `workers` worker processes (0: options.workers, else one per serving
    /// rank), spread round-robin over ranks 1..N-1; each rank starts its
    /// share and the constructor returns when all are ready. Throws
    /// crew::InvalidArgument without a crew::Session or with fewer than 2 ranks.
    explicit MpiExecutor(std::size_t workers = 0, Options options = {})
        : options_(std::move(options)), core_(options_, queue_capacity) {
        auto& state = detail::mpi_state();
        if (state.comm == MPI_COMM_NULL)
            throw InvalidArgument("crew::MpiExecutor: MPI is not running: create `crew::Session session(argc, argv);` "
                                  "as the first statement of main() and launch with `mpirun -n N ./app` (N >= 2)");
        if (state.size < 2)
            throw InvalidArgument("crew::MpiExecutor: only one MPI rank; launch with `mpirun -n N ./app`, N >= 2: rank "
                                  "0 runs main() and ranks 1..N-1 run the tasks");
        const auto ranks = static_cast<std::size_t>(state.size - 1);
        std::size_t n = workers != 0 ? workers : options_.workers != 0 ? options_.workers : ranks;
        for (std::size_t i = 0; i < n; ++i) slots_.push_back(Slot{static_cast<int>(1 + i % ranks), 0});
        id_ = state.next_executor.fetch_add(1) + 1;
        tag_ = 1 + static_cast<int>(id_ % static_cast<std::uint32_t>(state.tag_ub - 1));
        box_ = std::make_shared<detail::MpiCancelBox>();
        box_->wake = &wake_;
        open_ranks(n, ranks);
        state.executors.fetch_add(1);
        comm_ = std::thread([this] { communicate(); });
    }

    MpiExecutor(const MpiExecutor&) = delete;
    MpiExecutor& operator=(const MpiExecutor&) = delete;

    /// shutdown(drain): runs what was submitted; the serving ranks stop this
    /// executor's worker processes (the ranks serve on for the next one).
    ~MpiExecutor() {
        shutdown(Shutdown::drain);
        std::lock_guard lock(join_mutex_);
        if (comm_.joinable()) {
            if (comm_.get_id() == std::this_thread::get_id()) comm_.detach();
            else comm_.join();
        }
        detail::mpi_state().executors.fetch_sub(1);
    }

    /// Runs `f(args...)` in a worker process on a serving rank; as
    /// ProcessExecutor::submit. Thread-safe.
    template <class F, class... Args>
    auto submit(F&& f, Args&&... args) -> Future<std::invoke_result_t<std::decay_t<F>, std::decay_t<Args>...>> {
        using Fn = std::decay_t<F>;
        using R = std::invoke_result_t<Fn, std::decay_t<Args>...>;
        check_task<Fn, R, std::decay_t<Args>...>();
        auto* task = new detail::MpiTask<R>(
            detail::encode_call<&detail::call_trampoline<Fn, std::decay_t<Args>...>>(Fn(f), args...),
            core_.counters(), box_);
        enqueue(task, [task] {
            task->release();
            task->release();
        });
        return detail::make_future<R>(task);
    }

    /// Runs `f(args...)` with no future; an exception goes to
    /// Options::on_error, or to stderr. Thread-safe.
    template <class F, class... Args>
    void post(F&& f, Args&&... args) {
        using Fn = std::decay_t<F>;
        using R = std::invoke_result_t<Fn, std::decay_t<Args>...>;
        check_task<Fn, R, std::decay_t<Args>...>();
        auto* task = new detail::MpiPost<Core>(
            core_, detail::encode_call<&detail::call_trampoline<Fn, std::decay_t<Args>...>>(Fn(f), args...));
        enqueue(task, [task] { delete task; });
    }

    /// `f` on every input, results in input order; chunks of `chunk` inputs
    /// travel as one task (0: about four chunks per worker). The first
    /// failure, in input order, is rethrown after all work ended.
    template <class F, std::ranges::forward_range Range>
    auto map(F&& f, const Range& inputs, std::size_t chunk = 0)
        -> detail::map_result_t<std::decay_t<F>&, const std::ranges::range_value_t<Range>&> {
        using Fn = std::decay_t<F>;
        using In = std::ranges::range_value_t<Range>;
        using R = std::invoke_result_t<Fn&, const In&>;
        check_task<Fn, R, In>();
        return detail::map_by_slices<R, In>(inputs, chunk, size(), [&](const auto& slice) {
            auto* task = new detail::MpiTask<std::vector<R>>(
                detail::encode_call<&detail::map_trampoline<Fn, In>>(Fn(f), slice), core_.counters(), box_);
            enqueue(task, [task] {
                task->release();
                task->release();
            });
            return detail::make_future<std::vector<R>>(task);
        });
    }

    /// A single-pass range of `f(input)` in input order, each result yielded
    /// as soon as it and those before it are ready; inputs are drawn lazily,
    /// at most `options.in_flight` chunks ahead (see detail/imap.hpp).
    template <class F, std::ranges::input_range Range>
    auto imap(F&& f, Range&& inputs, MapOptions options = {}) {
        using Fn = std::decay_t<F>;
        using In = std::ranges::range_value_t<Range>;
        using R = std::invoke_result_t<Fn&, const In&>;
        static_assert(!std::is_void_v<R>, "crew::imap: the function must return a value");
        check_task<Fn, R, In>();
        return detail::make_imap<R>(
            std::forward<Range>(inputs),
            [this, fn = Fn(f)](std::vector<In>&& chunk) {
                auto* task = new detail::MpiTask<std::vector<R>>(
                    detail::encode_call<&detail::map_trampoline<Fn, In>>(fn, chunk), core_.counters(), box_);
                enqueue(task, [task] {
                    task->release();
                    task->release();
                });
                return detail::make_future<std::vector<R>>(task);
            },
            options, size());
    }

    /// Blocks until every task submitted or posted so far (and those they
    /// submitted) has finished; the executor stays usable. Not from a
    /// continuation of this executor (crew::InvalidArgument).
    void wait_idle() { core_.wait_idle(nullptr, detail::current_mpi_communicator == this); }

    /// wait_idle() for at most `d`; true when idle.
    template <class Rep, class Period>
    bool wait_idle_for(const std::chrono::duration<Rep, Period>& d) {
        const auto deadline = detail::deadline_after(d);
        return core_.wait_idle(&deadline, detail::current_mpi_communicator == this);
    }

    /// A snapshot of the task counters; `workers` is size().
    [[nodiscard]] Stats stats() const noexcept { return core_.counters().snapshot(size()); }

    /// Stops taking work: `drain` runs what was submitted, `cancel_pending`
    /// cancels what no worker began, `kill` also stops what runs (the ranks
    /// kill those worker processes; the tasks fail with crew::Cancelled).
    /// Then the serving ranks stop this executor's worker processes. Later
    /// submit/post/map throw crew::ExecutorShutdown. From a continuation it
    /// only closes (the destructor joins).
    void shutdown(Shutdown how = Shutdown::drain) {
        if (how != Shutdown::drain) {
            std::uint8_t expected = 0;
            cancel_how_.compare_exchange_strong(expected, static_cast<std::uint8_t>(how == Shutdown::kill ? 2 : 1));
        }
        core_.close(how);
        detail::mpi_wake(wake_);
        if (detail::current_mpi_communicator == this) return;
        std::lock_guard lock(join_mutex_);
        if (comm_.joinable()) comm_.join();
    }

    /// Number of worker processes (over all serving ranks).
    [[nodiscard]] std::size_t size() const noexcept { return slots_.size(); }

private:
    using Core = detail::ExecutorCore<Sync>;

    static constexpr std::size_t queue_capacity = 1024;
    static constexpr std::size_t batch_limit = 64;

    template <class Fn, class R, class... Args>
    static constexpr void check_task() {
        detail::check_remote_task<Fn, R, Args...>();
    }

    template <class Discard>
    void enqueue(detail::Job* job, Discard discard) {
        if (error_) {
            discard();
            throw ChannelError(error_message_);
        }
        core_.enqueue(job, discard);
        if (sleeping_.load(std::memory_order_seq_cst)) detail::mpi_wake(wake_);
    }

    struct Slot {
        int rank;
        std::uint32_t in_flight;
    };

    // Asks each serving rank to start its share of the workers; waits for
    // every answer.
    void open_ranks(std::size_t n, std::size_t ranks) {
        std::vector<std::byte> out;
        const std::vector<std::byte> initializer_call = detail::encode_initializer(options_.initializer);
        std::size_t asked = 0;
        for (std::size_t r = 0; r < ranks && r < n; ++r) {
            const std::size_t here = n / ranks + (r < n % ranks ? 1 : 0);
            Writer w = detail::mpi_begin_message(out, detail::MpiKind::open);
            w.write_value(id_);
            w.write_value(static_cast<std::int32_t>(tag_));
            w.write_value(static_cast<std::uint32_t>(here));
            w.write_value(static_cast<std::uint64_t>(options_.max_tasks_per_worker));
            w.write_value(static_cast<std::int64_t>(options_.task_timeout.count()));
            w.write_value(static_cast<std::uint64_t>(options_.memory_limit));
            w.write_value(static_cast<std::uint64_t>(options_.max_message_size));
            w.write_value(static_cast<std::uint8_t>(options_.start ? 1 + static_cast<int>(*options_.start) : 0));
            w.write_value(initializer_call);
            detail::mpi_end_message(out);
            outbox_.send(static_cast<int>(1 + r), detail::mpi_control_tag, std::move(out));
            ++asked;
        }
        opened_ranks_ = asked;
        std::string errors;
        collect_answers(asked, [&](detail::MpiKind kind, Reader& r, int) {
            if (kind != detail::MpiKind::opened)
                throw ChannelError("crew: an unexpected MPI message while starting an MpiExecutor");
            if (r.read_value<std::uint8_t>() == 0) errors += r.read_value<std::string>() + "\n";
            return true;
        });
        if (!errors.empty()) {
            close_ranks(Shutdown::drain);
            errors.pop_back();
            throw Error(errors);
        }
    }

    // Tells every rank with workers to stop them; waits for the answers.
    void close_ranks(Shutdown how) {
        std::vector<std::byte> out;
        for (std::size_t r = 0; r < opened_ranks_; ++r) {
            Writer w = detail::mpi_begin_message(out, detail::MpiKind::close);
            w.write_value(id_);
            w.write_value(static_cast<std::uint8_t>(how));
            detail::mpi_end_message(out);
            outbox_.send(static_cast<int>(1 + r), detail::mpi_control_tag, std::move(out));
        }
        collect_answers(opened_ranks_, [&](detail::MpiKind kind, Reader& r, int from) {
            if (kind == detail::MpiKind::results) receive_results(r, from);  // late results still count
            return kind == detail::MpiKind::closed;
        });
        while (!outbox_.empty()) outbox_.progress();
        opened_ranks_ = 0;
    }

    // Receives on this executor's tag until `expected` messages were answers:
    // `on(kind, reader, from)` handles each message and says whether it was one.
    template <class OnMessage>
    void collect_answers(std::size_t expected, OnMessage on) {
        std::vector<std::byte> in;
        detail::MpiIdle idle;
        for (std::size_t answers = 0; answers < expected;) {
            int from = 0;
            outbox_.progress();
            if (!detail::mpi_try_receive(MPI_ANY_SOURCE, tag_, from, in)) {
                idle.idle(wake_, wake_.load());
                continue;
            }
            idle.busy();
            Reader r(in);
            if (on(static_cast<detail::MpiKind>(r.read_value<std::uint8_t>()), r, from)) ++answers;
        }
    }

    // The communication thread: ships batches to idle slots, finishes tasks
    // from the answers, forwards cancel requests, until shut down and done.
    void communicate() noexcept {
        detail::current_mpi_communicator = this;
        detail::inside_executor = true;
        std::vector<std::byte> in;
        detail::MpiIdle idle;
        std::uint8_t kill_sent = 0;  // the cancel_how_ already sent to the ranks
        try {
            for (;;) {
                const std::uint32_t seen = wake_.load(std::memory_order_acquire);
                const bool closed = core_.is_closed();
                bool did = outbox_.progress();
                int from = 0;
                while (detail::mpi_try_receive(MPI_ANY_SOURCE, tag_, from, in)) {
                    did = true;
                    Reader r(in);
                    if (static_cast<detail::MpiKind>(r.read_value<std::uint8_t>()) != detail::MpiKind::results)
                        throw ChannelError("crew: an unexpected MPI message reached an MpiExecutor");
                    receive_results(r, from);
                }
                did = forward_cancels() || did;
                if (const std::uint8_t how = cancel_how_.load(); how > kill_sent) {
                    kill_sent = how;
                    send_kill(how == 2 ? Shutdown::kill : Shutdown::cancel_pending);
                }
                bool idle_slot = false;
                did = dispatch(idle_slot) || did;
                if (closed && !did && in_flight_ == 0 && outbox_.empty()) break;
                if (did || !outbox_.empty()) {
                    idle.busy();
                    continue;
                }
                sleeping_.store(true, std::memory_order_seq_cst);
                if (!(idle_slot && core_.counters().queued_now() > 0) && !core_.is_closed()) idle.idle(wake_, seen);
                else std::this_thread::yield();
                sleeping_.store(false, std::memory_order_relaxed);
            }
            const std::uint8_t how = cancel_how_.load();
            close_ranks(how == 2 ? Shutdown::kill : how == 1 ? Shutdown::cancel_pending : Shutdown::drain);
        } catch (const std::exception& e) {
            broken(e.what());
        }
        close_box();
        detail::current_mpi_communicator = nullptr;
    }

    // Gives each idle slot a fair share of what waits (at least one task).
    bool dispatch(bool& idle_slot) {
        bool did = false;
        detail::Job* job = nullptr;
        std::vector<std::byte> out;
        for (std::size_t s = 0; s < slots_.size(); ++s) {
            auto& slot = slots_[s];
            if (slot.in_flight != 0) continue;
            const std::size_t waiting = core_.counters().queued_now();
            const std::size_t limit = std::clamp<std::size_t>(waiting / slots_.size(), 1, batch_limit);
            std::uint32_t count = 0;
            Writer w(out);
            while (count < limit && core_.try_take(job)) {
                did = true;
                auto* remote = static_cast<detail::MpiJob*>(job);
                if (!remote->ship()) {  // cancelled while queued
                    core_.counters().cancelled();
                    remote->drop();
                    continue;
                }
                core_.counters().started();
                if (count == 0) {
                    w = detail::mpi_begin_message(out, detail::MpiKind::batch);
                    w.write_value(id_);
                    w.write_value(std::uint32_t{0});
                }
                remote->id = ++next_task_;
                remote->slot = s;
                shipped_.emplace(remote->id, remote);
                w.write_value(remote->id);
                w.write_value(static_cast<std::uint64_t>(remote->call.size()));
                w.write(remote->call.data(), remote->call.size());
                std::vector<std::byte>().swap(remote->call);  // the arguments are sent: free them
                ++count;
            }
            if (count == 0) {
                idle_slot = true;
                break;  // nothing left to take
            }
            std::memcpy(out.data() + sizeof(std::uint64_t) + 1 + sizeof id_, &count, sizeof count);
            detail::mpi_end_message(out);
            slot.in_flight = count;
            in_flight_ += count;
            outbox_.send(slot.rank, detail::mpi_control_tag, std::move(out));
            out = {};
        }
        return did;
    }

    void receive_results(Reader& r, int from) {
        const auto count = r.read_value<std::uint32_t>();
        for (std::uint32_t i = 0; i < count; ++i) {
            const auto id = r.read_value<std::uint64_t>();
            const auto outcome = static_cast<detail::MpiOutcome>(r.read_value<std::uint8_t>());
            if (outcome == detail::MpiOutcome::refused) {
                auto it = shipped_.find(id);
                if (it != shipped_.end() && it->second->answer.load() == detail::MpiJob::asking) {
                    it->second->answer.store(detail::MpiJob::no);
                    detail::futex_wake(it->second->answer);
                }
                continue;
            }
            auto it = shipped_.find(id);
            if (it == shipped_.end()) throw ChannelError("crew: an MPI rank answered for a task it was not given");
            detail::MpiJob* job = it->second;
            shipped_.erase(it);
            --slots_[job->slot].in_flight;
            --in_flight_;
            auto& counters = core_.counters();
            switch (outcome) {
                case detail::MpiOutcome::reply: {
                    const auto n = r.read_value<std::uint64_t>();
                    Reader reply(r.take(static_cast<std::size_t>(n)));
                    finish(job, reply);
                    break;
                }
                case detail::MpiOutcome::failed: {
                    auto error = detail::mpi_decode_failure(r, from);
                    bool stopped = false;
                    try {
                        std::rethrow_exception(error);
                    } catch (const Cancelled&) {
                        stopped = true;
                    } catch (...) {
                    }
                    job->fail(std::move(error));
                    stopped ? counters.stopped() : counters.finished(false);
                    break;
                }
                case detail::MpiOutcome::cancelled:
                    job->cancelled_remotely();
                    counters.stopped();
                    break;
                default: throw ChannelError("crew: an MPI rank sent a malformed answer");
            }
        }
    }

    // A worker's reply: outcome byte, then the value or the exception.
    void finish(detail::MpiJob* job, Reader& reply) {
        auto& counters = core_.counters();
        std::exception_ptr outcome_error;
        auto error = detail::capture_exception([&] {
            auto outcome = static_cast<detail::Outcome>(reply.read_value<std::uint8_t>());
            if (outcome == detail::Outcome::value) return;
            if (outcome != detail::Outcome::exception)
                throw ChannelError("crew: an MPI rank sent a worker reply of unknown kind");
            outcome_error = detail::decode_exception(reply);  // as ProcessExecutor rebuilds it
        });
        if (error || outcome_error) {
            job->fail(std::move(error ? error : outcome_error));
            counters.finished(false);
            return;
        }
        counters.finished(job->complete(reply));
    }

    bool forward_cancels() {
        std::vector<detail::MpiJob*> requests;
        {
            std::lock_guard lock(box_->mutex);
            requests.swap(box_->requests);
        }
        std::vector<std::byte> out;
        for (auto* job : requests) {
            auto it = shipped_.find(job->id);
            if (it == shipped_.end() || it->second != job) {  // finished already
                job->answer.store(detail::MpiJob::no);
                detail::futex_wake(job->answer);
                continue;
            }
            Writer w = detail::mpi_begin_message(out, detail::MpiKind::cancel);
            w.write_value(id_);
            w.write_value(job->id);
            detail::mpi_end_message(out);
            outbox_.send(slots_[job->slot].rank, detail::mpi_control_tag, std::move(out));
        }
        return !requests.empty();
    }

    // Shutdown::cancel_pending or kill, at once on every rank: tasks shipped
    // there that no worker began are cancelled (kill also stops what runs).
    void send_kill(Shutdown how) {
        std::vector<std::byte> out;
        for (std::size_t r = 0; r < opened_ranks_; ++r) {
            Writer w = detail::mpi_begin_message(out, detail::MpiKind::kill);
            w.write_value(id_);
            w.write_value(static_cast<std::uint8_t>(how));
            detail::mpi_end_message(out);
            outbox_.send(static_cast<int>(1 + r), detail::mpi_control_tag, std::move(out));
        }
    }

    // MPI failed: every task in flight or queued fails with the error, later
    // submits throw it.
    void broken(const std::string& what) noexcept {
        error_message_ = what;
        error_.store(true);
        auto error = std::make_exception_ptr(ChannelError(what));
        for (auto& [id, job] : shipped_) {
            job->fail(error);
            core_.counters().finished(false);
        }
        shipped_.clear();
        in_flight_ = 0;
        core_.close(Shutdown::drain);
        detail::Job* job = nullptr;
        while (core_.try_take(job)) {
            auto* remote = static_cast<detail::MpiJob*>(job);
            if (!remote->ship()) {
                core_.counters().cancelled();
                remote->drop();
                continue;
            }
            core_.counters().started();
            remote->fail(error);
            core_.counters().finished(false);
        }
    }

    void close_box() noexcept {
        std::lock_guard lock(box_->mutex);
        box_->closed = true;
        for (auto* job : box_->requests) {
            job->answer.store(detail::MpiJob::no);
            detail::futex_wake(job->answer);
        }
        box_->requests.clear();
    }

    Options options_;
    Core core_;
    std::vector<Slot> slots_;
    std::uint32_t id_ = 0;
    int tag_ = 1;
    std::size_t opened_ranks_ = 0;
    std::shared_ptr<detail::MpiCancelBox> box_;
    detail::MpiOutbox outbox_;                                // communication thread (constructor before it)
    std::unordered_map<std::uint64_t, detail::MpiJob*> shipped_;  // communication thread
    std::uint64_t next_task_ = 0;
    std::size_t in_flight_ = 0;
    std::atomic<std::uint32_t> wake_{0};
    std::atomic<bool> sleeping_{false};
    std::atomic<std::uint8_t> cancel_how_{0};  // 0 drain, 1 cancel_pending, 2 kill
    std::atomic<bool> error_{false};
    std::string error_message_;
    std::mutex join_mutex_;
    std::thread comm_;
};

}  // namespace crew
