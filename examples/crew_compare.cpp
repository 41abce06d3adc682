// crew-compare: threads against processes, measured on this machine, in one
// table: what a worker costs to start, to wake, to feed with data, to keep in
// memory; what it buys in speed; and what one crashing task takes down.
//
//   crew-compare [--quick] [--csv FILE] [--markdown FILE] [--plot FILE]
//
// Threads are crew::ThreadExecutor<>; processes are crew::ProcessExecutor<>
// (SharedMemory channel, workers started by Start::spawn) unless a row names
// another channel or start method. Every figure is a median of several
// repetitions, taken round-robin over the cases where that is cheap, so that a
// busy neighbour on a shared machine hurts every column alike. Every result a
// task returns is checked; a wrong one ends the program with exit code 2.
//
// The sections:
//   start a worker  construct an executor, run one empty task, destroy it
//                   (join the threads, or stop and reap the processes): the
//                   whole life of a pool. "each further worker" is
//                   (life with 4 workers - life with 1) / 3: it shows what
//                   fork_server saves once its server runs.
//   round trip      submit an empty task and get() it, one at a time, 1
//                   worker: the cost of waking a worker and of its answer
//                   waking us. Median (and 90th percentile) of single trips.
//   move data       a task that takes a std::vector<char> and returns it.
//                   Threads share memory, so the vector only changes hands (a
//                   pointer); processes encode it and copy it across the
//                   channel both ways. One row per channel and size, and
//                   one for a crew::SharedArray<char> of 16 MiB handed
//                   there and back (no copy on either executor).
//   memory          resident memory per worker. Threads: growth of this
//                   process's VmRSS per extra thread. Processes: VmRSS of the
//                   workers (/proc/<pid>/status), which counts pages shared
//                   with other processes (libc, this program's code) in full
//                   in every worker, and RssAnon, their private memory only.
//   speedup         a CPU-bound job (tasks of arithmetic) and an I/O-bound job
//                   (tasks that sleep) on 1, 2 and 4 workers: time on 1
//                   worker / time on n, both from the same repetition. Pools
//                   are started outside the clock. Never above the number of
//                   CPUs for the CPU-bound job, less when others use them:
//                   the note gives plain std::threads' speedup in the same
//                   run, what the machine allowed.
//   crash           N tasks, one of which raises SIGSEGV: how many results the
//                   program gets and lives on with. The thread pool runs in a
//                   forked child process, so this program survives to tell.
//
// How to read it: the last number column is processes / threads. For a cost
// (time, memory) it says how many times dearer a process is; for a speedup,
// how processes scale relative to threads. Absolute figures move with the
// machine's load (read the ratios); the header names the machine and warns
// when its load average was at or above its CPU count. Progress goes to
// stderr, a line per measurement; the table to stdout.
#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <latch>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <crew/crew.hpp>

extern char** environ;  // handed to gnuplot by posix_spawnp

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// ---------------------------------------------------------------- the tasks
// Plain functions: a process executor sends a task to its workers by address,
// so it must not capture, and a spawned worker runs it before main() of its
// copy of this program has run: a task uses nothing but its arguments.

int nothing() { return 0; }

std::vector<char> echo(std::vector<char> bytes) { return bytes; }

// The same 16 MiB, shared instead of copied: the task writes one byte and
// hands the array back.
crew::SharedArray<char> echo_shared(crew::SharedArray<char> bytes) {
    bytes[0] = static_cast<char>(bytes[0] + 1);
    return bytes;
}

// xorshift rounds: CPU work the compiler cannot fold away, and no memory
// traffic, so the job scales with cores and not with memory bandwidth.
std::uint64_t burn(std::uint64_t rounds) {
    std::uint64_t x = 88172645463325252ull;
    for (std::uint64_t i = 0; i < rounds; ++i) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    return x;
}

int nap(int ms, int i) {
    std::this_thread::sleep_for(milliseconds(ms));
    return i;
}

// Allocates like a real task does (glibc gives each thread its own malloc
// arena: part of a thread's cost), and stays busy long enough that every
// worker of the pool takes one of these.
int pid_after_nap(int ms) {
    std::vector<char> scratch(1024, 1);
    std::this_thread::sleep_for(milliseconds(ms));
    return scratch[7] == 1 ? static_cast<int>(::getpid()) : -1;
}

int nap_or_crash(int i, int crash_at, int ms) {
    if (i == crash_at) {
        const rlimit no_core{0, 0};  // a demonstration, not a bug: no core file
        ::setrlimit(RLIMIT_CORE, &no_core);
        std::raise(SIGSEGV);
    }
    return nap(ms, i);
}

// ------------------------------------------------------------ small helpers

void expect(bool ok, const std::string& what) {
    if (!ok) throw std::runtime_error(what);
}

double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

template <class F>
double time_ms(F&& f) {
    const auto t0 = Clock::now();
    f();
    return ms_since(t0);
}

// The p-th quantile (0.5: the median) of `v`, nearest rank.
double quantile(std::vector<double> v, double p) {
    expect(!v.empty(), "internal error: no samples");
    std::sort(v.begin(), v.end());
    return v[static_cast<std::size_t>(p * static_cast<double>(v.size() - 1) + 0.5)];
}
double median(std::vector<double> v) { return quantile(std::move(v), 0.5); }

