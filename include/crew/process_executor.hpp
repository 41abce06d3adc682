// crew/process_executor.hpp — crew::ProcessExecutor<Channel, Sync>: worker
// processes behind the same crew::Future API as ThreadExecutor.
//
// When: CPU-bound work that must not share memory or fate: a task that
// crashes (segfault, abort, exit) fails alone with crew::WorkerDied, a new
// worker takes its place, every other task completes. Tasks can be killed
// (Options::task_timeout) and limited (Options::memory_limit).
// Cost: each task and result is encoded (crew::Codec) and crosses a channel.
// Tasks are shipped in batches (up to 64 and 256 KiB per message; a large
// task travels alone, never copied into a batch) and results streamed
// back, so many small tasks cost about a microsecond each, while a single
// submit -> get round trip costs one IPC round trip (see docs/benchmarks.md).
//
// Tasks: a function pointer or a lambda that captures nothing; state travels
// as arguments, encoded by crew::Codec. A capturing lambda does not compile.
//
// How it works (docs/design.md): one dispatcher thread per worker in this
// process takes tasks from the Sync policy's queue, ships them to its worker
// over its own Channel endpoint, completes the futures from the results, and
// watches the worker: death (through its pidfd), timeout (SIGKILL), garbage
// on the channel. Workers start by Start::spawn (fork + exec of this same
// binary: safe when this process runs threads) unless Options::start says
// otherwise (Start::fork_server: one fresh copy forks them all; Start::fork);
// they die with their parent (PR_SET_PDEATHSIG, or the fork server's control
// socket closing).
//
// Spawned and fork-server workers are fresh copies of the program that serve
// from crew::Session, the first statement of main(): they have run the whole
// static initialisation (every global constructed as in the parent) and
// nothing of main() after that line. Without a Session those start methods
// are refused with crew::InvalidArgument; Start::fork needs none.
//
// A task counts as started when its worker begins to run it, not when it was
// shipped: cancel() and shutdown(cancel_pending) stop every task a worker has
// not begun, batched or not (detail/wire.hpp).
//
// Continuations (Future::then) of this executor's futures run in this
// process, on the dispatcher thread that received the result: keep them
// short, and never block in one on another task of the same executor (that
// task may need the very dispatcher that is blocked). A continuation may
// submit work (it never blocks), and may call shutdown() (which then does not
// wait); it must not destroy the executor.
#pragma once

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <ranges>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <crew/codec.hpp>
#include <crew/detail/deadline.hpp>
#include <crew/detail/executor_core.hpp>
#include <crew/detail/imap.hpp>
#include <crew/detail/peer_fd.hpp>
#include <crew/detail/remote_call.hpp>
#include <crew/detail/shared_state.hpp>
#include <crew/detail/wire.hpp>
#include <crew/detail/worker_main.hpp>
#include <crew/detail/worker_process.hpp>
#include <crew/errors.hpp>
#include <crew/future.hpp>
#include <crew/initializer.hpp>
#include <crew/ipc/channel.hpp>
#include <crew/ipc/shared_memory.hpp>
#include <crew/options.hpp>
#include <crew/session.hpp>
#include <crew/sync/lock_free.hpp>
#include <crew/sync/policy.hpp>

namespace crew {

namespace detail {

/// A task's encoded call and the SharedArrays it names (kept open until the
/// task ends, so the worker can still map them).
struct EncodedCall {
    std::vector<std::byte> bytes;
    std::vector<std::shared_ptr<const void>> pins;
};

/// A queued process task, as the dispatcher sees it: its encoded call, how
/// to finish it, and where it is (so cancel() can stop it until a worker
/// begins it). The dispatcher holds one reference from take() to one of
/// complete(), fail() or release_job().
///
/// `where_` says who may start the task once the dispatcher claimed it:
///   held_fresh / held_recalled   the dispatcher holds it (never shipped / its
///                                worker died before beginning it); cancel()
///                                wins with a CAS to held_cancelled
///   seq                          shipped as task `seq`: the control word decides
class RemoteJob : public Job {
public:
    /// detail::batch_overhead bytes of room for the batch framing, then the
    /// encoded call (detail/remote_call.hpp); freed when the task ends.
    std::vector<std::byte> call;
    std::vector<std::shared_ptr<const void>> pins;

    [[nodiscard]] std::span<const std::byte> call_bytes() const noexcept {
        return std::span<const std::byte>(call).subspan(batch_overhead);
    }

    /// The dispatcher took the job from the queue: false when it was
    /// cancelled there (the job is then gone).
    virtual bool claim() noexcept = 0;
    /// The worker returned a value, encoded in `result`.
    virtual void complete(Reader& result) noexcept = 0;
    virtual void fail(std::exception_ptr error) noexcept = 0;
    /// Someone won the task's cancellation after the dispatcher claimed it:
    /// publish crew::Cancelled and count it; the dispatcher's reference stays.
    virtual void publish_cancel(bool was_started) noexcept = 0;
    /// Drops the dispatcher's reference (the task was cancelled and is done).
    virtual void release_job() noexcept = 0;

