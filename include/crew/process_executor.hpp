// crew/process_executor.hpp — crew::ProcessExecutor<Channel, Sync>: worker
// processes behind the same crew::Future API as ThreadExecutor.
//
// When: CPU-bound work that must not share memory or fate: a task that
// crashes (segfault, abort, exit) fails alone with crew::WorkerDied, a new
// worker takes its place, every other task completes. Tasks can be killed
// (Options::task_timeout) and limited (Options::memory_limit).
// Cost: each task and result is encoded (crew::Codec) and crosses a channel.
// Tasks are shipped in batches (up to 64 per message) and results streamed
// back, so many small tasks cost about a microsecond each, while a single
// submit -> get round trip costs one IPC round trip (see docs/benchmarks.md).
//
// Tasks: a function pointer or a lambda that captures nothing; state travels
// as arguments, encoded by crew::Codec. A capturing lambda does not compile.
//
// How it works (docs/design.md): one dispatcher thread per worker in this
// process takes tasks from the Sync policy's queue, ships them to its worker
// over its own Channel endpoint, completes the futures from the results, and
// watches the worker: death (reaped with waitpid), timeout (SIGKILL), garbage
// on the channel. Workers start by Start::spawn (fork + exec of this same
// binary: safe when this process runs threads) unless Options::start says
// otherwise (Start::fork_server: one fresh copy forks them all; Start::fork);
// they die with their parent (PR_SET_PDEATHSIG, or the fork server's control
// socket closing).
//
// Spawned and fork-server workers run before main(): the worker takes over
// during static initialisation of the fresh copy. A task must not rely on
// what main() sets up, nor on a namespace-scope object of another source
// file with a dynamic initialiser (it may not be constructed yet; a function-
// local static is fine). Use Options::initializer for per-worker set-up.
//
// Continuations (Future::then) of this executor's futures run in this
// process, on the dispatcher thread that received the result: keep them
// short, and never block in one on another task of the same executor (that
// task may need the very dispatcher that is blocked). A continuation may
// submit work, and may call shutdown() (which then does not wait); it must
// not destroy the executor.
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
#include <crew/detail/executor_core.hpp>
#include <crew/detail/remote_call.hpp>
#include <crew/detail/shared_state.hpp>
#include <crew/detail/worker_process.hpp>
#include <crew/errors.hpp>
#include <crew/future.hpp>
#include <crew/ipc/channel.hpp>
#include <crew/ipc/message_queue.hpp>
#include <crew/ipc/pipe.hpp>
#include <crew/ipc/shared_memory.hpp>
#include <crew/ipc/socket.hpp>
#include <crew/options.hpp>
#include <crew/sync/lock_free.hpp>
#include <crew/sync/mutex.hpp>
#include <crew/sync/policy.hpp>
#include <crew/sync/semaphore.hpp>

namespace crew {

namespace detail {

/// A queued process task: its encoded call, and how to finish it.
struct RemoteJob : Job {
    std::vector<std::byte> call;
    /// Marks the task started; false (and the job is gone) if it was cancelled.
    virtual bool claim() noexcept = 0;
    /// The worker returned a value, encoded in `result`.
    virtual void complete(Reader& result) noexcept = 0;
    virtual void fail(std::exception_ptr error) noexcept = 0;
    void run() noexcept override {
        fail(std::make_exception_ptr(Error("crew: internal error: a process task was run in-process")));
    }

protected:
    ~RemoteJob() = default;
};

template <class R>
class ProcessTask final : public SharedState<R>, public RemoteJob {
public:
    explicit ProcessTask(std::vector<std::byte> encoded) : SharedState<R>(2) { call = std::move(encoded); }