std::string format(const char* fmt, double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, fmt, v);
    return buf;
}

// About three significant digits, never an exponent; whole numbers (counts,
// kilobytes) as they are.
std::string number(double v) {
    const double a = v < 0 ? -v : v;
    if (a < 1e12 && v == static_cast<double>(static_cast<long long>(v))) return format("%.0f", v);
    return format(a >= 100 ? "%.0f" : a >= 10 ? "%.1f" : a >= 1 ? "%.2f" : "%.3f", v);
}

// Kilobytes from a "Field:   1234 kB" line of /proc/<pid>/status.
long status_kib(const std::string& pid, std::string_view field) {
    std::ifstream in("/proc/" + pid + "/status");
    for (std::string line; std::getline(in, line);)
        if (line.starts_with(field) && line.size() > field.size() && line[field.size()] == ':')
            return std::strtol(line.c_str() + field.size() + 1, nullptr, 10);
    throw std::runtime_error("no " + std::string(field) + " in /proc/" + pid + "/status");
}

// Waits for `pid` until `deadline`; past it, kills it (a demonstration must
// never hang the program). The wait status, or nullopt if it had to be killed.
std::optional<int> wait_child(pid_t pid, Clock::time_point deadline) {
    int status = 0;
    while (::waitpid(pid, &status, WNOHANG) == 0) {
        if (Clock::now() > deadline) {
            ::kill(pid, SIGKILL);
            ::waitpid(pid, &status, 0);
            return std::nullopt;
        }
        std::this_thread::sleep_for(milliseconds(5));
    }
    return status;
}

// -------------------------------------------------------- settings and table

struct Settings {
    bool quick = false;
    // Files to write; empty: not asked for.
    std::string csv = "", markdown = "", plot = "";
    int start_reps = 31;     // pool lives per start method and size
    int trips = 5000;        // single round trips
    int small_trips = 3000;  // 64 B echoes per channel
    int big_reps = 11;       // 16 MiB echoes per channel
    int job_reps = 9;        // runs of each speedup job and size
    int cpu_tasks = 16;
    double cpu_task_ms = 25;
    int io_tasks = 16;
    int io_task_ms = 10;
    int memory_workers = 4;
    int crash_tasks = 8;
};

// --quick: a few seconds, for CI; the same measurements, fewer and smaller.
Settings quick_settings() {
    return {.quick = true,
            .start_reps = 3,
            .trips = 500,
            .small_trips = 200,
            .big_reps = 3,
            .job_reps = 3,
            .cpu_tasks = 8,
            .cpu_task_ms = 5,
            .io_tasks = 8,
            .io_task_ms = 5};
}

enum class Section { start, round_trip, move, memory, speedup, crash };

constexpr std::array section_titles = {
    "start a worker: construct the executor, run 1 empty task, destroy it",
    "round trip: submit 1 empty task, get() it, 1 worker",
    "move data: a task takes a std::vector<char> and returns it, 1 worker",
    "memory: resident memory per worker",
    "speedup: time on 1 worker / time on n workers",
    "crash: one task of many raises SIGSEGV",
};

struct Row {
    Section section;
    std::string what;
    double threads, processes;
    std::string unit, note;
    bool ratio = true;  // false where processes / threads means nothing
};

using Table = std::vector<Row>;

std::string ratio_cell(const Row& r) { return r.ratio && r.threads > 0 ? number(r.processes / r.threads) + "x" : ""; }

// Adds a row and reports it on stderr: the progress line of a measurement.
void add(Table& table, Row row) {
    std::fprintf(stderr, "crew-compare: %-44s threads %9s  processes %9s %s\n", row.what.c_str(),
                 number(row.threads).c_str(), number(row.processes).c_str(), row.unit.c_str());
    table.push_back(std::move(row));
}

// ------------------------------------------------------- 1. start a worker

template <class Ex>
double pool_life_ms(std::size_t workers, crew::Options options = {}) {
    return time_ms([&] {
        Ex ex(workers, options);
        expect(ex.submit(nothing).get() == 0, "an empty task returned a wrong value");
    });
}

