// 11_cluster — the same program on threads, on processes, or on MPI ranks
// spread over several machines: change one type.
//
// Build (needs Open MPI: Debian's openmpi-bin and libopenmpi-dev) and run on
// this machine, MPI traffic kept on loopback, with two ranks that serve:
//
//   export OMPI_MCA_btl=self,vader OMPI_MCA_btl_tcp_if_include=lo OMPI_MCA_oob_tcp_if_include=lo
//   OMPI_MCA_rmaps_base_oversubscribe=1 mpirun -n 3 ./example_11_cluster
//
// (As root in a container, add OMPI_ALLOW_RUN_AS_ROOT=1
// OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1.) On several machines, list them in a
// hostfile and install the same binary at the same path on each:
//
//   mpirun --hostfile hosts -n 9 ./example_11_cluster
//
// Rank 0 runs main(); ranks 1..N-1 never get past crew::Session: they run the
// tasks, each in worker processes of its own, so the task that crashes below
// fails alone and the others complete.
#include <crew/crew.hpp>
#include <crew/mpi.hpp>

#include <csignal>
#include <cstdio>
#include <numeric>
#include <vector>

#include <unistd.h>

// Pick one; nothing else changes.
//   using Executor = crew::ThreadExecutor<>;   // threads: shared memory, shared fate
//   using Executor = crew::ProcessExecutor<>;  // processes on this machine
using Executor = crew::MpiExecutor<>;  // processes on MPI ranks, here or on other machines

// Counts the primes below n: CPU-bound work worth shipping.
long primes_below(long n) {
    long count = 0;
    for (long k = 2; k < n; ++k) {
        bool prime = true;
        for (long d = 2; d * d <= k && prime; ++d) prime = k % d != 0;
        count += prime;
    }
    return count;
}

std::string where() {
    char host[64] = {};
    ::gethostname(host, sizeof host - 1);
    return std::string(host) + " pid " + std::to_string(::getpid());
}

int crash() {
    std::raise(SIGSEGV);  // on threads this would take the whole program down
    return 0;
}

template <crew::executor Ex>
void run(Ex& ex) {
    std::printf("%zu workers\n", ex.size());
    std::vector<long> limits(16);
    std::iota(limits.begin(), limits.end(), 1);
    for (auto& n : limits) n *= 20'000;
    auto counts = ex.map(primes_below, limits, 1);
    std::printf("primes below %ld: %ld\n", limits.back(), counts.back());
    std::printf("a task ran on %s (this is %s)\n", ex.submit(where).get().c_str(), where().c_str());
    if constexpr (!std::is_same_v<Ex, crew::ThreadExecutor<>>) {
        try {
            ex.submit(crash).get();
        } catch (const crew::WorkerDied& e) {
            std::printf("the crashing task failed alone: %s\n", e.what());
        }
        std::printf("and the next task still runs: %ld\n", ex.submit(primes_below, 100L).get());
    }
}

int main(int argc, char** argv) {
    crew::Session session(argc, argv);  // first: MPI ranks 1..N-1 serve from here
    Executor ex;
    run(ex);
}
