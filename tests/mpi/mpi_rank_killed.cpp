// A serving rank killed from outside (SIGKILL): Open MPI 4.1 cannot go on
// without it, so the job must end with a clear message within seconds,
// never hang. CTest runs this under `mpirun -n 3` through run_mpi.sh, which
// expects mpirun to fail, its message to name the lost rank, and nothing
// left behind.
#include <crew/mpi.hpp>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <thread>

#include <unistd.h>

namespace {
long rank_pid() { return static_cast<long>(::getppid()); }  // a worker's parent is its rank
int sleep_ms(int ms) {
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    return ms;
}
}  // namespace

int main(int argc, char** argv) {
    crew::Session session(argc, argv);
    crew::MpiExecutor<> ex(1);  // one worker: on rank 1
    const long victim = ex.submit(rank_pid).get();
    auto waiting = ex.submit(sleep_ms, 60'000);
    std::printf("killing MPI rank 1 (pid %ld)\n", victim);
    std::fflush(stdout);
    ::kill(static_cast<pid_t>(victim), SIGKILL);
    try {
        waiting.get();
        std::printf("FAIL: the task on the killed rank returned\n");
    } catch (const std::exception& e) {
        std::printf("the task failed: %s\n", e.what());
    }
    return 0;  // mpirun must have reported the lost rank regardless
}