void measure_start(const Settings& s, Table& table) {
    struct Way {
        const char* name;
        crew::Start start;
        const char* note;
    };
    const std::array<Way, 3> ways = {{
        {"spawn (default)", crew::Start::spawn, "fork + exec of this program per worker; safe with threads"},
        {"fork_server", crew::Start::fork_server, "1 spawned server forks every worker"},
        {"fork", crew::Start::fork, "fork of this process; unsafe if it runs other threads"},
    }};
    std::vector<double> thread1, thread4;
    std::array<std::vector<double>, 3> proc1, proc4;
    for (int r = 0; r < s.start_reps; ++r) {  // round-robin: drift hits every case alike
        // A thread starts in microseconds: more samples for the same time.
        for (int i = 0; i < 10; ++i) {
            thread1.push_back(pool_life_ms<crew::ThreadExecutor<>>(1));
            thread4.push_back(pool_life_ms<crew::ThreadExecutor<>>(4));
        }
        for (std::size_t i = 0; i < ways.size(); ++i) {
            proc1[i].push_back(pool_life_ms<crew::ProcessExecutor<>>(1, {.start = ways[i].start}));
            proc4[i].push_back(pool_life_ms<crew::ProcessExecutor<>>(4, {.start = ways[i].start}));
        }
    }
    // A difference of two noisy medians can come out below 0: that means "too
    // small to see here", shown as 0.
    const auto each = [](double one, double four) { return std::max(0.0, (four - one) / 3); };
    const double t1 = median(thread1), t_each = each(t1, median(thread4));
    for (std::size_t i = 0; i < ways.size(); ++i)
        add(table, {Section::start, std::string("1 worker, processes by ") + ways[i].name, t1, median(proc1[i]), "ms",
                    ways[i].note});
    for (std::size_t i = 0; i < ways.size(); ++i)
        add(table, {Section::start, std::string("each further worker, ") + ways[i].name, t_each,
                    each(median(proc1[i]), median(proc4[i])), "ms", "(life with 4 workers - life with 1) / 3"});
}

// ----------------------------------------------------------- 2. round trip
// Both pools stay up and take turns, a block of trips each, so that a change
// in the machine's load hits both columns alike.

constexpr int blocks = 10;

// `trips` single round trips; each one's time, in microseconds, into `each`.
template <class Ex>
void round_trips(Ex& ex, int trips, std::vector<double>& each) {
    for (int i = 0; i < trips; ++i) {
        const auto t0 = Clock::now();
        const int v = ex.submit(nothing).get();
        each.push_back(ms_since(t0) * 1e3);
        expect(v == 0, "an empty task returned a wrong value");
    }
}

void measure_round_trip(const Settings& s, Table& table) {
    crew::ThreadExecutor<> threads(1);
    crew::ProcessExecutor<> processes(1);
    std::vector<double> t, p, warm_up;
    round_trips(threads, s.trips / blocks, warm_up);
    round_trips(processes, s.trips / blocks, warm_up);
    for (int b = 0; b < blocks; ++b) {
        round_trips(threads, s.trips / blocks, t);
        round_trips(processes, s.trips / blocks, p);
    }
    add(table, {Section::round_trip, "empty task, median", median(t), median(p), "us",
                "a wake-up each way; " + std::to_string(s.trips) + " trips"});
    add(table, {Section::round_trip, "empty task, 90th percentile", quantile(t, 0.9), quantile(p, 0.9), "us",
                "the slow tail: a worker that had gone to sleep, a busy CPU"});
}

// ------------------------------------------------------------ 3. move data
// One pool per column (threads, then a process pool per channel), all up at
// once and taking turns as in the round trip.

std::vector<char> pattern(std::size_t size) {
    std::vector<char> v(size);
    for (std::size_t i = 0; i < size; ++i) v[i] = static_cast<char>(i * 131 + 7);
    return v;
}

// `trips` echoes of `original`; each one's time, in microseconds, into `each`.
template <class Ex>
void echoes(Ex& ex, const std::vector<char>& original, int trips, std::vector<double>& each) {
    for (int i = 0; i < trips; ++i) {
        std::vector<char> bytes = original;
        const auto t0 = Clock::now();
        // Moved: a thread task takes the buffer itself (no copy); a process
        // task encodes it from here.
        const std::vector<char> back = ex.submit(echo, std::move(bytes)).get();
        each.push_back(ms_since(t0) * 1e3);
        expect(back == original, "echo returned other bytes");  // out of the clock
    }
}

constexpr std::size_t big_size = std::size_t{16} << 20;
constexpr std::array<const char*, 5> move_cases = {"threads", "SharedMemory (default)", "Pipe", "Socket",
                                                   "MessageQueue"};

