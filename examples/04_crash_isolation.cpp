// 04_crash_isolation: a task that crashes takes down its worker process, and
// nothing else.
//
// What it teaches: in a ProcessExecutor every task runs in a separate process.
// When one segfaults or aborts, only that task's future fails, with
// crew::WorkerDied (which says how the worker died); a new worker takes the
// dead one's place, the other tasks complete, and the executor keeps serving.
// The same crash in a ThreadExecutor would kill this whole program: threads
// share one process, so never try that at home (this example does not).
//
// What to look for in the output: tasks 3 and 6 report the signal that killed
// their worker (SIGSEGV, SIGABRT); every other task prints its square, and a
// task submitted after the crashes still runs.
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string.h>  // strsignal (POSIX)
#include <vector>

#include <sys/resource.h>

#include <crew/crew.hpp>

namespace {

// Runs once in each new worker (Options::initializer): a crashing worker
// would otherwise write a core file, slowly, wherever we run.
void no_core_files() {
    const rlimit none{0, 0};
    ::setrlimit(RLIMIT_CORE, &none);
}

int square_or_crash(int x) {
    if (x == 3) std::raise(SIGSEGV);  // as if it dereferenced a bad pointer
    if (x == 6) std::abort();         // as if an assert() failed
    return x * x;
}

}  // namespace

int main(int argc, char** argv) {
    crew::Session session(argc, argv);  // first: spawned workers serve from here
    crew::ProcessExecutor<> ex(2, crew::Options{.initializer = no_core_files});

    std::vector<crew::Future<int>> futures;
    for (int i = 0; i < 10; ++i) futures.push_back(ex.submit(square_or_crash, i));

    int completed = 0, died = 0;
    bool ok = true;
    for (int i = 0; i < 10; ++i) {
        try {
            const int value = futures[static_cast<std::size_t>(i)].get();
            std::printf("task %d: %d\n", i, value);
            ok = ok && value == i * i;
            ++completed;
        } catch (const crew::WorkerDied& e) {
            // signal() > 0 when a signal killed the worker, else exit_code().
            std::printf("task %d: worker died (%s)\n", i,
                        e.signal() > 0 ? ::strsignal(e.signal()) : "exit");
            const int expected = i == 3 ? SIGSEGV : SIGABRT;
            ok = ok && (i == 3 || i == 6) && e.signal() == expected;
            ++died;
        }
    }

    // The pool replaced its dead workers: it still takes work.
    const int after = ex.submit(square_or_crash, 9).get();
    std::printf("after the crashes: 9 * 9 = %d\n", after);

    std::printf("%d completed, %d died\n", completed, died);
    if (!ok || completed != 8 || died != 2 || after != 81) {
        std::fprintf(stderr, "FAIL: expected exactly tasks 3 and 6 to die, and all others to complete\n");
        return 1;
    }
    return 0;
}