    /// The dispatcher ships the job as task `seq` under `control` (already
    /// armed): false when it was cancelled while held (drop it then).
    bool ship(ControlBlock* control, std::uint64_t seq) noexcept {
        if (control_ == nullptr) control_ = control;  // one dispatcher per job: set once, before the CAS
        std::uint64_t held = where_.load(std::memory_order_relaxed);
        while (held == held_fresh || held == held_recalled) {
            if (where_.compare_exchange_weak(held, seq, std::memory_order_acq_rel, std::memory_order_relaxed)) {
                if (held == held_fresh) counters_.started();
                return true;
            }
        }
        return false;
    }
    /// Back in the dispatcher's hands: its worker died before beginning it.
    void recall() noexcept { where_.store(held_recalled, std::memory_order_release); }

    /// Shutdown cancels a held job: true when it won (then publish_cancel ran).
    bool cancel_held() noexcept {
        std::uint64_t held = where_.load(std::memory_order_acquire);
        while (held == held_fresh || held == held_recalled) {
            if (where_.compare_exchange_weak(held, held_cancelled, std::memory_order_acq_rel,
                                             std::memory_order_acquire)) {
                publish_cancel(held == held_recalled);
                return true;
            }
        }
        return false;
    }

protected:
    explicit RemoteJob(EncodedCall encoded, TaskCounters& counters)
        : call(std::move(encoded.bytes)), pins(std::move(encoded.pins)), counters_(counters) {}
    ~RemoteJob() = default;

    /// Future::cancel() once the dispatcher claimed the job: wins while the
    /// dispatcher holds it, or while its worker has not begun it.
    bool cancel_claimed() noexcept {
        if (cancel_held()) return true;
        const std::uint64_t where = where_.load(std::memory_order_acquire);
        if (where >= held_cancelled) return where == held_cancelled;
        if (!control_->cancel(where)) return false;
        publish_cancel(true);
        return true;
    }
    void free_call() noexcept {
        std::vector<std::byte>().swap(call);
        pins.clear();
    }

    TaskCounters& counters_;

private:
    static constexpr std::uint64_t held_cancelled = ~std::uint64_t{0} - 2;
    static constexpr std::uint64_t held_recalled = ~std::uint64_t{0} - 1;
    static constexpr std::uint64_t held_fresh = ~std::uint64_t{0};

    ControlBlock* control_ = nullptr;
    std::atomic<std::uint64_t> where_{held_fresh};
};

template <class R>
class ProcessTask final : public SharedState<R>, public RemoteJob {
public:
    // Its result comes from another process, through a dispatcher thread.
    [[nodiscard]] int wait_pauses() const noexcept override { return pauses_before_yield(); }
    ProcessTask(EncodedCall encoded, TaskCounters& counters)
        : SharedState<R>(2), RemoteJob(std::move(encoded), counters) {}

    bool claim() noexcept override {
        if (this->try_claim()) return true;
        this->release();
        return false;
    }
    void complete(Reader& result) noexcept override {
        free_call();
        auto error = capture_exception([&] {
            if constexpr (std::is_void_v<R>) {
                result.expect_end();
            } else {
                auto value = result.read_value<R>();
                result.expect_end();
                this->publish_value(std::move(value));
            }
        });
        if (error) return fail(std::move(error));
        if constexpr (std::is_void_v<R>) this->publish_value();
        counters_.finished(true);
        this->release();
    }
    void fail(std::exception_ptr error) noexcept override {
        free_call();
        this->publish_error(std::move(error));
        counters_.finished(false);
        this->release();
    }
    void publish_cancel(bool was_started) noexcept override {
        this->publish_cancelled();
        if (was_started)
            counters_.stopped();
        else
            counters_.cancelled();
    }
    void release_job() noexcept override {
        free_call();
        this->release();
    }
    void abandon() noexcept override {
        this->try_cancel();
        this->release();
    }
    bool try_cancel() noexcept override {
        if (this->try_claim()) {  // still queued in this process
            this->publish_cancelled();
            counters_.cancelled();
            return true;
        }
        if (this->status() == Status::cancelled) return true;
        // Claimed by the dispatcher: held there, or shipped and maybe not begun.
        return this->status() == Status::running && cancel_claimed();
    }

private:
    void destroy() noexcept override { delete this; }
};

template <class Core>
class ProcessPost final : public RemoteJob {
public:
    ProcessPost(Core& core, EncodedCall encoded) : RemoteJob(std::move(encoded), core.counters()), core_(core) {}
    bool claim() noexcept override { return true; }
    void complete(Reader&) noexcept override {
        counters_.finished(true);
        delete this;
    }
    void fail(std::exception_ptr error) noexcept override {
        core_.report(std::move(error));
        counters_.finished(false);
        delete this;
    }
    void publish_cancel(bool was_started) noexcept override {
        if (was_started)
            counters_.stopped();
        else
            counters_.cancelled();
    }
    void release_job() noexcept override { delete this; }
    void abandon() noexcept override {
        counters_.cancelled();
        delete this;
    }

private:
    Core& core_;
};

/// The ProcessExecutor whose dispatcher runs on this thread (continuations
/// of its futures run here), or null.
inline thread_local const void* current_dispatcher = nullptr;

inline std::string describe_status(int status, pid_t pid) {
    std::string who = "crew: the worker process (pid " + std::to_string(pid) + ") running this task ";
    if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        const char* name = ::sigabbrev_np(sig);
        return who + "was killed by signal " + std::to_string(sig) + " (SIG" + (name ? name : "?") +
               "); only this task failed and a new worker took its place";
    }
    return who + "exited with code " + std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : -1) +
           " before finishing it; only this task failed and a new worker took its place";
}

}  // namespace detail