void measure_move(const Settings& s, Table& table) {
    crew::ThreadExecutor<> threads(1);
    crew::ProcessExecutor<crew::ipc::SharedMemory> shm(1);
    crew::ProcessExecutor<crew::ipc::Pipe> pipe(1);
    crew::ProcessExecutor<crew::ipc::Socket> socket(1);
    crew::ProcessExecutor<crew::ipc::MessageQueue> mq(1);
    const std::vector<char> small = pattern(64), big = pattern(big_size);
    std::array<std::vector<double>, move_cases.size()> small_us, big_us, warm_up;
    crew::SharedArray<char> shared(big_size);
    std::array<std::vector<double>, 2> shared_us;  // threads, SharedMemory
    const auto hand_over = [&](auto& ex, std::vector<double>& each) {
        const char before = shared[0];
        const auto t0 = Clock::now();
        const crew::SharedArray<char> back = ex.submit(echo_shared, shared).get();
        each.push_back(ms_since(t0) * 1e3);
        expect(back.size() == big_size && shared[0] == static_cast<char>(before + 1), "the shared array came back");
    };
    // A round: each pool in turn moves the small vector some times, then the
    // big one once. Round 0 warms up and is not counted.
    for (int round = 0; round <= s.big_reps; ++round) {
        const auto turn = [&](auto& ex, std::size_t c) {
            echoes(ex, small, s.small_trips / s.big_reps, round == 0 ? warm_up[c] : small_us[c]);
            echoes(ex, big, 1, round == 0 ? warm_up[c] : big_us[c]);
        };
        turn(threads, 0);
        turn(shm, 1);
        std::vector<double> ignored;
        hand_over(threads, round == 0 ? ignored : shared_us[0]);
        hand_over(shm, round == 0 ? ignored : shared_us[1]);
        turn(pipe, 2);
        turn(socket, 3);
        turn(mq, 4);
        std::fprintf(stderr, "crew-compare: moving data, round %d of %d done\n", round, s.big_reps);
    }
    for (std::size_t c = 1; c < move_cases.size(); ++c)
        add(table, {Section::move, std::string("64 B there and back, ") + move_cases[c], median(small_us[0]),
                    median(small_us[c]), "us", "threads: the vector changes hands, no copy"});
    for (std::size_t c = 1; c < move_cases.size(); ++c) {
        const double ms = median(big_us[c]) / 1e3, gbps = 2.0 * static_cast<double>(big_size) / (ms * 1e6);
        add(table, {Section::move, std::string("16 MiB there and back, ") + move_cases[c], median(big_us[0]) / 1e3, ms,
                    "ms", "processes: " + number(gbps) + " GB/s (2 x 16 MiB / time)"});
    }
    add(table, {Section::move, "16 MiB crew::SharedArray there and back, SharedMemory (default)",
                median(shared_us[0]) / 1e3, median(shared_us[1]) / 1e3, "ms",
                "no copy: the worker maps the same memory; compare with the rows above"});
}

// --------------------------------------------------------------- 4. memory
// Measured first of all, before any other pool has run: glibc keeps the
// stacks of finished threads for reuse, already resident, and new threads
// would then seem to cost nothing.

double thread_rss_kib(int n) {
    const long before = status_kib("self", "VmRSS");
    crew::ThreadExecutor<> ex(static_cast<std::size_t>(n));
    // Each task waits until all n run, so every thread has run one.
    std::latch all_running(n);
    std::vector<crew::Future<int>> done;
    for (int i = 0; i < n; ++i)
        done.push_back(ex.submit([&all_running] {
            all_running.arrive_and_wait();
            return pid_after_nap(0);
        }));
    for (auto& f : done) expect(f.get() == static_cast<int>(::getpid()), "a thread task returned a wrong pid");
    return static_cast<double>(status_kib("self", "VmRSS") - before) / n;
}

// The distinct pids of a pool's workers: tasks that nap long enough that
// each idle worker takes one. A few tries, since batching may give one
// worker two.
template <class Ex>
std::set<int> worker_pids(Ex& ex, int n) {
    std::set<int> pids;
    for (int attempt = 0; attempt < 5 && static_cast<int>(pids.size()) < n; ++attempt) {
        std::vector<crew::Future<int>> f;
        for (int i = 0; i < n; ++i) f.push_back(ex.submit(pid_after_nap, 100));
        for (auto& x : f) pids.insert(x.get());
    }
    expect(!pids.contains(-1) && !pids.contains(static_cast<int>(::getpid())), "a worker returned a wrong pid");
    return pids;
}

void measure_memory(const Settings& s, Table& table) {
    const int n = s.memory_workers;
    const double thread_kib = thread_rss_kib(n);

    const long parent_before = status_kib("self", "VmRSS");
    crew::ProcessExecutor<> ex(static_cast<std::size_t>(n));
    const std::set<int> pids = worker_pids(ex, n);
    const double parent_kib = static_cast<double>(status_kib("self", "VmRSS") - parent_before) / n;
    double rss = 0, anon = 0;
    for (int pid : pids) {
        rss += static_cast<double>(status_kib(std::to_string(pid), "VmRSS"));
        anon += static_cast<double>(status_kib(std::to_string(pid), "RssAnon"));
    }
    const auto found = static_cast<double>(pids.size());
    add(table, {Section::memory, "VmRSS (shared pages counted)", thread_kib, rss / found, "KiB",
                "threads: this process's growth per thread (" + std::to_string(n) + " threads)"});
    add(table, {Section::memory, "private only (RssAnon)", thread_kib, anon / found, "KiB",
                "processes: plus " + number(parent_kib) + " KiB here per worker (its dispatcher thread)"});
}

// -------------------------------------------------------------- 5. speedup

struct CpuWork {
    std::uint64_t rounds, expected;
};

// Rounds of burn() that take about `ms` here, measured now.
CpuWork calibrate(double ms) {
    constexpr std::uint64_t probe = std::uint64_t{1} << 22;
    std::vector<double> t;
    for (int i = 0; i < 3; ++i) t.push_back(time_ms([] { expect(burn(probe) != 0, "burn() is broken"); }));
    const auto rounds = static_cast<std::uint64_t>(static_cast<double>(probe) * ms / std::max(median(t), 1e-3));
    return {rounds, burn(rounds)};
}

