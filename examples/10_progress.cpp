// 10_progress: handle results as they finish, with a progress line.
//
// What it teaches: collecting futures in submission order (futures[0].get(),
// then futures[1].get(), ...) waits for the slowest early task while later
// ones sit finished. crew::as_completed(futures) yields each future the moment
// it is ready, so the program can report progress, or act on early results,
// as they come. It does not poll: each future tells it when it completes.
//
// What to look for in the output: all tasks start together, so they finish
// shortest first, not in the order submitted (120 ms, 10 ms, ...), while the
// count climbs 1/12 ... 12/12; the whole run takes about as long as the
// longest task. Every task must be reported exactly once; the order is not
// checked (on a busy machine a short task can start late).
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include <crew/crew.hpp>

namespace {

// A task of a given length; returns its length, so the output can show it.
int work_for(int ms) {
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    return ms;
}

// "[#####.......]  5/12 done"
std::string progress(std::size_t done, std::size_t total) {
    return "[" + std::string(done, '#') + std::string(total - done, '.') + "] " + std::to_string(done) + "/" +
           std::to_string(total) + " done";
}

}  // namespace

int main(int argc, char** argv) {
    crew::Session session(argc, argv);  // first: spawned workers serve from here
    const std::vector<int> lengths_ms = {120, 10, 80, 30, 150, 20, 60, 40, 100, 5, 70, 50};
    // One thread per task, so all start at once: they only wait (see 03_io_bound).
    crew::ThreadExecutor<> ex(lengths_ms.size());

    std::vector<crew::Future<int>> futures;
    for (int ms : lengths_ms) futures.push_back(ex.submit(work_for, ms));

    std::vector<int> seen(lengths_ms.size(), 0);  // how often each length came back
    std::size_t done = 0;
    for (crew::Future<int>& f : crew::as_completed(futures)) {
        const int ms = f.get();  // ready already: get() does not block here
        ++done;
        std::printf("%s  (a %d ms task)\n", progress(done, futures.size()).c_str(), ms);
        for (std::size_t i = 0; i < lengths_ms.size(); ++i)
            if (lengths_ms[i] == ms) ++seen[i];
    }

    for (int count : seen)
        if (count != 1) {
            std::fprintf(stderr, "FAIL: a task was reported %d times instead of once\n", count);
            return 1;
        }
    if (done != lengths_ms.size()) {
        std::fprintf(stderr, "FAIL: %zu of %zu tasks reported\n", done, lengths_ms.size());
        return 1;
    }
    return 0;
}