/// A pool of worker processes. Channel (crew::ipc::Pipe, Socket, ...) carries
/// tasks and results; Sync (crew::sync::LockFree, Mutex, Semaphore) guards the
/// queue of tasks waiting in this process and, in its process-shared form,
/// the memory this process shares with each worker (SharedMemory's rings: a
/// futex, a robust mutex + condition variable, or a counting semaphore).
template <class Channel = ipc::SharedMemory, class Sync = sync::LockFree>
class ProcessExecutor {
    static_assert(ipc::channel<Channel>,
                  "crew::ProcessExecutor<Channel, Sync>: Channel must be an IPC channel: crew::ipc::Pipe, "
                  "crew::ipc::Socket, crew::ipc::MessageQueue or crew::ipc::SharedMemory");
    static_assert(sync::policy<Sync>,
                  "crew::ProcessExecutor<Channel, Sync>: Sync must be a sync policy: crew::sync::LockFree, "
                  "crew::sync::Mutex or crew::sync::Semaphore");

public:
    using channel_type = Channel;
    using sync_policy = Sync;

    /// Starts `workers` processes (0: one per hardware thread, or
    /// options.workers) and returns when they are ready. Start::spawn (the
    /// default) and Start::fork_server need a crew::Session in main().
    explicit ProcessExecutor(std::size_t workers = 0, Options options = {})
        : options_(std::move(options)), core_(options_, queue_capacity) {
        const Start start = options_.start.value_or(Start::spawn);
        (void)serves_;  // this executor's channel is one a spawned copy can serve
        if (start != Start::fork && !Session::active())
            throw InvalidArgument(
                std::string("crew::ProcessExecutor: Start::") + (start == Start::spawn ? "spawn" : "fork_server") +
                " starts workers as fresh copies of this program, which serve from crew::Session: add "
                "`crew::Session session(argc, argv);` as the first statement of main() (include <crew/crew.hpp>), "
                "or pass Options{.start = crew::Start::fork}. (A shared library loaded by a program without a "
                "Session cannot use these start methods.)");
        if (options_.max_message_size == 0)
            throw InvalidArgument("crew::ProcessExecutor: Options::max_message_size must be at least 1 byte");
        config_.memory_limit = options_.memory_limit;
        config_.max_message = options_.max_message_size;
        initializer_call_ = detail::encode_initializer(options_.initializer);
        if (initializer_call_.size() + detail::ControlBlock::hello_bytes > options_.max_message_size)
            throw InvalidArgument("crew::ProcessExecutor: the initializer's arguments take " +
                                  std::to_string(initializer_call_.size()) +
                                  " bytes encoded, more than Options::max_message_size (" +
                                  std::to_string(options_.max_message_size) + " bytes)");
        const std::size_t n = detail::resolve_workers(workers, options_);
        if (start == Start::fork_server) server_ = std::make_unique<detail::ForkServer>(config_.to_text());
        dispatchers_.reserve(n);
        try {
            for (std::size_t i = 0; i < n; ++i) dispatchers_.emplace_back([this] { dispatch(); });
        } catch (...) {
            shutdown(Shutdown::cancel_pending);
            throw;
        }
        // Return once every worker runs and waits for work, so the first tasks
        // spread over all of them.
        while (idle_.load(std::memory_order_acquire) < n) std::this_thread::sleep_for(std::chrono::microseconds(100));
    }

    ProcessExecutor(const ProcessExecutor&) = delete;
    ProcessExecutor& operator=(const ProcessExecutor&) = delete;

    /// shutdown(drain): runs what was submitted, stops and reaps every worker.
    ~ProcessExecutor() { shutdown(Shutdown::drain); }

    /// Runs `f(args...)` in a worker process. `f` is a function pointer or a
    /// captureless lambda; arguments and result are encoded by crew::Codec.
    /// An encoded call over Options::max_message_size throws crew::ChannelError
    /// here, without touching a worker.
    template <class F, class... Args>
    auto submit(F&& f, Args&&... args) -> Future<std::invoke_result_t<std::decay_t<F>, std::decay_t<Args>...>> {
        using Fn = std::decay_t<F>;
        using R = std::invoke_result_t<Fn, std::decay_t<Args>...>;
        check_task<Fn, R, std::decay_t<Args>...>();
        auto* task = new detail::ProcessTask<R>(
            encode<&detail::call_trampoline<Fn, std::decay_t<Args>...>>(Fn(f), args...), core_.counters());
        enqueue(task, [task] { delete task; });
        return detail::make_future<R>(task);
    }

