// The shared executor suite over crew::MpiExecutor, run by CTest under
// `mpirun -n 3` (rank 0 runs the tests, ranks 1 and 2 serve; see
// tests/mpi/CMakeLists.txt). main() is tests/catch_main.cpp: its
// crew::Session starts MPI, because this file includes <crew/mpi.hpp>.
#include <crew/crew.hpp>
#include <crew/mpi.hpp>

using OverLockFree = crew::MpiExecutor<crew::sync::LockFree>;
using OverMutex = crew::MpiExecutor<crew::sync::Mutex>;

#define CREW_SUITE_TAG "[mpi]"
#define CREW_SUITE_TYPES OverLockFree, OverMutex
#include "executor_suite.hpp"
