// crew/ipc/mutex.hpp — a mutex and a condition variable that work between
// processes and survive the death of the process holding the lock.
//
// What: crew::ipc::Mutex is a robust, process-shared mutex; crew::ipc::
// ConditionVariable waits on it. Both live *inside* shared memory (construct
// them in a crew::ipc::SharedRegion, or any MAP_SHARED mapping) and hold no
// pointers, so every process that maps the memory, at any address, uses the
// same object.
//
// When: to guard state in shared memory between processes, e.g. a queue that a
// parent and its worker processes share. Between threads of one process,
// std::mutex is cheaper; use this one only when processes share the state or
// when a thread may die holding the lock.
//
// Cost: lock()/unlock() without contention are one atomic compare-exchange each
// in user space, plus a few stores to the calling thread's robust list (the
// kernel walks that list when the thread dies): about twice std::mutex per
// lock+unlock pair (figures in docs/benchmarks.md).
// Contended, the waiter sleeps in the kernel (futex); it never spins.
//
// Underneath: pthread_mutex_t with PTHREAD_PROCESS_SHARED, PTHREAD_MUTEX_ROBUST
// and PTHREAD_MUTEX_ERRORCHECK (Boost 1.74's interprocess_mutex is not robust).
// ERRORCHECK costs nothing extra on a robust mutex (glibc already records the
// owner's thread id) and turns a self-deadlock into an exception.
//
// States (the "owner" is a thread; when its process dies, so does the thread):
//
//   state              | event                                       | next state
//   -------------------+---------------------------------------------+-------------------------
//   free               | lock() / try_lock*()  -> acquired           | held
//   held               | owner calls unlock()                        | free
//   held               | owner dies (exit, signal, _exit)            | abandoned
//   abandoned          | lock() / try_lock*()  -> owner_died         | held, inconsistent;
//                      |                                             |   previous_owner_died() == true
//   held, inconsistent | repair the state, mark_consistent(),        | held, then free; the next
//                      |   unlock()                                  |   lock() returns acquired
//   held, inconsistent | unlock() without mark_consistent()          | unrecoverable
//   held, inconsistent | owner dies again                            | abandoned (the next locker
//                      |                                             |   is told owner_died again)
//   unrecoverable      | lock() / try_lock*()                        | throws MutexUnrecoverable,
//                      |                                             |   forever
//
// `owner_died` counts as acquired: the caller holds the mutex and must unlock
// it. std::lock_guard / std::unique_lock / std::scoped_lock work (the type meets
// the Lockable and TimedLockable requirements) but drop lock()'s result; ask
// previous_owner_died() after taking the lock when a dead owner matters.
//
// Rules: construct the object once (one process), destroy it at most once,
// after no process uses it any more. Do not unmap the memory while holding the
// mutex: the kernel finds an abandoned mutex through the dying thread's robust
// list, which points into the mapping.
#pragma once

#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <condition_variable>  // std::cv_status
#include <cstdint>
#include <cstring>
#include <ctime>
#include <mutex>  // std::unique_lock
#include <optional>
#include <string>
#include <type_traits>

#include <linux/futex.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <crew/detail/deadline.hpp>
#include <crew/detail/futex.hpp>
#include <crew/detail/sanitizers.hpp>
#include <crew/errors.hpp>

namespace crew::detail {
class MonitorSignal;
}  // namespace crew::detail