    /// Runs `f(args...)` in a worker with no future; an exception goes to
    /// Options::on_error (as the same exception type, see submit), or to stderr.
    template <class F, class... Args>
    void post(F&& f, Args&&... args) {
        using Fn = std::decay_t<F>;
        using R = std::invoke_result_t<Fn, std::decay_t<Args>...>;
        check_task<Fn, R, std::decay_t<Args>...>();
        auto* task =
            new detail::ProcessPost<Core>(core_, encode<&detail::call_trampoline<Fn, std::decay_t<Args>...>>(Fn(f), args...));
        enqueue(task, [task] { delete task; });
    }

    /// `f` applied to every input in worker processes, results in input
    /// order; chunks of `chunk` inputs travel as one task (0: about four
    /// chunks per worker). The first failure, in input order, is rethrown
    /// after all work ended.
    template <class F, std::ranges::forward_range Range>
    auto map(F&& f, const Range& inputs, std::size_t chunk = 0)
        -> detail::map_result_t<std::decay_t<F>&, const std::ranges::range_value_t<Range>&> {
        using Fn = std::decay_t<F>;
        using In = std::ranges::range_value_t<Range>;
        using R = std::invoke_result_t<Fn&, const In&>;
        check_task<Fn, R, In>();
        return detail::map_by_slices<R, In>(inputs, chunk, size(),
                                            [&](const auto& slice) { return submit_chunk<R, In>(Fn(f), slice); });
    }

    /// `f` over `inputs`, lazily, results in input order as they come; see
    /// ThreadExecutor::imap. Each chunk travels as one task.
    template <class F, std::ranges::input_range Range>
    auto imap(F&& f, Range&& inputs, MapOptions options = {}) {
        using Fn = std::decay_t<F>;
        using In = std::ranges::range_value_t<std::remove_cvref_t<Range>>;
        using R = std::invoke_result_t<Fn&, const In&>;
        static_assert(!std::is_void_v<R>, "crew::imap: the function must return a value; use post() or submit() "
                                          "for functions that return void");
        check_task<Fn, R, In>();
        return detail::make_imap<R>(
            std::forward<Range>(inputs),
            [this, fn = Fn(f)](std::vector<In>&& chunk) { return submit_chunk<R, In>(fn, chunk); }, options, size());
    }

    /// Stops taking work: `drain` runs what was submitted; `cancel_pending`
    /// cancels every task no worker has begun (shipped ones too); `kill` also
    /// kills the workers running a task (those tasks fail with
    /// crew::Cancelled) and returns promptly even when a task hangs. Then
    /// stops every worker and reaps it. Later submit/post/map throw
    /// crew::ExecutorShutdown. Safe to call more than once, from any thread.
    void shutdown(Shutdown how = Shutdown::drain) {
        if (how != Shutdown::drain) {
            int want = how == Shutdown::kill ? stop_kill : stop_cancel;
            int now = stop_.load(std::memory_order_relaxed);
            while (now < want && !stop_.compare_exchange_weak(now, want, std::memory_order_acq_rel)) {
            }
        }
        core_.close(how);
        // From a continuation, which runs on one of our dispatcher threads: it
        // cannot join itself. Closing is enough; the destructor joins.
        if (detail::current_dispatcher == this) return;
        std::lock_guard lock(join_mutex_);
        for (auto& t : dispatchers_)
            if (t.joinable()) t.join();
        server_.reset();  // every worker is retired: the fork server can go
    }

    /// Blocks until every task submitted or posted so far, and every task
    /// those submitted, has finished (or was cancelled); the executor stays
    /// usable. Throws crew::InvalidArgument from a continuation of this
    /// executor (it would wait for itself).
    void wait_idle() { core_.wait_idle(nullptr, detail::current_dispatcher == this); }

    /// wait_idle() for at most `d`; true when idle.
    template <class Rep, class Period>
    bool wait_idle_for(const std::chrono::duration<Rep, Period>& d) {
        const auto deadline = detail::deadline_after(d);
        return core_.wait_idle(&deadline, detail::current_dispatcher == this);
    }

    /// A snapshot of the counters. Here `running` counts tasks shipped to a
    /// worker and not finished (a worker runs them one after another).
    [[nodiscard]] Stats stats() const noexcept { return core_.counters().snapshot(size()); }

    /// Number of worker processes.
    [[nodiscard]] std::size_t size() const noexcept { return dispatchers_.size(); }

private:
    using Core = detail::ExecutorCore<Sync>;
    // The channel in its form for Sync: for SharedMemory, the rings' waits
    // use the policy's process-shared primitive.
    using Transport = ipc::with_sync_t<Channel, Sync>;
    using Endpoint = typename Transport::Endpoint;

