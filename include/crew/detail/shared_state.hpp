// crew/detail/shared_state.hpp — the state a Future and its producer share.
//
// One allocation per task: executors derive their task object from
// SharedState<R>, so the queued job *is* the future's state (no
// std::function, no separate promise). The state is reference counted
// intrusively (producer + future + pending continuations).
//
// Status word (32 bits, futex-able):
//
//   pending --try_claim--> running --publish--> value | error | cancelled
//
// Exactly one party wins try_claim (the worker that runs the task, or cancel(),
// or a Promise setter); only the winner publishes, so publication happens once.
// Bit 3 (has_waiters) is set by a thread that sleeps on the word, so the
// publisher makes the futex syscall only when someone actually sleeps.
//
// Continuations form a lock-free list (Treiber stack) closed by a sentinel at
// publication: a continuation pushed before the close runs on the publishing
// thread, one that finds the list closed runs inline on the caller's thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>

#include <crew/detail/futex.hpp>
#include <crew/detail/spin.hpp>
#include <crew/errors.hpp>

namespace crew::detail {

/// Runs f and returns what it threw (null if nothing). Publish the result
/// only after this returns: leaving the handler drops this thread's reference
/// to the exception first, so the thread that rethrows it never shares the
/// exception's reference count (uninstrumented, inside libsupc++) with us.
/// Publishing from inside a catch block is what ThreadSanitizer reports as a
/// race on the exception's destruction.
template <class F>
std::exception_ptr capture_exception(F&& f) noexcept {
    try {
        std::forward<F>(f)();
        return nullptr;
    } catch (...) {
        return std::current_exception();
    }
}

enum class Status : std::uint32_t { pending = 0, running = 1, value = 2, error = 3, cancelled = 4 };

inline constexpr std::uint32_t status_mask = 0x7;
inline constexpr std::uint32_t has_waiters = 0x8;

/// A thread that can make progress on other work while it waits for a future
/// (a ThreadExecutor worker). Future::wait() on such a thread runs queued tasks
/// instead of blocking, so a task that waits for a task it submitted cannot
/// deadlock the pool.
struct WaitHelper {
    /// Runs one queued task if there is one; false when there was none.
    virtual bool run_one() = 0;
    /// True once shutdown(cancel_pending) began: a waiter must not start a
    /// task itself any more.
    [[nodiscard]] virtual bool refuses_starts() const noexcept { return false; }
    /// Takes `job` (a detail::Job) back from the calling worker's own queue,
    /// when it is the newest there: the waiter then runs it and no entry is
    /// left behind. False when it is not there.
    virtual bool take_back(const void* job) noexcept {
        (void)job;
        return false;
    }

protected:
    ~WaitHelper() = default;
};

inline thread_local WaitHelper* current_wait_helper = nullptr;

/// Something to run once a state is published. Owns itself: invoke() must
/// release whatever it holds (usually by deleting itself).
struct Continuation {
    Continuation* next = nullptr;
    virtual void invoke() noexcept = 0;

protected:
    ~Continuation() = default;
};

class StateBase {
public:
    StateBase(const StateBase&) = delete;
    StateBase& operator=(const StateBase&) = delete;

    void add_ref() noexcept { refs_.fetch_add(1, std::memory_order_relaxed); }
    void release() noexcept {
        if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) destroy();
    }

    [[nodiscard]] Status status() const noexcept {
        return static_cast<Status>(word_.load(std::memory_order_acquire) & status_mask);
    }
    [[nodiscard]] bool is_ready() const noexcept { return status() >= Status::value; }

    /// pending -> running. The one caller that gets true must publish.
    bool try_claim() noexcept {
        std::uint32_t w = word_.load(std::memory_order_relaxed);
        while ((w & status_mask) == static_cast<std::uint32_t>(Status::pending)) {
            std::uint32_t next = (w & ~status_mask) | static_cast<std::uint32_t>(Status::running);
            if (word_.compare_exchange_weak(w, next, std::memory_order_acq_rel, std::memory_order_relaxed))
                return true;
        }
        return false;
    }

    /// Claims a pending state and publishes it as cancelled. True when the
    /// task had not started and now never will (also when it was cancelled
    /// before). A task shipped to a worker process overrides this to cancel
    /// there too, until the worker starts it.
    virtual bool try_cancel() noexcept {
        if (!try_claim()) return status() == Status::cancelled;
        publish_cancelled();
        return true;
    }

