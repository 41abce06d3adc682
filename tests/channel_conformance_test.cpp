// The channel conformance suite (tests/channel_suite.hpp) over every channel
// and every Sync form of SharedMemory, in one program.
#include <crew/ipc/message_queue.hpp>
#include <crew/ipc/pipe.hpp>
#include <crew/ipc/shared_memory.hpp>
#include <crew/ipc/socket.hpp>
#include <crew/sync/mutex.hpp>
#include <crew/sync/semaphore.hpp>

// Aliases: Catch's macros cannot take a type with a comma in it, and the
// names read in the test list.
using ShmLockFree = crew::ipc::SharedMemory;  // BasicSharedMemory<sync::LockFree>
using ShmMutex = crew::ipc::BasicSharedMemory<crew::sync::Mutex>;
using ShmSemaphore = crew::ipc::BasicSharedMemory<crew::sync::Semaphore>;
using crew::ipc::MessageQueue;
using crew::ipc::Pipe;
using crew::ipc::Socket;

#define CREW_CHANNEL_SUITE_TAG "[ipc][channel]"
#define CREW_CHANNEL_SUITE_TYPES ShmLockFree, ShmMutex, ShmSemaphore, MessageQueue, Pipe, Socket
#include "channel_suite.hpp"