    // The Sync policy's ring in front of the (unbounded) queue.
    static constexpr std::size_t queue_capacity = 1024;
    // A batch stops growing at this many bytes, and a call this large travels
    // alone: a large task never holds small ones (or another worker) back.
    static constexpr std::size_t batch_bytes = std::size_t{256} << 10;
    // How often a dispatcher waiting for a result checks that its worker lives
    // (channels without EOF, or an fd a sibling inherited, give no other
    // sign) and whether shutdown asked it to cancel or kill.
    static constexpr std::chrono::milliseconds liveness_poll{50};

    static constexpr int stop_none = 0, stop_cancel = 1, stop_kill = 2;

    // Registered during static initialisation of any program that uses this
    // executor type, so that its spawned copies can serve this channel. Not
    // const: a const bool may be a constant expression, so compilers
    // evaluate its initialiser even under `extern template` (see the end),
    // which GCC rejects and clang pays for by compiling the worker's side.
    static inline bool serves_ = detail::serve_workers_over<Transport>();

    template <class Fn, class R, class... Args>
    static constexpr void check_task() {
        detail::check_remote_task<Fn, R, Args...>();
    }

    // Encodes a call; the SharedArrays it names are pinned with it.
    template <detail::Trampoline T, class Fn, class... Args>
    detail::EncodedCall encode(const Fn& f, const Args&... args) const {
        detail::EncodedCall call;
        {
            detail::PinScope scope(call.pins);
            call.bytes = detail::encode_call<T, detail::batch_overhead>(f, args...);
        }
        return checked(std::move(call));
    }

    // An encoded call over the limit is refused here: a refused send is not
    // a dead worker.
    detail::EncodedCall checked(detail::EncodedCall call) const {
        const std::size_t size = call.bytes.size() - detail::batch_overhead;  // the call, not its framing
        if (size > options_.max_message_size)
            throw ChannelError("crew: this task's encoded call is " + std::to_string(size) +
                               " bytes, over Options::max_message_size (" +
                               std::to_string(options_.max_message_size) +
                               "); pass less data per task (or crew::SharedArray), or raise the limit");
        if (options_.memory_limit != 0 && size >= options_.memory_limit)
            throw ChannelError("crew: this task's encoded call is " + std::to_string(size) +
                               " bytes, more than a worker may hold under Options::memory_limit (" +
                               std::to_string(options_.memory_limit) + " bytes)");
        return call;
    }

    // `slice` encodes as std::vector<In> (see detail::map_by_slices).
    template <class R, class In, class Fn, class Slice>
    Future<std::vector<R>> submit_chunk(Fn f, const Slice& slice) {
        auto* task = new detail::ProcessTask<std::vector<R>>(encode<&detail::map_trampoline<Fn, In>>(f, slice),
                                                             core_.counters());
        enqueue(task, [task] { delete task; });
        return detail::make_future<std::vector<R>>(task);
    }

    template <class Discard>
    void enqueue(detail::Job* job, Discard discard) {
        core_.enqueue(job, discard);
        queued_.fetch_add(1, std::memory_order_relaxed);
    }

    struct Worker {
        detail::WorkerProcess process;
        Endpoint channel;
        std::size_t tasks_run = 0;
        bool started_a_task = false;
        [[nodiscard]] bool running() const noexcept { return process.running(); }
    };

    /// One task of the batch in flight.
    struct InFlight {
        detail::RemoteJob* job;
        std::uint64_t seq;
        bool cancelled_here = false;  // shutdown won its control word
    };

    enum class Wait { reply, died, timed_out, stopped };

    Worker start_worker(const detail::ControlBlock& control) {
        // Named references, not a structured binding: clang before 16 cannot
        // capture a binding in a lambda.
        auto ends = Transport::pair(options_.max_message_size + detail::batch_overhead);
        Endpoint& parent_end = ends.first;
        Endpoint& child_end = ends.second;
        Worker w;
        if (server_) {
            w = Worker{server_->start(child_end), std::move(parent_end)};
        } else if (options_.start.value_or(Start::spawn) == Start::spawn) {
            w = Worker{detail::spawn_worker(
                           [&] {
                               return std::string(Transport::name) + "|" + child_end.export_handle() + "|" +
                                      config_.to_text();
                           },
                           [&] { child_end.close(); }),
                       std::move(parent_end)};
        } else {
            // Start::fork: the child runs on from here.
            w = Worker{detail::fork_worker([&] {
                           // A shared-memory end names the parent until the child
                           // claims it: claim now, so a child that dies early is noticed.
                           if constexpr (requires { child_end.bind_to_current_process(); })
                               child_end.bind_to_current_process();
                           detail::worker_main(child_end, config_);
                       }),
                       std::move(parent_end)};
        }
        std::vector<std::byte> hello;
        Writer h(hello);
        control.write_hello(h);
        h.write_value(static_cast<std::uint64_t>(initializer_call_.size()));
        hello.insert(hello.end(), initializer_call_.begin(), initializer_call_.end());
        try {
            w.channel.send_bytes(hello);
        } catch (const ChannelError&) {
            reap(w, std::chrono::seconds(1));  // died at once; the first batch's send notices
        }
        return w;
    }