    bool claim() noexcept override {
        if (this->try_claim()) return true;
        this->release();
        return false;
    }
    void complete(Reader& result) noexcept override {
        auto error = capture_exception([&] {
            if constexpr (std::is_void_v<R>) {
                result.expect_end();
                this->publish_value();
            } else {
                auto value = result.read_value<R>();
                result.expect_end();
                this->publish_value(std::move(value));
            }
        });
        if (error) this->publish_error(std::move(error));
        this->release();
    }
    void fail(std::exception_ptr error) noexcept override {
        this->publish_error(std::move(error));
        this->release();
    }
    void abandon() noexcept override {
        this->try_cancel();
        this->release();
    }

private:
    void destroy() noexcept override { delete this; }
};

template <class Core>
class ProcessPost final : public RemoteJob {
public:
    ProcessPost(Core& core, std::vector<std::byte> encoded) : core_(core) { call = std::move(encoded); }
    bool claim() noexcept override { return true; }
    void complete(Reader&) noexcept override { delete this; }
    void fail(std::exception_ptr error) noexcept override {
        core_.report(std::move(error));
        delete this;
    }
    void abandon() noexcept override { delete this; }

private:
    Core& core_;
};

/// What a worker needs to know at start.
struct WorkerConfig {
    bool has_initializer = false;
    CodeRef initializer;
    std::uint64_t memory_limit = 0;
    std::uint64_t max_message = 0;

