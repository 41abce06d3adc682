// 07_semaphore_pool: a counting semaphore limits how many processes use a
// pool of 3 (pretend) database connections at once.
//
// What it teaches: a semaphore holds N units; acquire() takes one, sleeping
// while none is left, release() gives it back. With N = 3, at most 3 users
// hold a connection at any moment, however many want one. crew::ipc::Semaphore
// works between processes: it lives in shared memory (a crew::ipc::
// SharedRegion::anonymous, which forked children share with their parent),
// next to two counters that measure how many users are inside at once. The
// same semaphore works between threads of one process, too.
//
// What to look for in the output: 8 processes take turns; "most at once" is
// at most 3 (usually exactly 3). A user that waits more than 5 s for a
// connection gives up with an error instead of hanging.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

#include <crew/crew.hpp>

namespace {

constexpr int connections = 3;
constexpr int users = 8;
constexpr int queries_per_user = 3;

// Everything the processes share: a semaphore and plain atomics, no pointers
// (each process may map the region at a different address).
struct Pool {
    crew::ipc::Semaphore free_connections{connections};
    std::atomic<int> in_use{0};
    std::atomic<int> most_at_once{0};
};
// Only a lock-free atomic works between processes: it is one word of memory,
// with no lock hidden in the process that made it.
static_assert(std::atomic<int>::is_always_lock_free);

// One user process: run a few queries, each on a borrowed connection.
int user(Pool& pool) {
    for (int q = 0; q < queries_per_user; ++q) {
        if (!pool.free_connections.try_acquire_for(std::chrono::seconds(5))) return 1;  // never hang
        const int now = pool.in_use.fetch_add(1) + 1;
        int most = pool.most_at_once.load();
        while (now > most && !pool.most_at_once.compare_exchange_weak(most, now)) {
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));  // "the query"
        pool.in_use.fetch_sub(1);  // leave before giving the connection back
        pool.free_connections.release();
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    crew::Session session(argc, argv);  // first: spawned workers serve from here
    auto region = crew::ipc::SharedRegion::anonymous(4096);
    Pool& pool = region.construct<Pool>();

    std::fflush(stdout);  // else children inherit, and print again, buffered output
    std::vector<pid_t> children;
    for (int i = 0; i < users; ++i) {
        const pid_t pid = ::fork();
        if (pid == 0) ::_exit(user(pool));  // the child: use the pool, then leave
        if (pid > 0) children.push_back(pid);
    }

    int failed = users - static_cast<int>(children.size());  // forks that did not happen
    for (pid_t pid : children) {
        int status = 0;
        ::waitpid(pid, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) ++failed;
    }

    const int most = pool.most_at_once.load();
    std::printf("%d processes, %d queries each, %d connections: most at once %d, free at the end %u\n", users,
                queries_per_user, connections, most, pool.free_connections.value());
    if (failed != 0 || most > connections || pool.free_connections.value() != connections) {
        std::fprintf(stderr, "FAIL: %d users failed, or the semaphore let more than %d in\n", failed, connections);
        return 1;
    }
    return 0;
}