    // Reaps `w`, giving it `grace` to exit on its own before SIGKILL.
    static int reap(Worker& w, std::chrono::milliseconds grace) {
        const int status = w.process.reap(grace);
        w.channel.close();
        return status;
    }

    static void retire(Worker& w) {
        std::vector<std::byte> stop;
        Writer(stop).write_value(std::uint32_t{0});
        try {
            w.channel.send_bytes(stop);
        } catch (const ChannelError&) {
        }
        reap(w, std::chrono::seconds(2));
    }

    // Waits for the next reply of `w`; meanwhile checks that it lives, the
    // task's deadline, and shutdown's cancel or kill (`on_stop` cancels what
    // the worker has not begun; true: kill it now).
    template <class OnStop>
    Wait await_reply(Worker& w, std::vector<std::byte>& reply, int& status, OnStop on_stop) {
        std::optional<std::chrono::steady_clock::time_point> deadline;
        if (options_.task_timeout.count() > 0) deadline = detail::deadline_after(options_.task_timeout);
        for (;;) {
            if (stop_.load(std::memory_order_acquire) != stop_none && on_stop()) return Wait::stopped;
            auto until = std::chrono::steady_clock::now() + liveness_poll;
            if (deadline && *deadline < until) until = *deadline;
            try {
                if (w.channel.receive_bytes_until(reply, until)) return Wait::reply;
            } catch (const ChannelError&) {
                // EOF (the worker is gone) or garbage (then it is killed):
                // either way it died with this task.
                status = reap(w, std::chrono::seconds(1));
                return Wait::died;
            } catch (const std::bad_alloc&) {
                // No memory here for the reply: the channel is mid-message, so
                // this worker cannot go on; the task fails with bad_alloc.
                w.process.kill();
                reap(w, std::chrono::seconds(1));
                throw;
            }
            if (w.process.exited(status)) {
                w.channel.close();
                return Wait::died;
            }
            if (deadline && std::chrono::steady_clock::now() >= *deadline) return Wait::timed_out;
        }
    }

    // Takes the next batch: jobs carried over from a worker that died, then
    // what waits in the queue, a fair share of it (two tasks for two idle
    // workers run side by side, not one after the other in one batch, while a
    // flood of small tasks travels 64 to a message), and no more bytes than
    // batch_bytes. False once the executor is shut down and drained.
    bool gather(std::deque<detail::RemoteJob*>& carried, std::vector<detail::RemoteJob*>& batch, const Worker& worker) {
        batch.clear();
        std::size_t limit = detail::batch_limit;
        if (options_.max_tasks_per_worker != 0)
            limit = std::min(limit, options_.max_tasks_per_worker - worker.tasks_run);
        std::size_t bytes = 0;
        auto fits = [&](const detail::RemoteJob* j) {
            return batch.empty() || (bytes + j->call.size() <= batch_bytes &&
                                     bytes + j->call.size() <= options_.max_message_size);
        };
        while (!carried.empty() && batch.size() < limit && fits(carried.front())) {
            bytes += carried.front()->call.size();
            batch.push_back(carried.front());
            carried.pop_front();
        }
        detail::Job* job = nullptr;
        if (batch.empty()) {
            idle_.fetch_add(1, std::memory_order_release);
            const bool got = core_.take(job);
            idle_.fetch_sub(1, std::memory_order_relaxed);
            if (!got) return false;  // shut down and drained
            queued_.fetch_sub(1, std::memory_order_relaxed);
            auto* remote = static_cast<detail::RemoteJob*>(job);
            if (remote->claim()) {
                bytes += remote->call.size();
                batch.push_back(remote);
            }
        }
        const auto waiting = queued_.load(std::memory_order_relaxed);
        const std::size_t share = waiting > 0 ? static_cast<std::size_t>(waiting) / size() : 0;
        limit = std::min(limit, batch.size() + share);
        while (batch.size() < limit && (batch.empty() || bytes < batch_bytes) && core_.try_take(job)) {
            queued_.fetch_sub(1, std::memory_order_relaxed);
            auto* remote = static_cast<detail::RemoteJob*>(job);
            if (!remote->claim()) continue;
            if (!fits(remote)) {  // travels in the next batch
                carried.push_front(remote);
                break;
            }
            bytes += remote->call.size();
            batch.push_back(remote);
        }
        return true;
    }