namespace crew::ipc {

/// The result of acquiring a crew::ipc::Mutex. Both values mean the caller
/// now holds the mutex.
enum class LockResult {
    acquired,    ///< the mutex was taken normally
    owner_died,  ///< taken, but the previous owner died holding it: repair the
                 ///< state, then mark_consistent() before unlock()
};

/// The mutex was unlocked after an owner_died acquisition without
/// mark_consistent(); it can never be locked again.
class MutexUnrecoverable : public Error {
public:
    MutexUnrecoverable()
        : Error("crew::ipc::Mutex is unrecoverable: a previous owner died holding it, and the "
                "next owner unlocked it without calling mark_consistent(); destroy the mutex "
                "and the state it guarded, and create new ones (next time, repair the state "
                "and call mark_consistent() before unlock() after lock() returns owner_died)") {}
    using Error::Error;
};

/// Robust, process-shared mutex; lives inside shared memory. See the state
/// table at the top of this header.
class Mutex {
public:
    /// Initialises the mutex, unlocked. Throws crew::Error when the system
    /// refuses (out of resources).
    Mutex();
    /// Destroys the mutex. Call it once, after no process uses it.
    ~Mutex();

    Mutex(const Mutex&) = delete;
    Mutex& operator=(const Mutex&) = delete;
    Mutex(Mutex&&) = delete;
    Mutex& operator=(Mutex&&) = delete;

    /// Blocks until the caller holds the mutex. Returns owner_died when the
    /// previous owner died holding it (the caller holds it anyway). Throws
    /// MutexUnrecoverable, or crew::Error when this thread already holds it.
    LockResult lock();

    /// Takes the mutex if it is free; false when someone else holds it.
    /// An owner_died acquisition returns true: ask previous_owner_died().
    /// Throws like lock().
    [[nodiscard]] bool try_lock();

    /// Like lock(), giving up after `timeout` (steady clock); false on timeout.
    template <class Rep, class Period>
    [[nodiscard]] bool try_lock_for(const std::chrono::duration<Rep, Period>& timeout);

    /// Like lock(), giving up at `deadline`; false on timeout.
    template <class Clock, class Duration>
    [[nodiscard]] bool try_lock_until(const std::chrono::time_point<Clock, Duration>& deadline);

    /// Releases the mutex. Unlocking an owner_died acquisition without
    /// mark_consistent() makes the mutex unrecoverable (that is POSIX's way to
    /// say "the guarded state is beyond repair"). Throws crew::Error when the
    /// caller does not hold the mutex.
    void unlock();

    /// After lock() returned owner_died and the caller repaired the guarded
    /// state: the mutex is healthy again. Throws crew::Error when the caller
    /// does not hold the mutex after an owner_died acquisition.
    void mark_consistent();

    /// True between an owner_died acquisition and mark_consistent()/unlock().
    /// Meaningful to the holder.
    [[nodiscard]] bool previous_owner_died() const noexcept;

    /// The underlying pthread mutex (process-shared, robust, error-checking).
    [[nodiscard]] pthread_mutex_t* native_handle() noexcept { return &mutex_; }

private:
    friend class ConditionVariable;

    bool timed_lock(const std::chrono::steady_clock::time_point& deadline);
    LockResult on_acquired(int rc, const char* operation);
    void throw_if_unrecoverable() const;

    pthread_mutex_t mutex_;
    // Written only by the holder; atomic because any process may read it.
    std::atomic<bool> owner_died_{false};
    // Set once the mutex became unrecoverable. Lets every process throw
    // without calling into glibc, whose trylock mishandles this state (see
    // detail::mutex_release_leaked_lock).
    std::atomic<bool> unrecoverable_{false};
};

/// Condition variable for crew::ipc::Mutex, between processes; lives inside
/// shared memory next to the mutex. Same contract as std::condition_variable:
/// waits unlock the mutex, sleep, and lock it again before returning;
/// spurious wake-ups happen, so wait with a predicate.
///
/// When the mutex's owner died while a waiter slept, the wait returns holding
/// the mutex with lock.mutex()->previous_owner_died() == true; check it after
/// waiting when a dead owner matters. An unrecoverable mutex makes the wait
/// throw MutexUnrecoverable, with `lock` no longer owning the mutex. Waiting
/// unlocks the mutex, so after an owner_died acquisition call
/// mark_consistent() before waiting, or the mutex becomes unrecoverable.
///
/// Why not pthread_cond_t: glibc's process-shared condvar keeps per-waiter
/// bookkeeping in the shared object. A process killed while waiting (a worker
/// stopped by SIGKILL, say) never removes itself, so a later notify_one() can
/// go to the dead waiter's group and wake nobody, and pthread_cond_destroy()
/// blocks forever waiting for it. This one is a 32-bit sequence number and a
/// futex (the classic futex condvar, as in Rust's std): a waiter keeps no
/// state in shared memory, so dying while waiting harms no one. notify_all()
/// wakes every waiter (no requeue onto the mutex); a waiter that misses
/// exactly 2^32 notifications between unlocking and sleeping could sleep on,
/// which no real program does.
///
/// Cost: notify_*() is one atomic add, plus one futex syscall (the kernel
/// returns at once when nobody sleeps). wait() is an unlock, a futex sleep and
/// a lock.
class ConditionVariable {
public:
    ConditionVariable() noexcept = default;
    ~ConditionVariable() = default;

