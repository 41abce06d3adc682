// crew/crew.hpp — everything public in crew, in one include.
#pragma once

#include <crew/errors.hpp>
#include <crew/executor.hpp>
#include <crew/future.hpp>
#include <crew/lock_free_queue.hpp>
#include <crew/options.hpp>
#include <crew/sync/lock_free.hpp>
#include <crew/sync/mutex.hpp>
#include <crew/sync/policy.hpp>
#include <crew/sync/semaphore.hpp>
#include <crew/thread_executor.hpp>
#include <crew/when.hpp>