template <class Ex>
void cpu_job(Ex& ex, const Settings& s, const CpuWork& work) {
    std::vector<crew::Future<std::uint64_t>> f;
    for (int i = 0; i < s.cpu_tasks; ++i) f.push_back(ex.submit(burn, work.rounds));
    for (auto& x : f) expect(x.get() == work.expected, "a CPU-bound task returned a wrong value");
}

template <class Ex>
void io_job(Ex& ex, const Settings& s) {
    std::vector<crew::Future<int>> f;
    for (int i = 0; i < s.io_tasks; ++i) f.push_back(ex.submit(nap, s.io_task_ms, i));
    for (int i = 0; i < s.io_tasks; ++i)
        expect(f[static_cast<std::size_t>(i)].get() == i, "an I/O-bound task returned a wrong value");
}

constexpr std::array<std::size_t, 3> pool_sizes = {1, 2, 4};

// Per pool size, five figures: CPU-bound job on threads, on processes, then
// I/O-bound job on threads, on processes, then the CPU-bound job on plain
// std::threads.
constexpr std::size_t job_kinds = 5;
using JobTimes = std::array<std::array<double, job_kinds>, pool_sizes.size()>;
using JobRuns = std::array<std::array<std::vector<double>, job_kinds>, pool_sizes.size()>;  // ms of each run

// The CPU-bound job on n plain std::threads, no pool: the speedup this
// machine allows right now (a busy neighbour takes CPUs from both columns).
void plain_threads_job(std::size_t n, const Settings& s, const CpuWork& work) {
    std::atomic<int> wrong{0};
    {
        std::vector<std::jthread> team;
        for (std::size_t t = 0; t < n; ++t)
            team.emplace_back([&, t] {
                for (std::size_t i = t; i < static_cast<std::size_t>(s.cpu_tasks); i += n)
                    if (burn(work.rounds) != work.expected) ++wrong;
            });
    }  // joined
    expect(wrong == 0, "a CPU-bound task on a plain thread returned a wrong value");
}

// All six pools stay up, and each repetition runs both jobs on every one of
// them in turn (and the CPU-bound job on plain threads): the times a speedup
// divides are then taken seconds apart, whatever the load does over the run.
JobRuns run_jobs(const Settings& s, const CpuWork& work) {
    std::array<std::unique_ptr<crew::ThreadExecutor<>>, pool_sizes.size()> threads;
    std::array<std::unique_ptr<crew::ProcessExecutor<>>, pool_sizes.size()> processes;
    for (std::size_t k = 0; k < pool_sizes.size(); ++k) {
        threads[k] = std::make_unique<crew::ThreadExecutor<>>(pool_sizes[k]);
        processes[k] = std::make_unique<crew::ProcessExecutor<>>(pool_sizes[k]);
        cpu_job(*threads[k], s, work);  // warm-up: workers awake, their first pages touched
        cpu_job(*processes[k], s, work);
    }
    JobRuns runs;
    for (int r = 0; r < s.job_reps; ++r) {
        for (std::size_t k = 0; k < pool_sizes.size(); ++k) {
            runs[k][0].push_back(time_ms([&] { cpu_job(*threads[k], s, work); }));
            runs[k][1].push_back(time_ms([&] { cpu_job(*processes[k], s, work); }));
            runs[k][2].push_back(time_ms([&] { io_job(*threads[k], s); }));
            runs[k][3].push_back(time_ms([&] { io_job(*processes[k], s); }));
            runs[k][4].push_back(time_ms([&] { plain_threads_job(pool_sizes[k], s, work); }));
        }
        std::fprintf(stderr, "crew-compare: jobs, round %d of %d done\n", r + 1, s.job_reps);
    }
    return runs;
}

// Speedups over 1 worker (row 0 is all 1): the median over repetitions of
// time on 1 worker / time on n, both from the same repetition.
JobTimes measure_speedup(const Settings& s, Table& table) {
    const JobRuns runs = run_jobs(s, calibrate(s.cpu_task_ms));
    JobTimes speedup{};
    for (std::size_t k = 0; k < pool_sizes.size(); ++k)
        for (std::size_t c = 0; c < job_kinds; ++c) {
            std::vector<double> ratios;
            for (std::size_t r = 0; r < runs[k][c].size(); ++r) ratios.push_back(runs[0][c][r] / runs[k][c][r]);
            speedup[k][c] = median(ratios);
        }
    const std::array<std::string, 2> jobs = {
        std::to_string(s.cpu_tasks) + " tasks of ~" + number(s.cpu_task_ms) + " ms arithmetic",
        std::to_string(s.io_tasks) + " tasks that sleep " + std::to_string(s.io_task_ms) + " ms"};
    for (std::size_t j = 0; j < 2; ++j) {
        const char* kind = j == 0 ? "CPU-bound" : "I/O-bound";
        add(table, {Section::speedup, std::string(kind) + " job, 1 worker", median(runs[0][2 * j]),
                    median(runs[0][2 * j + 1]), "ms", jobs[j]});
        for (std::size_t k = 1; k < pool_sizes.size(); ++k)
            add(table, {Section::speedup, std::string(kind) + " speedup, " + std::to_string(pool_sizes[k]) + " workers",
                        speedup[k][2 * j], speedup[k][2 * j + 1], "x",
                        "ideal: " + std::to_string(pool_sizes[k]) +
                            (j == 0 ? "; plain std::threads, same run: " + number(speedup[k][4]) : "")});
    }
    return speedup;
}

