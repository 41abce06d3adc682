// The shared executor suite on worker processes over sockets, each sync policy.
#include <crew/crew.hpp>

// Aliases: Catch's macros cannot take a type with a comma in it.
using SocketLockFree = crew::ProcessExecutor<crew::ipc::Socket, crew::sync::LockFree>;
using SocketMutex = crew::ProcessExecutor<crew::ipc::Socket, crew::sync::Mutex>;
using SocketSemaphore = crew::ProcessExecutor<crew::ipc::Socket, crew::sync::Semaphore>;

#define CREW_SUITE_TAG "[process][socket]"
#define CREW_SUITE_TYPES SocketLockFree, SocketMutex, SocketSemaphore
#include "executor_suite.hpp"