    ConditionVariable(const ConditionVariable&) = delete;
    ConditionVariable& operator=(const ConditionVariable&) = delete;
    ConditionVariable(ConditionVariable&&) = delete;
    ConditionVariable& operator=(ConditionVariable&&) = delete;

    /// Wakes one waiter (any process).
    void notify_one() noexcept;
    /// Wakes every waiter (any process).
    void notify_all() noexcept;

    /// Unlocks, sleeps until notified (or spuriously), locks again.
    void wait(std::unique_lock<Mutex>& lock);

    /// Waits until pred() is true; pred() is evaluated holding the mutex.
    template <class Predicate>
    void wait(std::unique_lock<Mutex>& lock, Predicate pred);

    /// Waits until notified or `deadline`; timeout when Clock::now() >= deadline.
    template <class Clock, class Duration>
    std::cv_status wait_until(std::unique_lock<Mutex>& lock,
                              const std::chrono::time_point<Clock, Duration>& deadline);

    /// Waits until pred() or `deadline`; returns pred().
    template <class Clock, class Duration, class Predicate>
    bool wait_until(std::unique_lock<Mutex>& lock, const std::chrono::time_point<Clock, Duration>& deadline,
                    Predicate pred);

    /// Waits until notified or `timeout` has passed (steady clock).
    template <class Rep, class Period>
    std::cv_status wait_for(std::unique_lock<Mutex>& lock, const std::chrono::duration<Rep, Period>& timeout);

    /// Waits until pred() or `timeout` has passed (steady clock); returns pred().
    template <class Rep, class Period, class Predicate>
    bool wait_for(std::unique_lock<Mutex>& lock, const std::chrono::duration<Rep, Period>& timeout,
                  Predicate pred);

private:
    friend class crew::detail::MonitorSignal;

    void wait_steady(std::unique_lock<Mutex>& lock, const std::chrono::steady_clock::time_point* deadline);
    // wait_steady(), but taking the mutex back gives up at `deadline` too:
    // false then, with `lock` released (a peer stopped holding the mutex
    // must not hold a timed wait past its deadline).
    bool wait_relock(std::unique_lock<Mutex>& lock, const std::chrono::steady_clock::time_point* deadline);
    // Both: unlock, sleep until notified or `deadline`, lock again (by the
    // deadline too when `relock_by_deadline`); false when not locked again.
    bool sleep_then_lock(std::unique_lock<Mutex>& lock, const std::chrono::steady_clock::time_point* deadline,
                         bool relock_by_deadline);

    std::atomic<std::uint32_t> sequence_{0};
};

}  // namespace crew::ipc