    void dispatch() noexcept {
        detail::current_dispatcher = this;
        detail::inside_executor = true;
        std::optional<detail::ControlBlock> control;
        Worker worker;
        auto start_error = detail::capture_exception([&] {
            control.emplace();
            worker = start_worker(*control);
        });
        std::deque<detail::RemoteJob*> carried;  // claimed, to re-send after a worker was replaced
        std::vector<detail::RemoteJob*> batch;
        std::vector<InFlight> flight;
        std::vector<std::byte> message, reply;
        std::uint64_t next_seq = 1;
        int failed_starts = 0;
        for (;;) {
            if (!gather(carried, batch, worker)) break;
            if (batch.empty()) continue;
            if (stop_.load(std::memory_order_acquire) != stop_none) {
                // Shut down with cancel or kill: nothing more starts.
                for (auto* j : batch) cancel_unshipped(j);
                continue;
            }
            if (!worker.running()) {
                auto error = detail::capture_exception([&] {
                    if (!control) control.emplace();
                    worker = start_worker(*control);
                });
                if (error) {
                    for (auto* j : batch) j->fail(error);
                    continue;
                }
            }
            // Ship: arm each task's control word, hand the task over to it
            // (unless it was cancelled meanwhile), then send the batch.
            flight.clear();
            message.clear();
            Writer w(message);
            w.write_value(std::uint32_t{0});  // the count, patched below
            for (auto* j : batch) {
                const std::uint64_t seq = next_seq++;
                control->arm(seq);
                if (!j->ship(&*control, seq)) {
                    j->release_job();  // cancelled while this dispatcher held it
                    continue;
                }
                w.write_value(seq);
                const auto bytes = j->call_bytes();
                if (batch.size() > 1) w.write(bytes.data(), bytes.size());
                flight.push_back({j, seq});
            }
            if (flight.empty()) continue;
            // A task alone travels from its own buffer, framed in the room
            // left at its front: a large call is never copied here.
            std::span<const std::byte> to_send(message);
            if (batch.size() == 1) {
                auto& call = flight.front().job->call;
                const std::uint32_t one = 1;
                std::memcpy(call.data(), &one, sizeof one);
                std::memcpy(call.data() + sizeof one, &flight.front().seq, sizeof(std::uint64_t));
                to_send = call;
            } else {
                const auto count = static_cast<std::uint32_t>(flight.size());
                std::memcpy(message.data(), &count, sizeof count);
            }
            bool sent = true;
            try {
                worker.channel.send_bytes(to_send);
            } catch (const ChannelError&) {
                sent = false;
            } catch (const std::bad_alloc&) {
                sent = false;
            }
            detail::trim(message);
            if (!sent) {
                // The worker died before taking this batch: blame no task.
                reap(worker, std::chrono::seconds(1));
                recall_from(flight, 0, carried, *control);
                if (++failed_starts > 3 && !carried.empty()) {
                    auto* first = carried.front();
                    carried.pop_front();
                    first->fail(std::make_exception_ptr(WorkerDied(
                        "crew: worker processes die as soon as they start (see stderr); this task failed", -1, 0)));
                    failed_starts = 0;
                }
                continue;
            }
            collect(worker, *control, flight, reply, carried, failed_starts);
            detail::trim(reply);
            if (worker.running() && options_.max_tasks_per_worker != 0 &&
                worker.tasks_run >= options_.max_tasks_per_worker) {
                retire(worker);
                worker = Worker{};
            }
        }
        if (worker.running()) retire(worker);
        (void)start_error;  // reported when the first task arrives (the start is retried then)
    }

    // A job this dispatcher holds, after shutdown(cancel_pending or kill):
    // cancelled here, unless its future's cancel() was first.
    static void cancel_unshipped(detail::RemoteJob* j) noexcept {
        j->cancel_held();
        j->release_job();
    }

    // Takes back the tasks of `flight` from `from` on, after their worker
    // died: those it never began go back to the front of `carried` (for the
    // next worker); those cancelled meanwhile are done.
    static void recall_from(std::vector<InFlight>& flight, std::size_t from, std::deque<detail::RemoteJob*>& carried,
                            detail::ControlBlock& control) {
        for (std::size_t i = flight.size(); i-- > from;) {
            auto& f = flight[i];
            if (f.cancelled_here || !control.recall(f.seq)) {
                f.job->release_job();  // cancelled, and published by whoever cancelled it
                continue;
            }
            f.job->recall();
            carried.push_front(f.job);
        }
    }

