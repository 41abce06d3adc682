// crew/crew.hpp — everything public in crew, in one include.
#pragma once

#include <crew/codec.hpp>
#include <crew/errors.hpp>
#include <crew/executor.hpp>
#include <crew/future.hpp>
#include <crew/initializer.hpp>
#include <crew/lock_free_queue.hpp>
#include <crew/ipc/channel.hpp>
#include <crew/ipc/message_queue.hpp>
#include <crew/ipc/mutex.hpp>
#include <crew/ipc/pipe.hpp>
#include <crew/ipc/semaphore.hpp>
#include <crew/ipc/shared_memory.hpp>
#include <crew/ipc/shared_region.hpp>
#include <crew/ipc/socket.hpp>
#include <crew/options.hpp>
#include <crew/process_executor.hpp>
#include <crew/remote_exception.hpp>
#include <crew/session.hpp>
#include <crew/shared_array.hpp>
#include <crew/sync/lock_free.hpp>
#include <crew/sync/mutex.hpp>
#include <crew/sync/policy.hpp>
#include <crew/sync/semaphore.hpp>
#include <crew/thread_executor.hpp>
#include <crew/when.hpp>