namespace crew::detail {

[[noreturn]] inline void mutex_fail(const char* operation, int rc) {
    if (rc == EDEADLK)
        throw Error(std::string("crew::ipc::Mutex::") + operation +
                    ": this thread already holds the mutex, which is not recursive; unlock it first");
    if (rc == EPERM)
        throw Error(std::string("crew::ipc::Mutex::") + operation +
                    ": the calling thread does not hold the mutex; only the thread that locked it "
                    "may unlock it or mark it consistent");
    if (rc == EINVAL && std::strcmp(operation, "mark_consistent") == 0)
        throw Error(
            "crew::ipc::Mutex::mark_consistent: the mutex is not in the owner-died state; call it "
            "only while holding the mutex after lock() returned owner_died");
    throw Error(std::string("crew::ipc::Mutex::") + operation + " failed: " + std::strerror(rc));
}

// Under ThreadSanitizer use pthread_mutex_timedlock: GCC 12's and LLVM 14's
// TSan do not intercept pthread_mutex_clocklock and would miss the acquisition.
inline constexpr bool mutex_use_clocklock = !under_tsan;

/// One timed lock attempt with an absolute steady deadline.
inline int mutex_lock_until(pthread_mutex_t* m, const std::chrono::steady_clock::time_point& deadline) noexcept {
    using namespace std::chrono;
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 30))
    if constexpr (mutex_use_clocklock) {
        // steady_clock is CLOCK_MONOTONIC on Linux: immune to wall-clock jumps.
        const timespec ts = to_timespec(deadline);
        return ::pthread_mutex_clocklock(m, CLOCK_MONOTONIC, &ts);
    }
#endif
    // Fallback: translate to CLOCK_REALTIME; re-check the steady clock after a
    // timeout, as a wall-clock jump forward could end the wait early.
    for (;;) {
        const auto remaining = deadline - steady_clock::now();
        const auto real = system_clock::now().time_since_epoch() +
                          duration_cast<nanoseconds>(remaining > remaining.zero() ? remaining : remaining.zero());
        const timespec ts = to_timespec(duration_cast<nanoseconds>(real));
        const int rc = ::pthread_mutex_timedlock(m, &ts);
        if (rc != ETIMEDOUT || steady_clock::now() >= deadline) return rc;
    }
}

/// Works around a glibc bug (present in 2.36 and later sources):
/// pthread_mutex_trylock() on an unrecoverable robust mutex takes the lock
/// word, sees the "not recoverable" mark, and returns ENOTRECOVERABLE without
/// giving the word back (it tests `oldval == id` where oldval is the 0 it
/// replaced). Every later lock() in any process would then block forever.
/// After a trylock that returned ENOTRECOVERABLE, release the word if this
/// thread holds it, as glibc meant to, waking every sleeper so each sees the
/// mark for itself.
inline void mutex_release_leaked_lock(pthread_mutex_t* m) noexcept {
#if defined(__GLIBC__)
    std::atomic_ref<int> word(m->__data.__lock);
    const auto tid = static_cast<unsigned>(::syscall(SYS_gettid));
    if ((static_cast<unsigned>(word.load(std::memory_order_relaxed)) & FUTEX_TID_MASK) != tid) return;
    const auto old = static_cast<unsigned>(word.exchange(0, std::memory_order_release));
    if ((old & FUTEX_WAITERS) != 0)
        ::syscall(SYS_futex, &m->__data.__lock, FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
#else
    (void)m;
#endif
}

}  // namespace crew::detail

namespace crew::ipc {

inline Mutex::Mutex() {
    pthread_mutexattr_t attr;
    int rc = ::pthread_mutexattr_init(&attr);
    if (rc != 0) detail::mutex_fail("Mutex() (pthread_mutexattr_init)", rc);
    // Each of these can only fail on a platform without robust or
    // process-shared mutexes; report the first failure.
    rc = ::pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    if (rc == 0) rc = ::pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    if (rc == 0) rc = ::pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ERRORCHECK);
    if (rc == 0) rc = ::pthread_mutex_init(&mutex_, &attr);
    ::pthread_mutexattr_destroy(&attr);
    if (rc != 0) detail::mutex_fail("Mutex() (pthread_mutex_init)", rc);
}

