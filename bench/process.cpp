// bench_process: crew::ProcessExecutor over each channel against the same
// channel used raw, Python's ProcessPoolExecutor, memcpy and a plain socket,
// side by side in one run.
//
//   bench_process [--reps=5] [--scale=1] [--only=TEXT] [--python=python3]
//
// Tables (N scaled by --scale):
//   serial round trip, <channel>   20,000 times: submit an empty task, get()
//                       it before the next; next to a raw ping-pong of 8 bytes
//                       over the same channel's endpoints between this process
//                       and a forked child (same wait strategy). us per trip.
//   pipelined           200,000 empty tasks submitted, then every get(), with
//                       2 workers, per channel; next to Python's
//                       ProcessPoolExecutor(2) doing 20,000 submit() +
//                       result() (bench/python_pool.py, run with --python).
//                       us per task.
//   CPU-bound speedup   16 tasks of ~20 ms of arithmetic on 1 worker and on
//                       2 workers (default channel). ms per batch.
//   bandwidth <size>    one message of 1 MiB or 64 MiB to a forked child,
//                       which answers with 1 byte: each channel, a raw
//                       socketpair with 4 MiB buffers, and memcpy of the same
//                       bytes in this process. ms per message.
//   idle cost           CPU time (user + system, this process and its
//                       workers) that an executor with 2 idle workers uses
//                       over 1 s, after one task woke them: ThreadExecutor<>
//                       and ProcessExecutor<>, beside what measuring alone
//                       costs (a /proc scan). ms of CPU per second, from the
//                       CPU-time clocks.
// Executors and children are started before the clock starts.
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <crew/crew.hpp>

#include "bench.hpp"

#ifndef CREW_BENCH_SOURCE_DIR
#define CREW_BENCH_SOURCE_DIR "."
#endif