// ---------------------------------------------------------------- 6. crash

constexpr int crash_at = 2;  // the third task segfaults
constexpr int crash_nap_ms = 20;
constexpr auto crash_deadline = std::chrono::seconds(30);

// How many results the program kept, and what became of the crashing task.
struct Fallout {
    int kept;
    std::string how;
};

// Processes: the crashing task fails with crew::WorkerDied, the others return.
Fallout process_crash(int tasks) {
    crew::ProcessExecutor<> ex(2);
    std::vector<crew::Future<int>> f;
    for (int i = 0; i < tasks; ++i) f.push_back(ex.submit(nap_or_crash, i, crash_at, crash_nap_ms));
    Fallout out{0, ""};
    for (int i = 0; i < tasks; ++i) {
        auto& x = f[static_cast<std::size_t>(i)];
        expect(x.wait_for(crash_deadline), "a process task did not finish within 30 s");
        try {
            expect(x.get() == i && i != crash_at, "a process task returned a wrong value");
            ++out.kept;
        } catch (const crew::WorkerDied& e) {
            expect(i == crash_at, "a task that does not crash failed: " + std::string(e.what()));
            out.how = "crew::WorkerDied (signal " + std::to_string(e.signal()) + ") for that task only";
        }
    }
    return out;
}

// The same tasks on a ThreadExecutor, in a forked child: it writes one byte
// per result its main thread gets. Forked while this process runs no other
// thread (every pool before this one is destroyed), so the child is sound.
Fallout thread_crash(int tasks) {
    int fds[2];
    expect(::pipe2(fds, O_CLOEXEC) == 0, "pipe2 failed");
    std::fflush(nullptr);  // else the child could print our buffered output again
    const pid_t pid = ::fork();
    expect(pid >= 0, "fork failed");
    if (pid == 0) {
        ::close(fds[0]);
        try {
            crew::ThreadExecutor<> ex(2);
            std::vector<crew::Future<int>> f;
            for (int i = 0; i < tasks; ++i) f.push_back(ex.submit(nap_or_crash, i, crash_at, crash_nap_ms));
            for (auto& x : f) {
                const char got = static_cast<char>(x.get());
                if (::write(fds[1], &got, 1) != 1) ::_exit(3);
            }
        } catch (...) {
            ::_exit(3);
        }
        ::_exit(0);
    }
    ::close(fds[1]);
    const auto deadline = Clock::now() + crash_deadline;
    int delivered = 0;
    for (char c = 0; Clock::now() < deadline;) {  // until EOF: the child ended
        pollfd p{fds[0], POLLIN, 0};
        if (::poll(&p, 1, 100) <= 0) continue;
        if (::read(fds[0], &c, 1) != 1) break;
        ++delivered;
    }
    ::close(fds[0]);
    const std::optional<int> status = wait_child(pid, deadline);
    expect(status.has_value(), "the thread crash demonstration did not end within 30 s");
    expect(WIFSIGNALED(*status), "the child with the segfaulting thread task did not die of a signal");
    const char* name = ::sigabbrev_np(WTERMSIG(*status));
    // Nothing is kept, whatever had arrived: the program that asked is gone.
    return {0, "the whole process died (SIG" + std::string(name ? name : "?") + ") after " + std::to_string(delivered) +
                   " result(s) had arrived"};
}

void measure_crash(const Settings& s, Table& table) {
    const Fallout p = process_crash(s.crash_tasks), t = thread_crash(s.crash_tasks);
    add(table, {Section::crash,
                "results kept, " + std::to_string(s.crash_tasks) + " tasks, task " + std::to_string(crash_at + 1) +
                    " segfaults",
                static_cast<double>(t.kept), static_cast<double>(p.kept), "tasks",
                "threads: " + t.how + "; processes: " + p.how, false});
}

// --------------------------------------------------------------- reporting

std::string read_first(const char* path, std::string_view prefix) {
    std::ifstream in(path);
    for (std::string line; std::getline(in, line);)
        if (line.starts_with(prefix)) return line;
    return "";
}

std::string machine() {
#ifdef __clang__
    const std::string compiler = "";  // its __VERSION__ says "clang"
#else
    const std::string compiler = "g++ ";
#endif
    cpu_set_t set;
    const int cpus = ::sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 0;
    std::string model = read_first("/proc/cpuinfo", "model name");
    model = model.empty() ? "unknown CPU" : model.substr(model.find(':') + 2);
    utsname u{};
    ::uname(&u);
    std::string load = read_first("/proc/loadavg", "");
    load = load.substr(0, load.find(' ', load.find(' ', load.find(' ') + 1) + 1));  // the first three
    std::string text = std::to_string(cpus) + " CPUs (nproc), " + model + ", Linux " + u.release + ", " + compiler +
                       __VERSION__ + ", load average " + load;
    if (std::strtod(load.c_str(), nullptr) >= cpus)
        text += "\nbusy machine: other programs compete for the CPUs; expect lower speedups and noisier times";
    return text;
}