    /// How many CPU pauses a waiter spends before it starts yielding
    /// (detail/spin.hpp): a result from a thread of this process comes
    /// quickly; one from another process (ProcessExecutor, MPI) passes
    /// through a dispatcher thread and a worker that need the CPUs.
    [[nodiscard]] virtual int wait_pauses() const noexcept { return pauses_for_local_handoff; }

    /// Runs the task here, now, if it is one of `helper`'s executor and no
    /// worker has begun it: a worker that waits on a task it submitted runs
    /// it itself (help-first, as a work-stealing scheduler does), while the
    /// other workers take the older tasks. True when it ran here.
    virtual bool run_here(WaitHelper& helper) noexcept {
        (void)helper;
        return false;
    }

    /// Claimant only: publish crew::Cancelled.
    void publish_cancelled() noexcept { publish_error(std::make_exception_ptr(Cancelled{}), Status::cancelled); }

    /// Claimant only: publish an exception.
    void publish_error(std::exception_ptr e, Status s = Status::error) noexcept {
        error_ = std::move(e);
        publish(s);
    }

    [[nodiscard]] const std::exception_ptr& error() const noexcept { return error_; }
    /// The exception, taken out: for the one consumer of a failed state
    /// (Future::get, a continuation, when_all). The thread that rethrows it
    /// then holds the last reference, so the thread that drops the state
    /// later never destroys an exception another thread still reads (their
    /// shared count would be invisible to ThreadSanitizer, see
    /// capture_exception).
    [[nodiscard]] std::exception_ptr take_error() noexcept { return std::move(error_); }

    /// Pushes a continuation; false when the state is already published (the
    /// caller then invokes it itself).
    bool add_continuation(Continuation* c) noexcept {
        std::uintptr_t head = continuations_.load(std::memory_order_acquire);
        do {
            if (head == closed) return false;
            c->next = reinterpret_cast<Continuation*>(head);
        } while (!continuations_.compare_exchange_weak(head, reinterpret_cast<std::uintptr_t>(c),
                                                       std::memory_order_release, std::memory_order_acquire));
        return true;
    }

    /// Blocks until published. On a ThreadExecutor worker, runs queued tasks
    /// meanwhile (see WaitHelper).
    void wait() const {
        wait_impl(nullptr);
    }

    /// Blocks until published or `deadline`; true when published.
    bool wait_until(std::chrono::steady_clock::time_point deadline) const {
        return wait_impl(&deadline);
    }

protected:
    explicit StateBase(std::uint32_t refs) noexcept : refs_(refs) {}
    ~StateBase() = default;

    /// Frees the most-derived object.
    virtual void destroy() noexcept = 0;

    /// Claimant only: make the result visible, wake sleepers, run continuations.
    void publish(Status s) noexcept {
        std::uint32_t old = word_.exchange(static_cast<std::uint32_t>(s), std::memory_order_acq_rel);
        if (old & has_waiters) futex_wake(word_);
        run_continuations();
    }

private:
    static constexpr std::uintptr_t closed = 1;

    void run_continuations() noexcept {
        std::uintptr_t head = continuations_.exchange(closed, std::memory_order_acq_rel);
        // The stack holds them newest first; run them in the order they came.
        Continuation* reversed = nullptr;
        for (auto* c = reinterpret_cast<Continuation*>(head); c != nullptr;) {
            Continuation* next = c->next;
            c->next = reversed;
            reversed = c;
            c = next;
        }
        while (reversed != nullptr) {
            Continuation* next = reversed->next;
            reversed->invoke();
            reversed = next;
        }
    }

    bool wait_impl(const std::chrono::steady_clock::time_point* deadline) const {
        if (is_ready()) return true;
        if (WaitHelper* helper = current_wait_helper) {
            // Without a deadline the waiter runs the task itself when nobody
            // has begun it: a fork-join tree then nests no deeper than the
            // tree (helping with the oldest queued task first could nest a
            // wait in a wait once per task). A timed wait does not take on
            // a task that could outlast it.
            if (deadline == nullptr && const_cast<StateBase*>(this)->run_here(*helper)) return true;
            return help_while_waiting(*helper, deadline);
        }
        if (spin_until([this] { return is_ready(); }, spin_budget, wait_pauses())) return true;
        while (!is_ready()) {
            if (deadline != nullptr && std::chrono::steady_clock::now() >= *deadline) return false;
            sleep_once(deadline);
        }
        return true;
    }

