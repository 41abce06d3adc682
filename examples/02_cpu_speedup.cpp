// 02_cpu_speedup: CPU-bound work gets faster with more workers, on threads
// and on processes alike.
//
// What it teaches: a job that only computes (here: counting primes) is split
// into independent tasks; with 2 workers on 2 cores it should take about half
// the time of 1 worker. Threads and processes both get the speedup: C++ has
// no global interpreter lock, so the choice between them is about isolation
// and sharing, not about parallelism.
//
// What to look for in the output: the "speedup" column, near 2.0 on an idle
// machine with at least 2 cores, lower on a busy one. The speed is printed,
// never checked: only the answer is (both executors must count the same
// primes).
#include <chrono>
#include <cstdio>
#include <vector>

#include <crew/crew.hpp>

namespace {

// Primes in [lo, hi) by trial division: slow on purpose, pure computation.
int count_primes(int lo, int hi) {
    int count = 0;
    for (int n = lo < 2 ? 2 : lo; n < hi; ++n) {
        bool prime = true;
        for (int d = 2; d * d <= n; ++d)
            if (n % d == 0) {
                prime = false;
                break;
            }
        count += prime ? 1 : 0;
    }
    return count;
}

constexpr int limit = 1'000'000;  // primes below this: about 0.1-0.2 s on one core
constexpr int pieces = 16;      // more tasks than workers, so the load evens out

// The job, written once for any executor: split, submit, add up.
template <crew::executor Ex>
int job(Ex& ex) {
    std::vector<crew::Future<int>> parts;
    const int step = limit / pieces;
    for (int i = 0; i < pieces; ++i) parts.push_back(ex.submit(count_primes, step * i, step * (i + 1)));
    int total = 0;
    for (auto& p : parts) total += p.get();
    return total;
}

// Time the job on a fresh executor of `workers` workers. Starting the workers
// is not counted: a real program starts its pool once and reuses it.
template <class Ex>
double seconds(std::size_t workers, int& answer) {
    Ex ex(workers);
    const auto start = std::chrono::steady_clock::now();
    answer = job(ex);
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

template <class Ex>
bool compare(const char* label, int expected) {
    int one_answer = 0, two_answer = 0;
    const double one = seconds<Ex>(1, one_answer);
    const double two = seconds<Ex>(2, two_answer);
    std::printf("%-9s | %8.1f | %8.1f | %5.2fx\n", label, one * 1e3, two * 1e3, one / two);
    return one_answer == expected && two_answer == expected;
}

}  // namespace

int main(int argc, char** argv) {
    crew::Session session(argc, argv);  // first: spawned workers serve from here
    const int expected = count_primes(0, limit);  // the answer, computed here serially
    std::printf("counting primes below %d in %d tasks (%d found)\n\n", limit, pieces, expected);
    std::printf("executor  | 1 worker | 2 workers | speedup\n");
    std::printf("          |   ms     |   ms      |\n");
    bool ok = compare<crew::ThreadExecutor<>>("threads", expected);
    ok = compare<crew::ProcessExecutor<>>("processes", expected) && ok;
    if (!ok) {
        std::fprintf(stderr, "FAIL: an executor counted a different number of primes\n");
        return 1;
    }
    return 0;
}