namespace {

using crew::ipc::MessageQueue;
using crew::ipc::Pipe;
using crew::ipc::SharedMemory;
using crew::ipc::Socket;

int nothing() { return 0; }

std::uint64_t burn(std::uint64_t rounds) {
    std::uint64_t x = 88172645463325252ull;
    for (std::uint64_t i = 0; i < rounds; ++i) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    return x;
}

/// A forked child that answers every message on its end with `answer(msg)`
/// until the parent closes; the parent's end stays here.
template <class Channel>
class Echo {
public:
    template <class Answer>
    explicit Echo(Answer answer) {
        auto [mine, theirs] = Channel::pair();
        pid_ = ::fork();
        bench::check(pid_ >= 0, "fork");
        if (pid_ == 0) {
            mine.close();
            std::vector<std::byte> in;
            try {
                for (;;) {
                    theirs.receive_bytes(in);
                    theirs.send_bytes(answer(in));
                }
            } catch (const crew::ChannelError&) {
            }
            ::_exit(0);
        }
        theirs.close();
        end_ = std::move(mine);
    }
    Echo(const Echo&) = delete;
    Echo& operator=(const Echo&) = delete;
    ~Echo() {
        end_.close();
        ::waitpid(pid_, nullptr, 0);
    }
    typename Channel::Endpoint& end() { return end_; }

private:
    pid_t pid_ = -1;
    typename Channel::Endpoint end_;
};

template <class Channel, class Sync = crew::sync::LockFree>
std::vector<bench::Case> round_trip(std::size_t n) {
    std::vector<bench::Case> cases;
    auto ex = std::make_shared<crew::ProcessExecutor<Channel, Sync>>(1);
    cases.push_back({"crew ProcessExecutor<" + std::string(Channel::name) + ", " + std::string(Sync::name) +
                         "> submit + get",
                     true, [ex, n] {
                         int sum = 0;
                         const double s = bench::seconds([&] {
                             for (std::size_t i = 0; i < n; ++i) sum += ex->submit(nothing).get();
                         });
                         bench::check(sum == 0, "every task ran");
                         return s / static_cast<double>(n) * 1e6;
                     }});
    using Raw = crew::ipc::with_sync_t<Channel, Sync>;
    auto echo = std::make_shared<Echo<Raw>>([](const std::vector<std::byte>& in) { return in; });
    cases.push_back({"raw " + std::string(Raw::name) + " ping-pong", false, [echo, n] {
                         std::vector<std::byte> out(8), in;
                         const double s = bench::seconds([&] {
                             for (std::size_t i = 0; i < n; ++i) {
                                 echo->end().send_bytes(out);
                                 echo->end().receive_bytes(in);
                             }
                         });
                         bench::check(in.size() == 8, "echo");
                         return s / static_cast<double>(n) * 1e6;
                     }});
    return cases;
}

template <class Channel, class Sync = crew::sync::LockFree>
bench::Case pipelined(std::size_t n) {
    auto ex = std::make_shared<crew::ProcessExecutor<Channel, Sync>>(2);
    return {"crew ProcessExecutor<" + std::string(Channel::name) + ", " + std::string(Sync::name) + ">, 2 workers",
            true, [ex, n] {
                std::vector<crew::Future<int>> fs;
                fs.reserve(n);
                int sum = 0;
                const double s = bench::seconds([&] {
                    for (std::size_t i = 0; i < n; ++i) fs.push_back(ex->submit(nothing));
                    for (auto& f : fs) sum += f.get();
                });
                bench::check(sum == 0, "every task ran");
                return s / static_cast<double>(n) * 1e6;
            }};
}

std::vector<bench::Case> speedup(std::size_t tasks, std::uint64_t rounds) {
    std::vector<bench::Case> cases;
    for (std::size_t workers : {2, 1}) {
        auto ex = std::make_shared<crew::ProcessExecutor<>>(workers);
        cases.push_back({"crew ProcessExecutor, " + std::to_string(workers) + " worker(s)", workers == 2,
                         [ex, tasks, rounds] {
                             std::vector<std::uint64_t> in(tasks, rounds);
                             std::vector<std::uint64_t> out;
                             const double s = bench::seconds([&] { out = ex->map(burn, in, 1); });
                             bench::check(out.size() == tasks && out[0] == burn(rounds), "results");
                             return s * 1e3;
                         }});
    }
    return cases;
}

std::vector<std::byte> ack(const std::vector<std::byte>&) { return std::vector<std::byte>(1); }

template <class Channel>
bench::Case bandwidth(std::size_t bytes) {
    auto echo = std::make_shared<Echo<Channel>>(ack);
    return {"crew ipc::" + std::string(Channel::name), true, [echo, bytes] {
                std::vector<std::byte> payload(bytes, std::byte{1}), in;
                const double s = bench::seconds([&] {
                    echo->end().send_bytes(payload);
                    echo->end().receive_bytes(in);
                });
                bench::check(in.size() == 1, "ack");
                return s * 1e3;
            }};
}

// A socketpair with 4 MiB kernel buffers, written and read in 1 MiB calls.
bench::Case raw_socket(std::size_t bytes) {
    int sv[2];
    bench::check(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0, "socketpair");
    const int buffer = 4 << 20;
    for (int fd : sv) {
        ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buffer, sizeof buffer);
        ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buffer, sizeof buffer);
    }
    const pid_t pid = ::fork();
    bench::check(pid >= 0, "fork");
    if (pid == 0) {
        ::close(sv[0]);
        std::vector<char> buf(1 << 20);
        std::size_t got = 0;
        for (;;) {
            const ssize_t r = ::read(sv[1], buf.data(), buf.size());
            if (r <= 0) ::_exit(0);
            got += static_cast<std::size_t>(r);
            if (got == bytes) {
                got = 0;
                (void)!::write(sv[1], "k", 1);
            }
        }
    }
    ::close(sv[1]);
    struct Peer {
        int fd;
        pid_t pid;
        ~Peer() {
            ::close(fd);
            ::waitpid(pid, nullptr, 0);
        }
    };
    std::shared_ptr<Peer> peer(new Peer{sv[0], pid});  // not a temporary Peer: its destructor closes
    return {"raw socketpair, 4 MiB buffers", false, [peer, bytes] {
                std::vector<char> payload(bytes, 1);
                char k = 0;
                const double s = bench::seconds([&] {
                    for (std::size_t sent = 0; sent < bytes;) {
                        const ssize_t w = ::write(peer->fd, payload.data() + sent,
                                                  std::min<std::size_t>(bytes - sent, std::size_t{1} << 20));
                        bench::check(w > 0, "write");
                        sent += static_cast<std::size_t>(w);
                    }
                    bench::check(::read(peer->fd, &k, 1) == 1, "ack");
                });
                return s * 1e3;
            }};
}

bench::Case plain_memcpy(std::size_t bytes) {
    return {"memcpy", false, [bytes] {
                std::vector<char> from(bytes, 1), to(bytes);
                const double s = bench::seconds([&] { std::memcpy(to.data(), from.data(), bytes); });
                bench::check(to[bytes - 1] == 1, "copied");
                return s * 1e3;
            }};
}

/// Echo children are plain forks: each holds copies of the channel ends
/// made before it, so a pipe made earlier sees no EOF while a later child
/// lives. Ending the newest first never waits on a child that waits for us.
void destroy_newest_first(std::vector<bench::Case>& cases) {
    while (!cases.empty()) cases.pop_back();
}

template <class Title>
void run_table(const bench::Options& opt, const Title& title, std::string_view unit, std::vector<bench::Case> cases,
               std::optional<bench::Target> target) {
    bench::report(title, unit, bench::measure(cases, opt.reps), target);
    destroy_newest_first(cases);
}

}  // namespace