std::vector<Row> in_section_order(Table table) {
    std::stable_sort(table.begin(), table.end(), [](const Row& a, const Row& b) { return a.section < b.section; });
    return table;
}

void print_text(const Table& table, const std::string& header) {
    std::size_t w[5] = {11, 7, 9, 19, 4};
    for (const Row& r : table) {
        w[0] = std::max(w[0], r.what.size());
        w[1] = std::max(w[1], number(r.threads).size());
        w[2] = std::max(w[2], number(r.processes).size());
        w[4] = std::max(w[4], r.unit.size());
    }
    const auto line = [&](const std::string& a, const std::string& b, const std::string& c, const std::string& d,
                          const std::string& e, const std::string& f) {
        std::printf("  %-*s  %*s  %*s  %*s  %-*s  %s\n", static_cast<int>(w[0]), a.c_str(), static_cast<int>(w[1]),
                    b.c_str(), static_cast<int>(w[2]), c.c_str(), static_cast<int>(w[3]), d.c_str(),
                    static_cast<int>(w[4]), e.c_str(), f.c_str());
    };
    std::printf("\n%s\n", header.c_str());
    std::optional<Section> current;
    for (const Row& r : table) {
        if (r.section != current) {
            current = r.section;
            std::printf("\n%s\n", section_titles[static_cast<std::size_t>(r.section)]);
            line("measurement", "threads", "processes", "processes / threads", "unit", "notes");
        }
        line(r.what, number(r.threads), number(r.processes), ratio_cell(r), r.unit, r.note);
    }
}

std::FILE* open_for_writing(const std::string& path) {
    std::FILE* f = std::fopen(path.c_str(), "w");
    expect(f != nullptr, "cannot write " + path + ": " + std::strerror(errno));
    return f;
}

void close_written(std::FILE* f, const std::string& path) {
    expect(std::fclose(f) == 0, "cannot write " + path);
    std::fprintf(stderr, "crew-compare: wrote %s\n", path.c_str());
}

void write_markdown(const Table& table, const std::string& header, const std::string& path) {
    std::FILE* f = open_for_writing(path);
    std::string text;  // the header's lines as paragraphs
    for (char c : header) text += c == '\n' ? std::string("\n\n") : std::string(1, c);
    std::fprintf(f, "%s\n\n| measurement | threads | processes | processes / threads | unit | notes |\n", text.c_str());
    std::fprintf(f, "|---|---:|---:|---:|---|---|\n");
    std::optional<Section> current;
    for (const Row& r : table) {
        if (r.section != current) {
            current = r.section;
            std::fprintf(f, "| **%s** | | | | | |\n", section_titles[static_cast<std::size_t>(r.section)]);
        }
        std::fprintf(f, "| %s | %s | %s | %s | %s | %s |\n", r.what.c_str(), number(r.threads).c_str(),
                     number(r.processes).c_str(), ratio_cell(r).c_str(), r.unit.c_str(), r.note.c_str());
    }
    close_written(f, path);
}

std::string csv_text(const std::string& s) {
    std::string out = "\"";
    for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
    return out + "\"";
}

void write_csv(const Table& table, const std::string& path) {
    std::FILE* f = open_for_writing(path);
    std::fprintf(f, "section,measurement,threads,processes,processes_per_threads,unit,notes\n");
    for (const Row& r : table) {
        const std::string ratio = ratio_cell(r).empty() ? "" : format("%.6g", r.processes / r.threads);
        std::fprintf(f, "%s,%s,%s,%s,%s,%s,%s\n", csv_text(section_titles[static_cast<std::size_t>(r.section)]).c_str(),
                     csv_text(r.what).c_str(), format("%.6g", r.threads).c_str(), format("%.6g", r.processes).c_str(),
                     ratio.c_str(), csv_text(r.unit).c_str(), csv_text(r.note).c_str());
    }
    close_written(f, path);
}

// A temporary file holding `text`; its path.
std::string temp_file(const std::string& text) {
    const char* dir = std::getenv("TMPDIR");
    std::string path = std::string(dir && *dir ? dir : "/tmp") + "/crew-compare-XXXXXX";
    const int fd = ::mkstemp(path.data());
    expect(fd >= 0, "cannot create a temporary file in " + path);
    const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
    ::close(fd);
    expect(ok, "cannot write " + path);
    return path;
}

// gnuplot quotes: inside '...', a quote is written twice.
std::string gnuplot_quoted(const std::string& s) {
    std::string out = "'";
    for (char c : s) out += c == '\'' ? std::string("''") : std::string(1, c);
    return out + "'";
}