    std::string to_text() const {
        return std::to_string(has_initializer) + ":" + std::to_string(initializer.module) + ":" +
               std::to_string(initializer.offset) + ":" + std::to_string(memory_limit) + ":" +
               std::to_string(max_message);
    }
    static bool from_text(std::string_view text, WorkerConfig& out) {
        std::uint64_t v[5];
        for (auto& x : v) {
            auto colon = text.find(':');
            std::string part(text.substr(0, colon));
            char* end = nullptr;
            errno = 0;
            x = std::strtoull(part.c_str(), &end, 10);
            if (part.empty() || *end != '\0' || errno != 0) return false;
            text = colon == std::string_view::npos ? std::string_view{} : text.substr(colon + 1);
        }
        out.has_initializer = v[0] != 0;
        out.initializer = {v[1], v[2]};
        out.memory_limit = v[3];
        out.max_message = v[4];
        return true;
    }
};

/// The worker process: run batches until told to stop or the parent is gone.
template <class Endpoint>
[[noreturn]] void worker_main(Endpoint& channel, const WorkerConfig& config) noexcept {
    if (config.memory_limit != 0) {
        rlimit limit{config.memory_limit, config.memory_limit};
        ::setrlimit(RLIMIT_AS, &limit);
    }
    std::string init_error;
    if (config.has_initializer) {
        try {
            reinterpret_cast<void (*)()>(const_cast<void*>(ModuleTable::resolve(config.initializer)))();
        } catch (...) {
            auto info = describe(std::current_exception());
            init_error = "crew: the worker's initializer threw " + info.type_name + ": " + info.what;
        }
    }
    std::vector<std::byte> in, out;
    try {
        for (;;) {
            channel.receive_bytes(in);
            Reader batch(in);
            auto count = batch.read_value<std::uint32_t>();
            if (count == 0) break;  // the parent retires this worker
            for (std::uint32_t i = 0; i < count; ++i) {
                auto slot = batch.read_value<std::uint64_t>();
                if (init_error.empty()) {
                    run_call(slot, batch, out);
                } else {  // every task reports the initializer's failure
                    out.clear();
                    Writer w(out);
                    w.write_value(slot);
                    w.write_value(static_cast<std::uint8_t>(Outcome::exception));
                    w.write_value(std::string("crew::Error"));
                    w.write_value(init_error);
                    (void)batch.read_value<CodeRef>();  // skip the call
                    (void)batch.take(static_cast<std::size_t>(batch.read_value<std::uint64_t>()));
                }
                channel.send_bytes(out);
            }
        }
    } catch (...) {
        // The parent is gone or sent garbage: nothing to report to; exit.
    }
    std::fflush(nullptr);
    ::_exit(0);
}

template <class Channel>
[[noreturn]] void serve_exported(std::string_view handle, const WorkerConfig& config) {
    try {
        auto endpoint = Channel::Endpoint::import_handle(handle, config.max_message);
        worker_main(endpoint, config);
    } catch (...) {
        ::_exit(126);
    }
}

/// The channels a spawned worker can serve: it is a fresh copy of the
/// program, so it must find the channel type from its name.
using spawnable_channels =
    std::tuple<ipc::SharedMemory, ipc::BasicSharedMemory<sync::Mutex>, ipc::BasicSharedMemory<sync::Semaphore>,
               ipc::Pipe, ipc::Socket, ipc::MessageQueue>;

template <class Channel>
inline constexpr bool is_spawnable = []<class... Cs>(std::tuple<Cs...>*) {
    return (std::is_same_v<Channel, Cs> || ...);
}(static_cast<spawnable_channels*>(nullptr));

/// Serves an exported channel end ("<channel name>:...") as a worker.
[[noreturn]] inline void serve_handle(std::string_view handle, const WorkerConfig& config) {
    const std::string_view channel = handle.substr(0, handle.find(':'));
    [&]<class... Cs>(std::tuple<Cs...>*) {
        ((channel == Cs::name ? serve_exported<Cs>(handle, config) : void()), ...);
    }(static_cast<spawnable_channels*>(nullptr));
    ::_exit(126);
}

/// In a process started by Start::spawn or as a fork server, becomes the
/// worker (or the server) before main() runs; elsewhere returns false at
/// once. CREW_WORKER is "<what>|<handle>|<config>": a channel name and an
/// exported end, or "forkserver" and its control fd.
inline bool become_spawned_worker() {
    const char* spec = std::getenv(worker_env);
    if (spec == nullptr) return false;
    std::string text(spec);
    ::unsetenv(worker_env);  // not for this worker's own children
    auto first = text.find('|'), second = text.rfind('|');
    WorkerConfig config;
    if (first == std::string::npos || second == first || !WorkerConfig::from_text(text.substr(second + 1), config))
        ::_exit(126);
    std::string_view what = std::string_view(text).substr(0, first);
    std::string_view handle = std::string_view(text).substr(first + 1, second - first - 1);
    if (what == ForkServer::name) {
        int control = -1;
        auto [end, ec] = std::from_chars(handle.data(), handle.data() + handle.size(), control);
        if (ec != std::errc{} || end != handle.data() + handle.size() || control < 0) ::_exit(126);
        ::fcntl(control, F_SETFD, FD_CLOEXEC);
        run_fork_server(control, [&](std::string_view worker_handle) { serve_handle(worker_handle, config); });
    }
    serve_handle(handle, config);
}

// Runs during static initialisation of every program that includes this
// header, so a spawned copy of the program turns into a worker before main().
inline const bool is_spawned_worker = become_spawned_worker();

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
    /// options.workers) and returns when they are ready.
    explicit ProcessExecutor(std::size_t workers = 0, Options options = {})
        : options_(std::move(options)), core_(options_, queue_capacity) {
        if (!detail::is_spawnable<Transport> && options_.start.value_or(Start::spawn) != Start::fork)
            throw InvalidArgument(std::string("crew::ProcessExecutor: a spawned worker (or fork server) is a fresh "
                                              "copy of the program and can only serve crew's own channels, not \"") +
                                  std::string(Channel::name) +
                                  "\"; pass Options{.start = crew::Start::fork} to use this channel");
        config_.memory_limit = options_.memory_limit;
        config_.max_message = options_.max_message_size;
        if (options_.initializer != nullptr) {
            config_.has_initializer = true;
            config_.initializer = detail::ModuleTable::ref(reinterpret_cast<const void*>(options_.initializer));
        }
        const std::size_t n = detail::resolve_workers(workers, options_);
        if (options_.start == Start::fork_server) server_ = std::make_unique<detail::ForkServer>(config_.to_text());
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
    template <class F, class... Args>
    auto submit(F&& f, Args&&... args) -> Future<std::invoke_result_t<std::decay_t<F>, std::decay_t<Args>...>> {
        using Fn = std::decay_t<F>;
        using R = std::invoke_result_t<Fn, std::decay_t<Args>...>;
        check_task<Fn, R, std::decay_t<Args>...>();
        auto* task = new detail::ProcessTask<R>(
            detail::encode_call<&detail::call_trampoline<Fn, std::decay_t<Args>...>>(Fn(f), args...));
        enqueue(task, [task] {
            task->release();
            task->release();
        });
        return detail::make_future<R>(task);
    }

    /// Runs `f(args...)` in a worker with no future; an exception goes to
    /// Options::on_error (as crew::RemoteError), or to stderr.
    template <class F, class... Args>
    void post(F&& f, Args&&... args) {
        using Fn = std::decay_t<F>;
        using R = std::invoke_result_t<Fn, std::decay_t<Args>...>;
        check_task<Fn, R, std::decay_t<Args>...>();
        auto* task = new detail::ProcessPost<Core>(
            core_, detail::encode_call<&detail::call_trampoline<Fn, std::decay_t<Args>...>>(Fn(f), args...));
        enqueue(task, [task] { task->abandon(); });
    }

    /// `f` applied to every input in worker processes, results in input
    /// order; chunks of `chunk` inputs travel as one task (0: about four
    /// chunks per worker). The first failure, in input order, is rethrown
    /// after all work ended.
    template <class F, std::ranges::forward_range Range>
    auto map(F&& f, const Range& inputs, std::size_t chunk = 0)
        -> std::vector<std::invoke_result_t<std::decay_t<F>&, const std::ranges::range_value_t<Range>&>> {
        using Fn = std::decay_t<F>;
        using In = std::ranges::range_value_t<Range>;
        using R = std::invoke_result_t<Fn&, const In&>;
        static_assert(!std::is_void_v<R>, "crew::map: the function must return a value; use post() or submit() "
                                          "for functions that return void");
        check_task<Fn, R, In>();
        const auto n = static_cast<std::size_t>(std::ranges::distance(inputs));
        chunk = detail::pick_chunk(n, size(), chunk);
        std::vector<Future<std::vector<R>>> parts;
        parts.reserve((n + chunk - 1) / chunk);
        std::exception_ptr submit_error;
        auto it = std::ranges::begin(inputs);
        std::vector<In> slice;
        for (std::size_t done = 0; done < n;) {
            const std::size_t count = std::min(chunk, n - done);
            slice.clear();
            for (std::size_t i = 0; i < count; ++i, ++it) slice.push_back(*it);
            try {
                auto* task = new detail::ProcessTask<std::vector<R>>(
                    detail::encode_call<&detail::map_trampoline<Fn, In>>(Fn(f), slice));
                enqueue(task, [task] {
                    task->release();
                    task->release();
                });
                parts.push_back(detail::make_future<std::vector<R>>(task));
            } catch (...) {
                submit_error = std::current_exception();
                break;
            }
            done += count;
        }
        return detail::join_chunks<R>(parts, n, submit_error);
    }

    /// Stops taking work: `drain` runs what was submitted, `cancel_pending`
    /// cancels what has not been sent to a worker. Then stops every worker
    /// and reaps it. Later submit/post/map throw crew::ExecutorShutdown.
    void shutdown(Shutdown how = Shutdown::drain) {
        core_.close(how);
        // From a continuation, which runs on one of our dispatcher threads: it
        // cannot join itself. Closing is enough; the destructor joins.
        if (detail::current_dispatcher == this) return;
        std::lock_guard lock(join_mutex_);
        for (auto& t : dispatchers_)
            if (t.joinable()) t.join();
        server_.reset();  // every worker is retired: the fork server can go
    }

    /// Number of worker processes.
    [[nodiscard]] std::size_t size() const noexcept { return dispatchers_.size(); }

private:
    using Core = detail::ExecutorCore<Sync>;
    // The channel in its form for Sync: for SharedMemory, the rings' waits
    // use the policy's process-shared primitive.
    using Transport = ipc::with_sync_t<Channel, Sync>;
    using Endpoint = typename Transport::Endpoint;

    static constexpr std::size_t queue_capacity = 1024;
    // Tasks per message: enough to amortise a wake-up over many small tasks,
    // few enough that a crash or timeout re-sends little.
    static constexpr std::size_t batch_limit = 64;
    // How often a dispatcher waiting for a result checks that its worker lives
    // (channels without EOF, or an fd a sibling inherited, give no other sign).
    static constexpr std::chrono::milliseconds liveness_poll{50};

    template <class Fn, class R, class... Args>
    static constexpr void check_task() {
        static_assert(detail::stateless_callable<Fn>,
                      "crew::ProcessExecutor: this task captures state, which cannot be sent to another process. "
                      "Pass a function pointer or a lambda that captures nothing, and pass the state as "
                      "arguments: ex.submit([](int x) { return x * 2; }, x)");
        static_assert((encodable<Args> && ...),
                      "crew::ProcessExecutor: an argument type cannot be encoded by crew::Codec; see the "
                      "crew::Codec error below for which, and specialise crew::Codec<T> for your types");
        static_assert(std::is_void_v<R> || encodable<R>,
                      "crew::ProcessExecutor: the task's result type cannot be encoded by crew::Codec; "
                      "specialise crew::Codec<T> for it");
    }

    template <class Discard>
    void enqueue(detail::Job* job, Discard discard) {
        try {
            core_.enqueue(job);
        } catch (...) {
            discard();
            throw;
        }
        queued_.fetch_add(1, std::memory_order_relaxed);
    }

    struct Worker {
        detail::WorkerProcess process;
        Endpoint channel;
        std::size_t tasks_run = 0;
        [[nodiscard]] bool running() const noexcept { return process.running(); }
    };

    enum class Wait { reply, died, timed_out };

    Worker start_worker() {
        // Named references, not a structured binding: clang before 16 cannot
        // capture a binding in a lambda.
        auto ends = Transport::pair(options_.max_message_size);
        Endpoint& parent_end = ends.first;
        Endpoint& child_end = ends.second;
        if (server_) return Worker{server_->start(child_end), std::move(parent_end), 0};
        if (options_.start.value_or(Start::spawn) == Start::spawn) {
            const pid_t pid = detail::spawn_self(
                [&] { return std::string(Transport::name) + "|" + child_end.export_handle() + "|" + config_.to_text(); },
                [&] { child_end.close(); });
            return Worker{detail::WorkerProcess(pid), std::move(parent_end), 0};
        }
        // Start::fork: the child runs on from here.
        const pid_t parent = ::getpid();
        std::unique_lock lock(detail::fork_mutex());
        std::fflush(nullptr);  // else the child could flush our buffered output again
        const pid_t pid = ::fork();
        if (pid < 0) throw Error(std::string("crew: fork() failed: ") + std::strerror(errno));
        if (pid == 0) {
            // Die with the parent; the check closes the race with a parent
            // that died before prctl.
            ::prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (::getppid() != parent) ::_exit(0);
            // A shared-memory end names the parent until the child claims
            // it: claim now, so a child that dies early is noticed.
            if constexpr (requires { child_end.bind_to_current_process(); }) child_end.bind_to_current_process();
            detail::worker_main(child_end, config_);
        }
        return Worker{detail::WorkerProcess(pid), std::move(parent_end), 0};
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

    Wait await_reply(Worker& w, std::vector<std::byte>& reply, int& status) {
        std::optional<std::chrono::steady_clock::time_point> deadline;
        if (options_.task_timeout.count() > 0)
            deadline = std::chrono::steady_clock::now() +
                       std::chrono::duration_cast<std::chrono::steady_clock::duration>(options_.task_timeout);
        for (;;) {
            auto until = std::chrono::steady_clock::now() + liveness_poll;
            if (deadline && *deadline < until) until = *deadline;
            try {
                if (w.channel.receive_bytes_until(reply, until)) return Wait::reply;
            } catch (const ChannelError&) {
                // EOF (the worker is gone) or garbage (then it is killed):
                // either way it died with this task.
                status = reap(w, std::chrono::seconds(1));
                return Wait::died;
            }
            if (w.process.exited(status)) {
                w.channel.close();
                return Wait::died;
            }
            if (deadline && std::chrono::steady_clock::now() >= *deadline) return Wait::timed_out;
        }
    }

    void dispatch() noexcept {
        detail::current_dispatcher = this;
        Worker worker;
        try {
            worker = start_worker();
        } catch (...) {
            // Retried when the first task arrives, which then reports the error.
        }
        std::deque<detail::RemoteJob*> carried;  // claimed, to re-send after a worker was replaced
        std::vector<detail::RemoteJob*> batch;
        std::vector<std::byte> message, reply;
        int failed_starts = 0;
        for (;;) {
            batch.clear();
            std::size_t limit = batch_limit;
            if (options_.max_tasks_per_worker != 0)
                limit = std::min(limit, options_.max_tasks_per_worker - worker.tasks_run);
            while (!carried.empty() && batch.size() < limit) {
                batch.push_back(carried.front());
                carried.pop_front();
            }
            detail::Job* job = nullptr;
            if (batch.empty()) {
                idle_.fetch_add(1, std::memory_order_release);
                const bool got = core_.take(job);
                idle_.fetch_sub(1, std::memory_order_relaxed);
                if (!got) break;  // shut down and drained
                queued_.fetch_sub(1, std::memory_order_relaxed);
                auto* remote = static_cast<detail::RemoteJob*>(job);
                if (remote->claim()) batch.push_back(remote);
            }
            // Take a fair share of what waits, no more: two tasks for two idle
            // workers run side by side, not one after the other in one batch,
            // while a flood of small tasks travels 64 to a message.
            const auto waiting = queued_.load(std::memory_order_relaxed);
            const std::size_t share = waiting > 0 ? static_cast<std::size_t>(waiting) / size() : 0;
            limit = std::min(limit, batch.size() + share);
            while (batch.size() < limit && core_.try_take(job)) {
                queued_.fetch_sub(1, std::memory_order_relaxed);
                auto* remote = static_cast<detail::RemoteJob*>(job);
                if (remote->claim()) batch.push_back(remote);
            }
            if (batch.empty()) continue;

            if (!worker.running()) {
                auto error = detail::capture_exception([&] { worker = start_worker(); });
                if (error) {
                    for (auto* j : batch) j->fail(error);
                    continue;
                }
            }
            message.clear();
            Writer w(message);
            w.write_value(static_cast<std::uint32_t>(batch.size()));
            for (std::size_t i = 0; i < batch.size(); ++i) {
                w.write_value(static_cast<std::uint64_t>(i));
                w.write(batch[i]->call.data(), batch[i]->call.size());
            }
            try {
                worker.channel.send_bytes(message);
            } catch (const ChannelError&) {
                // The worker died before taking this batch: blame no task.
                reap(worker, std::chrono::seconds(1));
                if (++failed_starts > 3) {
                    batch.front()->fail(std::make_exception_ptr(
                        WorkerDied("crew: worker processes die as soon as they start (see stderr); this task failed",
                                   -1, 0)));
                    batch.erase(batch.begin());
                    failed_starts = 0;
                }
                carried.insert(carried.begin(), batch.begin(), batch.end());
                continue;
            }
            std::size_t done = 0;
            const pid_t pid = worker.process.pid();
            while (done < batch.size()) {
                int status = 0;
                Wait outcome = await_reply(worker, reply, status);
                if (outcome == Wait::reply) {
                    failed_starts = 0;
                    finish(batch[done], reply);
                    ++done;
                    ++worker.tasks_run;
                    continue;
                }
                std::exception_ptr error;
                if (outcome == Wait::timed_out) {
                    worker.process.kill();
                    reap(worker, std::chrono::seconds(1));
                    error = std::make_exception_ptr(
                        Timeout("crew: the task ran past Options::task_timeout; its worker process was killed and "
                                "replaced"));
                } else {
                    error = std::make_exception_ptr(WorkerDied(
                        detail::describe_status(status, pid), WIFEXITED(status) ? WEXITSTATUS(status) : -1,
                        WIFSIGNALED(status) ? WTERMSIG(status) : 0));
                }
                worker = Worker{};
                batch[done]->fail(std::move(error));  // moved: this thread keeps no reference
                ++done;
                carried.insert(carried.begin(), batch.begin() + static_cast<std::ptrdiff_t>(done), batch.end());
                break;
            }
            if (worker.running() && options_.max_tasks_per_worker != 0 &&
                worker.tasks_run >= options_.max_tasks_per_worker) {
                retire(worker);
                worker = Worker{};
            }
        }
        if (worker.running()) retire(worker);
    }

    static void finish(detail::RemoteJob* job, const std::vector<std::byte>& reply) noexcept {
        std::exception_ptr outcome_error;
        auto error = detail::capture_exception([&] {
            Reader r(reply);
            (void)r.read_value<std::uint64_t>();  // slot: replies come in order
            auto outcome = static_cast<detail::Outcome>(r.read_value<std::uint8_t>());
            if (outcome == detail::Outcome::value) return job->complete(r);
            auto type = r.read_value<std::string>();
            auto what = r.read_value<std::string>();
            outcome_error = std::make_exception_ptr(RemoteError(std::move(type), std::move(what)));
        });
        if (error || outcome_error) job->fail(std::move(error ? error : outcome_error));
    }

    Options options_;
    detail::WorkerConfig config_;
    Core core_;
    std::atomic<std::size_t> idle_{0};     // dispatchers waiting for a task
    std::atomic<std::ptrdiff_t> queued_{0};  // tasks waiting, approximately (batch sizing only)
    std::unique_ptr<detail::ForkServer> server_;  // Start::fork_server only
    std::mutex join_mutex_;
    std::vector<std::thread> dispatchers_;
};

}  // namespace crew