inline Mutex::~Mutex() {
    // EBUSY (still locked, e.g. by a dead owner) leaves nothing to free on
    // Linux; nothing useful to do about it in a destructor.
    ::pthread_mutex_destroy(&mutex_);
}

inline LockResult Mutex::on_acquired(int rc, const char* operation) {
    if (rc == 0) {
        owner_died_.store(false, std::memory_order_relaxed);
        return LockResult::acquired;
    }
    if (rc == EOWNERDEAD) {
        owner_died_.store(true, std::memory_order_relaxed);
        return LockResult::owner_died;
    }
    if (rc == ENOTRECOVERABLE) {
        unrecoverable_.store(true, std::memory_order_relaxed);
        throw MutexUnrecoverable();
    }
    detail::mutex_fail(operation, rc);
}

inline void Mutex::throw_if_unrecoverable() const {
    if (unrecoverable_.load(std::memory_order_relaxed)) throw MutexUnrecoverable();
}

inline LockResult Mutex::lock() {
    throw_if_unrecoverable();
    return on_acquired(::pthread_mutex_lock(&mutex_), "lock");
}

inline bool Mutex::try_lock() {
    throw_if_unrecoverable();
    const int rc = ::pthread_mutex_trylock(&mutex_);
    if (rc == EBUSY) return false;
    // Only reached when another thread made it unrecoverable since our check.
    if (rc == ENOTRECOVERABLE) detail::mutex_release_leaked_lock(&mutex_);
    on_acquired(rc, "try_lock");
    return true;
}

inline bool Mutex::timed_lock(const std::chrono::steady_clock::time_point& deadline) {
    // A free (or abandoned) mutex is taken without reading any clock. This
    // also keeps ThreadSanitizer right: its timedlock interceptor ignores
    // EOWNERDEAD, its trylock interceptor does not.
    if (try_lock()) return true;
    const int rc = detail::mutex_lock_until(&mutex_, deadline);
    if (rc == ETIMEDOUT) return false;
    on_acquired(rc, "try_lock_until");
    return true;
}

template <class Rep, class Period>
bool Mutex::try_lock_for(const std::chrono::duration<Rep, Period>& timeout) {
    const auto deadline = detail::steady_deadline_after(timeout);
    if (!deadline) {
        lock();
        return true;
    }
    return timed_lock(*deadline);
}

template <class Clock, class Duration>
bool Mutex::try_lock_until(const std::chrono::time_point<Clock, Duration>& deadline) {
    // For a clock other than steady_clock, wait on the steady clock and
    // re-check the caller's clock, as std::timed_mutex does.
    for (;;) {
        const auto steady = detail::steady_deadline(deadline);
        if (!steady) {
            lock();
            return true;
        }
        if (timed_lock(*steady)) return true;
        if (Clock::now() >= deadline) return false;
    }
}

inline void Mutex::unlock() {
    // Clear owner_died_ before releasing, as the next owner may set it.
    const bool inconsistent = owner_died_.exchange(false, std::memory_order_relaxed);
    const int rc = ::pthread_mutex_unlock(&mutex_);
    if (rc != 0) {
        if (inconsistent) owner_died_.store(true, std::memory_order_relaxed);  // not ours to clear
        detail::mutex_fail("unlock", rc);
    }
    // Unlocked without mark_consistent(): glibc has made it unrecoverable;
    // record that for every process.
    if (inconsistent) unrecoverable_.store(true, std::memory_order_relaxed);
}

inline void Mutex::mark_consistent() {
    const int rc = ::pthread_mutex_consistent(&mutex_);
    if (rc != 0) detail::mutex_fail("mark_consistent", rc);
    owner_died_.store(false, std::memory_order_relaxed);
}

inline bool Mutex::previous_owner_died() const noexcept { return owner_died_.load(std::memory_order_relaxed); }

