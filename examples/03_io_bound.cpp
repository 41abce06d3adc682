// 03_io_bound: work that waits (for a disk, a network, a sleep) wants more
// workers than cores, and threads are enough for it.
//
// What it teaches: each task here sleeps 10 ms, standing in for a blocking
// read. A sleeping thread uses no CPU, so 4 workers finish 16 such tasks about
// 4 times sooner than 1 worker, even on a machine with fewer than 4 cores.
// Processes would speed it up just as well, but buy nothing here: there is no
// computation to spread over cores, and a thread costs far less to start and
// to hand work to than a process (compare the start-up times printed).
//
// What to look for in the output: 1 worker takes ~160 ms (16 x 10 ms), 4
// workers ~40 ms; starting 4 processes takes much longer than starting 4
// threads. Times are printed, never checked: machines are noisy.
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include <crew/crew.hpp>

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point start) {
    return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// Pretend I/O: block for 10 ms without using the CPU, then return the id.
int fetch(int id) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return id;
}

constexpr int tasks = 16;

// Submit all the fetches, then collect them; true when every id came back.
template <crew::executor Ex>
bool run_all(Ex& ex) {
    std::vector<crew::Future<int>> futures;
    for (int i = 0; i < tasks; ++i) futures.push_back(ex.submit(fetch, i));
    bool ok = true;
    for (int i = 0; i < tasks; ++i) ok = futures[static_cast<std::size_t>(i)].get() == i && ok;
    return ok;
}

// Start an executor of `workers`, then run the job on it; print both times.
template <class Ex>
bool measure(const char* label, std::size_t workers) {
    const auto t0 = Clock::now();
    Ex ex(workers);
    const double start_ms = ms_since(t0);
    const auto t1 = Clock::now();
    const bool ok = run_all(ex);
    std::printf("%-9s | %7zu | %8.2f | %6.1f\n", label, workers, start_ms, ms_since(t1));
    return ok;
}

}  // namespace

int main(int argc, char** argv) {
    crew::Session session(argc, argv);  // first: spawned workers serve from here
    std::printf("%d tasks, each blocked for 10 ms\n\n", tasks);
    std::printf("executor  | workers | start ms | job ms\n");
    bool ok = measure<crew::ThreadExecutor<>>("threads", 1);
    ok = measure<crew::ThreadExecutor<>>("threads", 4) && ok;
    ok = measure<crew::ProcessExecutor<>>("processes", 4) && ok;
    if (!ok) {
        std::fprintf(stderr, "FAIL: a task returned the wrong id\n");
        return 1;
    }
    std::printf("\nthreads suffice: the workers wait, they do not compute, so more of them\n"
                "help regardless of cores, and threads are the cheapest workers to have.\n");
    return 0;
}
