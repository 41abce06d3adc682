// 09_map_chunks: ex.map(f, inputs, chunk) and why the chunk size matters.
//
// What it teaches: map() applies f to every input on the workers and returns
// the results in input order. It sends the inputs in chunks, one task per
// chunk. A task has a fixed cost (a queue hand-off; for processes also
// encoding the inputs and results and moving them through a channel), so one
// input per task spends much of the time on overhead when f is quick; very
// large chunks leave workers idle at the end (one slow chunk, nothing left to
// share). chunk = 0 lets crew choose: about four chunks per worker.
//
// What to look for in the output: chunk 1 is the slowest, most of all on
// processes; from a few dozen inputs per chunk on, the times level off. The
// results are checked against a plain loop; the times are only printed.
#include <chrono>
#include <cstdio>
#include <numeric>
#include <vector>

#include <crew/crew.hpp>

namespace {

// A small job per input (about a microsecond, as small as a task's overhead):
// the steps for n .. n+3 to reach 1 in the Collatz sequence.
int collatz_steps(int n) {
    int total = 0;
    for (long long x0 = n; x0 < n + 4; ++x0)
        for (long long x = x0; x > 1; x = (x % 2 == 0) ? x / 2 : 3 * x + 1) ++total;
    return total;
}

template <class Ex>
bool try_chunks(const char* label, const std::vector<int>& inputs, const std::vector<int>& expected) {
    Ex ex(2);
    bool ok = true;
    std::printf("%-9s", label);
    for (std::size_t chunk : {1, 16, 256, 0}) {
        const auto start = std::chrono::steady_clock::now();
        const std::vector<int> results = ex.map(collatz_steps, inputs, chunk);
        const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
        std::printf(" | %8.1f", ms);
        ok = ok && results == expected;
    }
    std::printf("\n");
    return ok;
}

}  // namespace

int main(int argc, char** argv) {
    crew::Session session(argc, argv);  // first: spawned workers serve from here
    std::vector<int> inputs(20000);
    std::iota(inputs.begin(), inputs.end(), 1);
    std::vector<int> expected;  // the answer from a plain loop, to check map() against
    for (int n : inputs) expected.push_back(collatz_steps(n));

    std::printf("%zu inputs on 2 workers, time in ms per chunk size\n\n", inputs.size());
    std::printf("executor  | chunk 1  | chunk 16 | chunk 256| auto (0)\n");
    bool ok = try_chunks<crew::ThreadExecutor<>>("threads", inputs, expected);
    ok = try_chunks<crew::ProcessExecutor<>>("processes", inputs, expected) && ok;
    if (!ok) {
        std::fprintf(stderr, "FAIL: map() returned results that differ from the plain loop\n");
        return 1;
    }
    return 0;
}
