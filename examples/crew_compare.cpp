// crew-compare: the same job on threads under each sync policy, measured on
// this machine. (Issue #5 grows it into the full threads-vs-processes table.)
//
//   crew-compare [--quick]
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string_view>
#include <vector>

#include <crew/crew.hpp>

namespace {

// A CPU-bound task: count primes below n by trial division.
int count_primes(int n) {
    int count = 0;
    for (int i = 2; i < n; ++i) {
        bool prime = true;
        for (int d = 2; d * d <= i; ++d)
            if (i % d == 0) {
                prime = false;
                break;
            }
        count += prime;
    }
    return count;
}

int noop(int x) { return x; }

// The job, written once against the crew::executor concept.
template <crew::executor Ex>
long long job(Ex& ex, int tasks, int size) {
    std::vector<int> inputs(static_cast<std::size_t>(tasks), size);
    long long total = 0;
    for (int r : ex.map(count_primes, inputs)) total += r;
    return total;
}

template <class Sync>
void measure(std::string_view policy, int tasks, int size, int round_trips) {
    using clock = std::chrono::steady_clock;
    crew::ThreadExecutor<Sync> ex;
    auto t0 = clock::now();
    long long result = job(ex, tasks, size);
    auto t1 = clock::now();
    for (int i = 0; i < round_trips; ++i) ex.submit(noop, i).get();
    auto t2 = clock::now();
    double job_ms = std::chrono::duration<double, std::milli>(t1 - t0).count();
    double rt_us = std::chrono::duration<double, std::micro>(t2 - t1).count() / round_trips;
    std::printf("| threads | %-9.*s | %7zu | %10.1f | %12.2f | %lld\n", static_cast<int>(policy.size()), policy.data(),
                ex.size(), job_ms, rt_us, result);
}

}  // namespace

int main(int argc, char** argv) {
    bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
    int tasks = quick ? 16 : 64, size = quick ? 20000 : 60000, round_trips = quick ? 2000 : 20000;
    std::printf("crew-compare: %d CPU-bound tasks (primes below %d), then %d serial round trips\n\n", tasks, size,
                round_trips);
    std::printf("| workers | sync      | threads | job ms     | round trip us | result\n");
    std::printf("|---------|-----------|---------|------------|---------------|-------\n");
    measure<crew::sync::LockFree>("lock-free", tasks, size, round_trips);
    measure<crew::sync::Mutex>("mutex", tasks, size, round_trips);
    measure<crew::sync::Semaphore>("semaphore", tasks, size, round_trips);
    return 0;
}