    // Receives the replies of the batch in flight and finishes each task;
    // handles the worker's death, a timeout, and shutdown's cancel or kill.
    void collect(Worker& worker, detail::ControlBlock& control, std::vector<InFlight>& flight,
                 std::vector<std::byte>& reply, std::deque<detail::RemoteJob*>& carried, int& failed_starts) {
        const pid_t pid = worker.process.pid();
        std::size_t done = 0;
        auto on_stop = [&] {
            for (std::size_t i = done; i < flight.size(); ++i) {
                auto& f = flight[i];
                if (!f.cancelled_here && control.cancel(f.seq)) {
                    f.cancelled_here = true;
                    f.job->publish_cancel(true);
                }
            }
            return stop_.load(std::memory_order_acquire) == stop_kill;
        };
        while (done < flight.size()) {
            int status = 0;
            Wait outcome;
            try {
                outcome = await_reply(worker, reply, status, on_stop);
            } catch (const std::bad_alloc&) {
                worker = Worker{};
                flight[done].job->fail(std::current_exception());
                recall_from(flight, done + 1, carried, control);
                return;
            }
            if (outcome == Wait::reply) {
                failed_starts = 0;
                worker.started_a_task = true;
                if (!finish(flight[done], reply)) {
                    // A reply for another task: the worker is broken (or
                    // something wrote into its channel). It goes; this task
                    // fails, the rest go to the next worker.
                    worker.process.kill();
                    reap(worker, std::chrono::seconds(1));
                    worker = Worker{};
                    flight[done].job->fail(std::make_exception_ptr(ChannelError(
                        "crew: the worker process sent a reply that belongs to no task in flight (protocol "
                        "violation: garbage in its channel?); it was replaced and this task failed")));
                    recall_from(flight, done + 1, carried, control);
                    return;
                }
                ++done;
                ++worker.tasks_run;
                continue;
            }
            // The worker is gone or must go. The task it had begun (if any)
            // fails; those it never began go to the next worker.
            std::exception_ptr error;
            if (outcome == Wait::timed_out) {
                worker.process.kill();
                reap(worker, std::chrono::seconds(1));
                error = std::make_exception_ptr(
                    Timeout("crew: the task ran past Options::task_timeout; its worker process was killed and "
                            "replaced"));
            } else if (outcome == Wait::stopped) {
                worker.process.kill();
                reap(worker, std::chrono::seconds(1));
                error = std::make_exception_ptr(
                    Cancelled("crew: the task was stopped by shutdown(crew::Shutdown::kill); its worker process "
                              "was killed"));
            } else {
                error = std::make_exception_ptr(WorkerDied(detail::describe_status(status, pid),
                                                           WIFEXITED(status) ? WEXITSTATUS(status) : -1,
                                                           WIFSIGNALED(status) ? WTERMSIG(status) : 0));
            }
            const bool had_started = worker.started_a_task;
            worker = Worker{};
            auto& current = flight[done];
            if (current.cancelled_here || control.recall(current.seq)) {
                // It had not begun: it is not the one that broke the worker.
                if (current.cancelled_here) {
                    current.job->release_job();
                } else if (outcome == Wait::stopped) {
                    current.job->publish_cancel(true);
                    current.job->release_job();
                } else {
                    current.job->recall();
                    carried.push_front(current.job);
                    if (outcome == Wait::died && !had_started && ++failed_starts > 3) {
                        carried.pop_front();
                        current.job->fail(std::make_exception_ptr(WorkerDied(
                            "crew: worker processes die as soon as they start (see stderr); this task failed", -1,
                            0)));
                        failed_starts = 0;
                    }
                }
            } else if (outcome == Wait::stopped) {
                current.job->publish_cancel(true);
                current.job->release_job();
            } else {
                current.job->fail(std::move(error));  // moved: this thread keeps no reference
            }
            ++done;
            recall_from(flight, done, carried, control);
            if (outcome == Wait::stopped)
                while (!carried.empty()) {
                    cancel_unshipped(carried.front());
                    carried.pop_front();
                }
            return;
        }
    }

    // Finishes the task in flight with `reply`; false when the reply names
    // another task.
    static bool finish(InFlight& f, const std::vector<std::byte>& reply) noexcept {
        std::exception_ptr outcome_error;
        bool matched = true;
        auto error = detail::capture_exception([&] {
            Reader r(reply);
            const auto seq = r.read_value<std::uint64_t>();
            const auto outcome = static_cast<detail::Outcome>(r.read_value<std::uint8_t>());
            // seq 0: the worker could not even receive the task (out of memory).
            if (seq != f.seq && !(seq == 0 && outcome == detail::Outcome::exception)) {
                matched = false;
                return;
            }
            if (outcome == detail::Outcome::value) return f.job->complete(r);
            if (outcome == detail::Outcome::skipped) {
                f.job->release_job();  // cancelled before it began; already published
                return;
            }
            if (outcome != detail::Outcome::exception) throw CodecError("crew: unknown outcome in a worker's reply");
            outcome_error = detail::decode_exception(r);
            r.expect_end();
        });
        if (!matched) return false;
        if (error || outcome_error) f.job->fail(std::move(error ? error : outcome_error));
        return true;
    }

    Options options_;
    detail::WorkerConfig config_;
    std::vector<std::byte> initializer_call_;  // sent with each hello (empty: none)
    Core core_;
    std::atomic<std::size_t> idle_{0};     // dispatchers waiting for a task
    std::atomic<std::ptrdiff_t> queued_{0};  // tasks waiting, approximately (batch sizing only)
    std::atomic<int> stop_{stop_none};     // shutdown's cancel or kill, for tasks already shipped
    std::unique_ptr<detail::ForkServer> server_;  // Start::fork_server only
    std::mutex join_mutex_;
    std::vector<std::thread> dispatchers_;
};

#ifdef CREW_SEPARATE_COMPILATION
// Compiled once, by <crew/compiled.hpp> (docs/guide.md, "Compile times").
extern template class ProcessExecutor<ipc::SharedMemory, sync::LockFree>;
#endif

}  // namespace crew