int main(int argc, char** argv) {
    crew::Session session(argc, argv);  // first: spawned workers serve from here
    const bench::Options opt = bench::parse(argc, argv, false);
    std::printf("## Processes: median of %d (after 1 warm-up), unpinned\n", opt.reps);

    auto each_channel = [](auto&& f) {
        f(static_cast<SharedMemory*>(nullptr));
        f(static_cast<Pipe*>(nullptr));
        f(static_cast<Socket*>(nullptr));
        f(static_cast<MessageQueue*>(nullptr));
    };

    each_channel([&]<class C>(C*) {
        const std::string title = "Serial round trip, " + std::string(C::name);
        if (opt.wants(title))
            run_table(opt, title, "us per round trip", round_trip<C>(opt.n(20'000)),
                      bench::Target{1.5, "raw " + std::string(C::name) + " ping-pong"});
    });

    if (opt.wants("Pipelined")) {
        std::vector<bench::Case> cases;
        each_channel([&]<class C>(C*) { cases.push_back(pipelined<C>(opt.n(200'000))); });
        if (const auto python = bench::Python::find(opt.python); !python.command.empty())
            cases.push_back(python.row("Python ProcessPoolExecutor(2)", std::to_string(opt.n(20'000))));
        run_table(opt, "Pipelined empty tasks, 2 workers", "us per task", std::move(cases),
                  bench::Target{0.01, "Python ProcessPoolExecutor(2)"});
    }

    // The Sync policy's process-shared form on the rings shared with each
    // worker: futex, robust mutex + condition variable, semaphore.
    auto each_policy = [](auto&& f) {
        f(static_cast<crew::sync::LockFree*>(nullptr));
        f(static_cast<crew::sync::Mutex*>(nullptr));
        f(static_cast<crew::sync::Semaphore*>(nullptr));
    };
    if (opt.wants("Sync policies, round trip")) {
        std::vector<bench::Case> cases;
        each_policy([&]<class S>(S*) {
            for (auto& c : round_trip<SharedMemory, S>(opt.n(20'000))) cases.push_back(std::move(c));
        });
        run_table(opt, "Sync policies, round trip over shm", "us per round trip", std::move(cases),
                  bench::Target{1.5, "raw shm ping-pong"});
    }
    if (opt.wants("Sync policies, pipelined")) {
        std::vector<bench::Case> cases;
        each_policy([&]<class S>(S*) { cases.push_back(pipelined<SharedMemory, S>(opt.n(200'000))); });
        run_table(opt, "Sync policies, pipelined over shm, 2 workers", "us per task", std::move(cases),
                  bench::Target{1.0, "crew ProcessExecutor<shm, lock-free>, 2 workers"});
    }

    if (opt.wants("CPU-bound"))
        run_table(opt, "CPU-bound speedup, 16 tasks of ~20 ms", "ms per batch",
                  speedup(16, static_cast<std::uint64_t>(opt.scale * 2e7)),
                  bench::Target{1 / 1.9, "crew ProcessExecutor, 1 worker(s)"});

    for (std::size_t mib : {1, 64}) {
        const std::string title = "Bandwidth, one " + std::to_string(mib) + " MiB message";
        if (!opt.wants(title)) continue;
        const std::size_t bytes = mib << 20;
        std::vector<bench::Case> cases;
        each_channel([&]<class C>(C*) { cases.push_back(bandwidth<C>(bytes)); });
        cases.push_back(raw_socket(bytes));
        cases.push_back(plain_memcpy(bytes));
        run_table(opt, title, "ms per message", std::move(cases), bench::Target{2.0, "memcpy"});
    }

    if (opt.wants("Idle cost")) {
        auto cpu_over_a_second = [] {
            const double before = bench::cpu_seconds_of_tree();
            std::this_thread::sleep_for(std::chrono::seconds(1));
            return (bench::cpu_seconds_of_tree() - before) * 1e3;
        };
        auto idle_cpu = [&](auto& ex) {
            (void)ex.submit(nothing).get();  // the workers woke, then go idle
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
            return cpu_over_a_second();
        };
        std::printf("\n### Idle cost: CPU used over 1 s by an executor with 2 idle workers\n\n"
                    "| | ms of CPU per second |\n|---|---:|\n");
        // Reading the clocks scans /proc: that costs CPU too, measured alone.
        std::printf("| no executor (the measurement itself) | %s |\n", bench::fmt(cpu_over_a_second()).c_str());
        {
            crew::ThreadExecutor<> threads(2);
            std::printf("| crew ThreadExecutor<>, 2 threads | %s |\n", bench::fmt(idle_cpu(threads)).c_str());
        }
        crew::ProcessExecutor<> processes(2);
        std::printf("| crew ProcessExecutor<>, 2 workers | %s |\n", bench::fmt(idle_cpu(processes)).c_str());
    }
    return 0;
}