// An SVG chart of the speedup rows, drawn by gnuplot if it is installed;
// without it, a message and nothing else (the table is the result).
void write_plot(const JobTimes& speedup, const std::string& path) {
    std::string data = "# workers cpu_threads cpu_processes io_threads io_processes cpu_plain_threads\n";
    for (std::size_t k = 0; k < pool_sizes.size(); ++k) {
        data += std::to_string(pool_sizes[k]);
        for (double x : speedup[k]) data += " " + format("%.4f", x);
        data += "\n";
    }
    const std::string data_path = temp_file(data), d = gnuplot_quoted(data_path);
    std::string script_path =
        temp_file("set terminal svg size 800,500 dynamic background rgb 'white'\nset output " + gnuplot_quoted(path) +
                  "\nset title 'crew-compare: speedup over 1 worker'\nset xlabel 'workers'\nset ylabel 'speedup'\n"
                  "set xtics (1, 2, 4)\nset xrange [0.8:4.2]\nset yrange [0:*]\nset key left top\n"
                  "plot x with lines dashtype 2 lc 'gray' title 'ideal', " +
                  d + " using 1:2 with linespoints lw 2 lc '#1f77b4' title 'CPU-bound, threads', " + d +
                  " using 1:3 with linespoints lw 2 lc '#d62728' title 'CPU-bound, processes', " + d +
                  " using 1:4 with linespoints lw 2 dt 3 lc '#1f77b4' title 'I/O-bound, threads', " + d +
                  " using 1:5 with linespoints lw 2 dt 3 lc '#d62728' title 'I/O-bound, processes', " + d +
                  " using 1:6 with lines dt 4 lc 'black' title 'CPU-bound, plain std::threads'\n");
    char arg0[] = "gnuplot";
    char* argv[] = {arg0, script_path.data(), nullptr};
    pid_t pid = 0;
    const int err = ::posix_spawnp(&pid, "gnuplot", nullptr, nullptr, argv, environ);
    std::optional<int> status;
    if (err == 0) status = wait_child(pid, Clock::now() + std::chrono::seconds(30));
    ::unlink(data_path.c_str());
    ::unlink(script_path.c_str());
    if (err == ENOENT)
        std::fprintf(stderr, "crew-compare: gnuplot is not installed, so no plot was written to %s\n", path.c_str());
    else if (err != 0 || !status || !WIFEXITED(*status) || WEXITSTATUS(*status) != 0)
        std::fprintf(stderr, "crew-compare: gnuplot failed, so no plot was written to %s\n", path.c_str());
    else
        std::fprintf(stderr, "crew-compare: wrote %s\n", path.c_str());
}

// ------------------------------------------------------------------ main

constexpr const char* usage =
    "usage: crew-compare [--quick] [--csv FILE] [--markdown FILE] [--plot FILE]\n"
    "  --quick          fewer and smaller repetitions (a few seconds; for CI)\n"
    "  --csv FILE       also write the table as CSV\n"
    "  --markdown FILE  also write the table as Markdown\n"
    "  --plot FILE      also draw the speedup rows as an SVG chart (needs gnuplot)\n";

// Settings from the command line; nullopt after a usage error.
std::optional<Settings> parse(int argc, char** argv) {
    Settings s;
    bool quick = false;
    std::string csv, markdown, plot;
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg = argv[i];
        std::string* file = arg == "--csv" ? &csv : arg == "--markdown" ? &markdown : arg == "--plot" ? &plot : nullptr;
        if (arg == "--quick") {
            quick = true;
        } else if (file != nullptr && i + 1 < argc) {
            *file = argv[++i];
        } else {
            std::fprintf(stderr, "crew-compare: %s '%s'\n%s", file ? "missing FILE after" : "unknown option", argv[i],
                         usage);
            return std::nullopt;
        }
    }
    if (quick) s = quick_settings();
    s.csv = csv;
    s.markdown = markdown;
    s.plot = plot;
    return s;
}

}  // namespace

int main(int argc, char** argv) {
    crew::Session session(argc, argv);  // first: spawned workers serve from here
    if (argc == 2 && (std::string_view(argv[1]) == "--help" || std::string_view(argv[1]) == "-h")) {
        std::printf("%s", usage);
        return 0;
    }
    const std::optional<Settings> settings = parse(argc, argv);
    if (!settings) return 1;
    const Settings& s = *settings;
    try {
        const std::string header = "crew-compare (" + std::string(s.quick ? "--quick" : "default") +
                                   " run): threads vs processes on this machine\nmachine: " + machine();
        std::fprintf(stderr, "%s\n", header.c_str());
        for (const std::string& path : {s.csv, s.markdown})  // a wrong path fails now, not after the run
            if (!path.empty()) std::fclose(open_for_writing(path));
        Table table;
        measure_memory(s, table);  // first: see measure_memory
        measure_start(s, table);
        measure_round_trip(s, table);
        measure_move(s, table);
        const JobTimes speedup = measure_speedup(s, table);
        measure_crash(s, table);

        table = in_section_order(std::move(table));
        print_text(table, header);
        std::fflush(stdout);
        if (!s.csv.empty()) write_csv(table, s.csv);
        if (!s.markdown.empty()) write_markdown(table, header, s.markdown);
        if (!s.plot.empty()) write_plot(speedup, s.plot);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "crew-compare: error: %s\n", e.what());
        return 2;
    }
    return 0;
}