inline void ConditionVariable::notify_one() noexcept {
    sequence_.fetch_add(1, std::memory_order_acq_rel);
    detail::futex_wake(sequence_, 1, /*shared=*/true);
}

inline void ConditionVariable::notify_all() noexcept {
    sequence_.fetch_add(1, std::memory_order_acq_rel);
    detail::futex_wake(sequence_, INT_MAX, /*shared=*/true);
}

inline void ConditionVariable::wait_steady(std::unique_lock<Mutex>& lock,
                                           const std::chrono::steady_clock::time_point* deadline) {
    (void)sleep_then_lock(lock, deadline, /*relock_by_deadline=*/false);
}

inline bool ConditionVariable::sleep_then_lock(std::unique_lock<Mutex>& lock,
                                               const std::chrono::steady_clock::time_point* deadline,
                                               bool relock_by_deadline) {
    if (!lock.owns_lock())
        throw Error("crew::ipc::ConditionVariable::wait: the unique_lock does not hold its mutex; lock it first");
    Mutex& mutex = *lock.mutex();
    // Read the sequence while holding the mutex: a notify that follows our
    // unlock changes it, and the futex then refuses to sleep (no lost wake-up).
    const std::uint32_t seen = sequence_.load(std::memory_order_acquire);
    mutex.unlock();
    detail::futex_wait(sequence_, seen, /*shared=*/true, deadline);  // EINTR/timeout: the caller re-checks
    bool held = true;
    try {
        // owner_died is recorded in the mutex for the caller to see
        if (relock_by_deadline && deadline != nullptr)
            held = mutex.timed_lock(*deadline);
        else
            mutex.lock();
    } catch (...) {
        lock.release();  // not held: keep ~unique_lock from unlocking it
        throw;
    }
    if (!held) lock.release();
    return held;
}

inline bool ConditionVariable::wait_relock(std::unique_lock<Mutex>& lock,
                                           const std::chrono::steady_clock::time_point* deadline) {
    return sleep_then_lock(lock, deadline, /*relock_by_deadline=*/true);
}

inline void ConditionVariable::wait(std::unique_lock<Mutex>& lock) { wait_steady(lock, nullptr); }

template <class Predicate>
void ConditionVariable::wait(std::unique_lock<Mutex>& lock, Predicate pred) {
    while (!pred()) wait(lock);
}

template <class Clock, class Duration>
std::cv_status ConditionVariable::wait_until(std::unique_lock<Mutex>& lock,
                                             const std::chrono::time_point<Clock, Duration>& deadline) {
    const auto steady = detail::steady_deadline(deadline);
    wait_steady(lock, steady ? &*steady : nullptr);
    return Clock::now() >= deadline ? std::cv_status::timeout : std::cv_status::no_timeout;
}

template <class Clock, class Duration, class Predicate>
bool ConditionVariable::wait_until(std::unique_lock<Mutex>& lock,
                                   const std::chrono::time_point<Clock, Duration>& deadline, Predicate pred) {
    while (!pred()) {
        if (wait_until(lock, deadline) == std::cv_status::timeout) return pred();
    }
    return true;
}

template <class Rep, class Period>
std::cv_status ConditionVariable::wait_for(std::unique_lock<Mutex>& lock,
                                           const std::chrono::duration<Rep, Period>& timeout) {
    const auto steady = detail::steady_deadline_after(timeout);
    if (!steady) {
        wait_steady(lock, nullptr);
        return std::cv_status::no_timeout;
    }
    return wait_until(lock, *steady);
}

template <class Rep, class Period, class Predicate>
bool ConditionVariable::wait_for(std::unique_lock<Mutex>& lock, const std::chrono::duration<Rep, Period>& timeout,
                                 Predicate pred) {
    const auto steady = detail::steady_deadline_after(timeout);
    if (!steady) {
        wait(lock, pred);
        return true;
    }
    return wait_until(lock, *steady, std::move(pred));
}

}  // namespace crew::ipc
