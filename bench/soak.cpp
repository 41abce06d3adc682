// bench_soak: the long fault-injection soak. Runs N tasks (default 10^6) on a
// ProcessExecutor<Channel> with 2 workers, where at random (fixed seed) a task
// throws, returns 1 MiB, sleeps past task_timeout, aborts, or is SIGKILLed,
// and prints the resident memory of this process and of the workers at
// intervals: both must stay flat. Every outcome is checked as in
// tests/soak_test.cpp; a wrong one ends the run with exit code 2.
//
//   bench_soak [--tasks=N] [--channel=shm|pipe|socket|mq]
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <crew/crew.hpp>

namespace {

enum Fault : int { none, throws, large, overtime, aborts, killed };

std::vector<char> soak_task(int fault, int i) {
    switch (fault) {
        case throws: throw std::runtime_error("fault " + std::to_string(i));
        case large: return std::vector<char>(std::size_t{1} << 20, static_cast<char>(i));
        case overtime: std::this_thread::sleep_for(std::chrono::seconds(5)); break;
        case aborts: std::abort();
        case killed: std::raise(SIGKILL);
        default: break;
    }
    return std::vector<char>(4, static_cast<char>(i));
}

int own_pid() { return static_cast<int>(::getpid()); }

// Per 100,000 tasks: 500 throw, 500 return 1 MiB, 2 overrun, 100 abort, 50
// are killed. Fewer overruns than the test: each costs the whole timeout.
Fault pick(std::mt19937& rng) {
    const auto r = std::uniform_int_distribution<int>(0, 99'999)(rng);
    if (r < 500) return throws;
    if (r < 1000) return large;
    if (r < 1002) return overtime;
    if (r < 1102) return aborts;
    if (r < 1152) return killed;
    return none;
}

long rss_kib(int pid) {
    std::ifstream status("/proc/" + std::to_string(pid) + "/status");
    for (std::string line; std::getline(status, line);)
        if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6);
    return -1;
}

template <class Channel>
int soak(long tasks) {
    crew::ProcessExecutor<Channel> ex(2, crew::Options{.task_timeout = std::chrono::milliseconds(200)});
    std::mt19937 rng(20261122);
    long wrong = 0, faults = 0;
    std::set<int> workers;
    const auto start = std::chrono::steady_clock::now();
    std::printf("| tasks done | faults | wrong | parent RSS KiB | workers RSS KiB (live ones) | seconds |\n"
                "|---:|---:|---:|---:|---:|---:|\n");
    auto report = [&](long done) {
        long worker_rss = 0;
        for (int i = 0; i < 8; ++i) workers.insert(ex.submit(own_pid).get());  // likely both workers
        for (auto it = workers.begin(); it != workers.end();) {
            const long r = rss_kib(*it);
            if (r < 0) {
                it = workers.erase(it);  // replaced after a fault
            } else {
                worker_rss += r;
                ++it;
            }
        }
        std::printf("| %ld | %ld | %ld | %ld | %ld (%zu) | %.1f |\n", done, faults, wrong, rss_kib(::getpid()),
                    worker_rss, workers.size(),
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
        std::fflush(stdout);
    };
    constexpr std::size_t window = 256;
    std::vector<std::pair<Fault, crew::Future<std::vector<char>>>> inflight;
    long settled = 0;
    auto settle = [&](std::pair<Fault, crew::Future<std::vector<char>>>& entry) {
        const long i = settled++;
        Fault got = Fault(-1);
        try {
            const auto v = entry.second.get();
            if (v.back() == static_cast<char>(i)) got = v.size() == 4 ? none : large;
        } catch (const crew::Timeout&) {
            got = overtime;
        } catch (const crew::WorkerDied& e) {
            got = e.signal() == SIGABRT ? aborts : e.signal() == SIGKILL ? killed : Fault(-1);
        } catch (const crew::Error&) {
        } catch (const std::runtime_error&) {  // the task's own exception, rethrown as itself
            got = throws;
        } catch (...) {
        }
        wrong += got != entry.first;
        faults += entry.first != none;
    };
    const long step = tasks / 10 > 0 ? tasks / 10 : 1;
    report(0);
    for (long i = 0; i < tasks; ++i) {
        const Fault fault = pick(rng);
        inflight.emplace_back(fault, ex.submit(soak_task, static_cast<int>(fault), static_cast<int>(i)));
        if (inflight.size() == window) {
            for (auto& entry : inflight) settle(entry);
            inflight.clear();
        }
        if ((i + 1) % step == 0) report(i + 1);
    }
    for (auto& entry : inflight) settle(entry);
    report(settled);
    return wrong == 0 ? 0 : 2;
}

}  // namespace

int main(int argc, char** argv) {
    crew::Session session(argc, argv);  // first: spawned workers serve from here
    long tasks = 1'000'000;
    std::string channel = "shm";
    for (int i = 1; i < argc; ++i) {
        const std::string_view a = argv[i];
        if (a.rfind("--tasks=", 0) == 0) {
            tasks = std::atol(argv[i] + 8);
        } else if (a.rfind("--channel=", 0) == 0) {
            channel = std::string(a.substr(10));
        } else {
            std::fprintf(stderr, "usage: %s [--tasks=N] [--channel=shm|pipe|socket|mq]\n", argv[0]);
            return 1;
        }
    }
    std::printf("## Soak: %ld tasks over %s, 2 workers, task_timeout 200 ms\n\n", tasks, channel.c_str());
    if (channel == "shm") return soak<crew::ipc::SharedMemory>(tasks);
    if (channel == "pipe") return soak<crew::ipc::Pipe>(tasks);
    if (channel == "socket") return soak<crew::ipc::Socket>(tasks);
    if (channel == "mq") return soak<crew::ipc::MessageQueue>(tasks);
    std::fprintf(stderr, "unknown channel %s\n", channel.c_str());
    return 1;
}
