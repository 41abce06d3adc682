// The shared executor suite on worker processes over pipes, each sync policy.
#include <crew/crew.hpp>

// Aliases: Catch's macros cannot take a type with a comma in it.
using PipeLockFree = crew::ProcessExecutor<crew::ipc::Pipe, crew::sync::LockFree>;
using PipeMutex = crew::ProcessExecutor<crew::ipc::Pipe, crew::sync::Mutex>;
using PipeSemaphore = crew::ProcessExecutor<crew::ipc::Pipe, crew::sync::Semaphore>;

#define CREW_SUITE_TAG "[process][pipe]"
#define CREW_SUITE_TYPES PipeLockFree, PipeMutex, PipeSemaphore
#include "executor_suite.hpp"
