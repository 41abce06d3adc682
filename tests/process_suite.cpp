// The shared executor suite on worker processes over one channel, each sync
// policy. Built once per channel (tests/CMakeLists.txt), with
// CREW_SUITE_CHANNEL naming it (SharedMemory, Pipe, Socket, MessageQueue).
#include <crew/crew.hpp>

#ifndef CREW_SUITE_CHANNEL
#error "build this file with -DCREW_SUITE_CHANNEL=<channel>, see tests/CMakeLists.txt"
#endif

// Aliases: Catch's macros cannot take a type with a comma in it.
using OverLockFree = crew::ProcessExecutor<crew::ipc::CREW_SUITE_CHANNEL, crew::sync::LockFree>;
using OverMutex = crew::ProcessExecutor<crew::ipc::CREW_SUITE_CHANNEL, crew::sync::Mutex>;
using OverSemaphore = crew::ProcessExecutor<crew::ipc::CREW_SUITE_CHANNEL, crew::sync::Semaphore>;

#define CREW_SUITE_TAG "[process]"
#define CREW_SUITE_TYPES OverLockFree, OverMutex, OverSemaphore
#include "executor_suite.hpp"
