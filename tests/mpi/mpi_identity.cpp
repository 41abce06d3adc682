// Built twice, as two different programs (CREW_TEST_VARIANT 1 and 2), and
// launched as one job, `mpirun -n 1 ./a : -n 2 ./b`: crew's start-up check
// must refuse it with a clear message, on every rank, before any task runs.
#include <crew/mpi.hpp>

#include <cstdio>

#ifndef CREW_TEST_VARIANT
#error "build with -DCREW_TEST_VARIANT=1 or 2"
#endif

int variant() { return CREW_TEST_VARIANT; }

int main(int argc, char** argv) {
    crew::Session session(argc, argv);
    crew::MpiExecutor<> ex;
    std::printf("FAIL: mismatched programs ran a task: %d\n", ex.submit(variant).get());
    return 0;
}