    // A worker waiting on a future keeps the pool moving: it runs queued tasks,
    // and only when there are none does it doze, briefly, so that work queued
    // later (perhaps the very task it waits for) is picked up.
    bool help_while_waiting(WaitHelper& helper, const std::chrono::steady_clock::time_point* deadline) const {
        auto doze = std::chrono::microseconds(20);
        while (!is_ready()) {
            if (helper.run_one()) {
                doze = std::chrono::microseconds(20);
                continue;
            }
            auto now = std::chrono::steady_clock::now();
            if (deadline != nullptr && now >= *deadline) return false;
            auto until = now + doze;
            if (deadline != nullptr && *deadline < until) until = *deadline;
            sleep_once(&until);
            if (doze < std::chrono::milliseconds(1)) doze *= 2;
        }
        return true;
    }

    // One futex sleep on the status word (after announcing the sleeper), until
    // woken, `until`, or a spurious wake-up. Callers loop.
    void sleep_once(const std::chrono::steady_clock::time_point* until) const {
        std::uint32_t w = word_.load(std::memory_order_acquire);
        while (!(w & has_waiters)) {
            if ((w & status_mask) >= static_cast<std::uint32_t>(Status::value)) return;
            if (word_.compare_exchange_weak(w, w | has_waiters, std::memory_order_acq_rel, std::memory_order_acquire))
                w |= has_waiters;
        }
        if ((w & status_mask) >= static_cast<std::uint32_t>(Status::value)) return;
        futex_wait(word_, w, false, until);
    }

    mutable     std::atomic<std::uint32_t> word_{static_cast<std::uint32_t>(Status::pending)};
    std::atomic<std::uint32_t> refs_;
    std::atomic<std::uintptr_t> continuations_{0};
    std::exception_ptr error_;
};

/// The state of a Future<T>: StateBase plus storage for the value.
template <class T>
class SharedState : public StateBase {
public:
    /// Claimant only.
    template <class... Args>
    void publish_value(Args&&... args) noexcept {
        auto error = capture_exception([&] { ::new (static_cast<void*>(&storage_.value)) T(std::forward<Args>(args)...); });
        if (error) return publish_error(std::move(error));
        publish(Status::value);
    }

    /// Only after status() == value.
    T& value() noexcept { return storage_.value; }

protected:
    using StateBase::StateBase;
    ~SharedState() {
        if (status() == Status::value) storage_.value.~T();
    }

private:
    union Storage {
        Storage() noexcept {}
        ~Storage() {}
        T value;
    } storage_;
};

template <>
class SharedState<void> : public StateBase {
public:
    void publish_value() noexcept { publish(Status::value); }

protected:
    using StateBase::StateBase;
    ~SharedState() = default;
};

/// Runs `f(args...)` and publishes its result (or its exception) into `state`.
/// Caller must have claimed the state.
template <class T, class F, class... Args>
void publish_invoke(SharedState<T>& state, F&& f, Args&&... args) noexcept {
    if constexpr (std::is_void_v<T>) {
        auto error = capture_exception([&] { std::invoke(std::forward<F>(f), std::forward<Args>(args)...); });
        if (error) return state.publish_error(std::move(error));
        state.publish_value();
    } else {
        // The value is published inside the lambda; only a throw escapes it.
        auto error = capture_exception(
            [&] { state.publish_value(std::invoke(std::forward<F>(f), std::forward<Args>(args)...)); });
        if (error) state.publish_error(std::move(error));
    }
}

/// Intrusive owning pointer to a state.
template <class S>
class StateRef {
public:
    StateRef() noexcept = default;
    /// Adopts one reference the caller already holds.
    explicit StateRef(S* s) noexcept : s_(s) {}
    StateRef(StateRef&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
    StateRef& operator=(StateRef&& o) noexcept {
        if (this != &o) {
            reset();
            s_ = std::exchange(o.s_, nullptr);
        }
        return *this;
    }
    ~StateRef() { reset(); }

    void reset() noexcept {
        if (S* s = std::exchange(s_, nullptr)) s->release();
    }
    S* release_ownership() noexcept { return std::exchange(s_, nullptr); }
    S* get() const noexcept { return s_; }
    S* operator->() const noexcept { return s_; }
    S& operator*() const noexcept { return *s_; }
    explicit operator bool() const noexcept { return s_ != nullptr; }

private:
    S* s_ = nullptr;
};

}  // namespace crew::detail
