// crew/detail/worker_main.hpp — the worker process's side of a
// ProcessExecutor: its start-up (limits, initializer), its loop over batches
// (detail/wire.hpp), and how a fresh copy of the program finds out, from
// crew::Session, that its parent started it as a worker and which channel it
// serves.
#pragma once

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <crew/codec.hpp>
#include <crew/detail/peer_fd.hpp>
#include <crew/detail/remote_call.hpp>
#include <crew/detail/shared_state.hpp>
#include <crew/detail/wire.hpp>
#include <crew/detail/worker_process.hpp>
#include <crew/errors.hpp>
#include <crew/session.hpp>

namespace crew::detail {

/// What a worker needs to know at start.
/// (The initializer comes with the hello: it may carry arguments.)
struct WorkerConfig {
    std::uint64_t memory_limit = 0;
    std::uint64_t max_message = 0;

    std::string to_text() const { return std::to_string(memory_limit) + ":" + std::to_string(max_message); }
    static bool from_text(std::string_view text, WorkerConfig& out) {
        std::uint64_t v[2];
        for (auto& x : v) {
            auto colon = text.find(':');
            std::string part(text.substr(0, colon));
            char* end = nullptr;
            errno = 0;
            x = std::strtoull(part.c_str(), &end, 10);
            if (part.empty() || *end != '\0' || errno != 0) return false;
            text = colon == std::string_view::npos ? std::string_view{} : text.substr(colon + 1);
        }
        if (!text.empty()) return false;
        out.memory_limit = v[0];
        out.max_message = v[1];
        return true;
    }
};

/// A reply that reports `error` for task `seq`.
inline void write_failure_reply(std::vector<std::byte>& out, std::uint64_t seq, const std::exception_ptr& error) {
    out.clear();
    Writer w(out);
    w.write_value(seq);
    w.write_value(static_cast<std::uint8_t>(Outcome::exception));
    encode_exception(w, error);
}

/// Buffers larger than this are released after use, so one large task does
/// not keep its memory for the life of the worker (or the executor). A
/// worker keeps them while large messages keep coming (a fresh buffer costs
/// a page fault per 4 KiB) and lets them go after `keep_buffer_idle`.
inline constexpr std::size_t keep_buffer_bytes = std::size_t{4} << 20;
inline constexpr std::chrono::milliseconds keep_buffer_idle{20};

inline void trim(std::vector<std::byte>& buffer) {
    if (buffer.capacity() > keep_buffer_bytes) std::vector<std::byte>().swap(buffer);
}

/// The worker process: attach the control block, then run batches until told
/// to stop or the parent is gone.
template <class Endpoint>
[[noreturn]] void worker_main(Endpoint& channel, const WorkerConfig& config) noexcept {
    if (config.memory_limit != 0) {
        rlimit limit{config.memory_limit, config.memory_limit};
        ::setrlimit(RLIMIT_AS, &limit);
    }
    std::exception_ptr init_error;
    std::vector<std::byte> in, out;
    Keepers result_pins;  // SharedArrays the last batch returned: kept until the parent has them
    KeptMappings kept;    // SharedArrays the last task received: still mapped if the next is handed them
    try {
        channel.receive_bytes(in);
        Reader hello(in);
        if (hello.read_value<std::uint32_t>() != hello_magic)
            throw ChannelError("crew: the worker's first message is not a hello");
        ControlBlock control = ControlBlock::attach(hello);
        const auto initializer = hello.take(static_cast<std::size_t>(hello.read_value<std::uint64_t>()));
        hello.expect_end();
        if (!initializer.empty()) {
            init_error = capture_exception([&] { run_encoded_call(initializer); });
            if (init_error) {
                auto info = describe(init_error);
                init_error = std::make_exception_ptr(
                    Error("crew: the worker's initializer threw " + info.type_name + ": " + info.what));
            }
        }
        for (;;) {
            try {
                if (in.capacity() <= keep_buffer_bytes && out.capacity() <= keep_buffer_bytes &&
                    kept.empty()) {
                    channel.receive_bytes(in);
                } else if (!channel.receive_bytes_until(in, std::chrono::steady_clock::now() + keep_buffer_idle)) {
                    trim(in);  // idle: large buffers go back (a message read in part stays in the channel)
                    trim(out);
                    kept.clear();  // and the SharedArrays the last task received are unmapped
                    channel.receive_bytes(in);
                }
            } catch (const std::bad_alloc&) {
                // Too large for Options::memory_limit: say so for the task at
                // hand (seq 0 names "the task the parent waits for"), then go.
                write_failure_reply(
                    out, 0,
                    std::make_exception_ptr(ChannelError(
                        "crew: the worker process ran out of memory receiving this task's arguments "
                        "(Options::memory_limit is " + std::to_string(config.memory_limit) +
                        " bytes); raise the limit or pass less data")));
                channel.send_bytes(out);
                break;
            }
            // The parent decoded every result of the last batch before it sent
            // this one: the SharedArrays those results named can go now.
            result_pins.clear();
            Reader batch(in);
            auto count = batch.read_value<std::uint32_t>();
            if (count == 0) break;  // the parent retires this worker
            for (std::uint32_t i = 0; i < count; ++i) {
                const auto seq = batch.read_value<std::uint64_t>();
                if (!control.claim(seq)) {  // cancelled before it started
                    (void)batch.read_value<CodeRef>();
                    (void)batch.take(static_cast<std::size_t>(batch.read_value<std::uint64_t>()));
                    out.clear();
                    Writer w(out);
                    w.write_value(seq);
                    w.write_value(static_cast<std::uint8_t>(Outcome::skipped));
                } else if (init_error) {  // every task reports the initializer's failure
                    (void)batch.read_value<CodeRef>();
                    (void)batch.take(static_cast<std::size_t>(batch.read_value<std::uint64_t>()));
                    write_failure_reply(out, seq, init_error);
                } else {
                    PinScope pin(result_pins);
                    KeepScope keep(kept);
                    kept.start_task();
                    run_call(seq, batch, out);
                    if (out.size() > config.max_message)
                        write_failure_reply(
                            out, seq,
                            std::make_exception_ptr(ChannelError(
                                "crew: the task's result is " + std::to_string(out.size()) +
                                " bytes encoded, over Options::max_message_size (" +
                                std::to_string(config.max_message) + "); the worker is fine")));
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
        auto endpoint = Channel::Endpoint::import_handle(handle, config.max_message + batch_overhead);
        worker_main(endpoint, config);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "crew: the worker cannot open its channel: %s\n", e.what());
    }
    ::_exit(126);
}

/// The channels a spawned worker can serve, by name: a fresh copy of the
/// program finds the channel type from the name in its request. Every
/// ProcessExecutor type registers its own channel during static
/// initialisation (ProcessExecutor::serves_), so a program compiles the
/// worker loop only for the channels it uses, and any channel whose end can
/// be exported works.
class ServedChannels {
public:
    using Serve = void (*)(std::string_view handle, const WorkerConfig& config);

    static bool add(std::string_view name, Serve serve) {
        auto& r = instance();
        std::lock_guard lock(r.mutex_);
        for (auto& e : r.entries_)
            if (e.first == name) return true;
        r.entries_.emplace_back(std::string(name), serve);
        return true;
    }
    static Serve find(std::string_view name) {
        auto& r = instance();
        std::lock_guard lock(r.mutex_);
        for (auto& e : r.entries_)
            if (e.first == name) return e.second;
        return nullptr;
    }

private:
    static ServedChannels& instance() {
        static ServedChannels registry;
        return registry;
    }
    std::mutex mutex_;
    std::vector<std::pair<std::string, Serve>> entries_;
};

/// Serves an exported channel end ("<channel name>:...") as a worker.
[[noreturn]] inline void serve_handle(std::string_view handle, const WorkerConfig& config) {
    const std::string_view channel = handle.substr(0, handle.find(':'));
    if (auto serve = ServedChannels::find(channel)) serve(handle, config);
    std::fprintf(stderr, "crew: the worker was asked to serve a channel this program does not use: \"%.*s\"\n",
                 static_cast<int>(channel.size()), channel.data());
    ::_exit(126);
}

[[noreturn]] inline void malformed_request(std::string_view why) {
    std::fprintf(stderr, "crew: this process was started as a crew worker, but its request is malformed (%.*s)\n",
                 static_cast<int>(why.size()), why.data());
    ::_exit(126);
}

/// Called by crew::Session: when this process was started by its own parent
/// as a worker (Start::spawn) or fork server, serves and never returns; else
/// returns at once. The request is "<what>|<handle>|<config>": a channel
/// name and an exported end, or "forkserver" and its control fd.
inline void serve_if_requested() {
    auto request = take_worker_request();
    if (!request) return;
    const std::string& text = *request;
    auto first = text.find('|'), second = text.rfind('|');
    WorkerConfig config;
    if (first == std::string::npos || second == first) malformed_request("expected <what>|<handle>|<config>");
    if (!WorkerConfig::from_text(std::string_view(text).substr(second + 1), config))
        malformed_request("bad worker configuration");
    std::string_view what = std::string_view(text).substr(0, first);
    std::string_view handle = std::string_view(text).substr(first + 1, second - first - 1);
    if (what == ForkServer::name) {
        int control = -1;
        auto [end, ec] = std::from_chars(handle.data(), handle.data() + handle.size(), control);
        if (ec != std::errc{} || end != handle.data() + handle.size() || control < 3)
            malformed_request("bad fork server control descriptor");
        ::fcntl(control, F_SETFD, FD_CLOEXEC);
        run_fork_server(control, [&](std::string_view worker_handle) { serve_handle(worker_handle, config); });
    }
    serve_handle(handle, config);
}

/// Registers `Channel` for spawned workers and makes crew::Session call
/// serve_if_requested(): ProcessExecutor<Channel, ...> runs this during
/// static initialisation (only a pointer and a name are stored; nothing runs
/// before main()).
template <class Channel>
bool serve_workers_over() {
    serve_if_worker = &serve_if_requested;
    return ServedChannels::add(Channel::name, &serve_exported<Channel>);
}

}  // namespace crew::detail
