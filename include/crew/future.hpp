// crew/future.hpp — crew::Future<T> and crew::Promise<T>.
//
// What: a move-only handle to a result that arrives later, from a thread or a
// worker process; `void` results too.
// When: every executor's submit() returns one; make your own with Promise.
// Cost: one allocation shared with the task itself, no std::function, no mutex;
// get() on a ready future is a load; a blocked get() spins ~50 us, then sleeps
// on a futex.
//
// Continuations (`then`, `on_done`, and a coroutine suspended in
// `co_await future`) run exactly once: on the thread that completes the
// future, or inline (on the caller's thread) when it is already complete.
// Keep them short or submit work from them.
//
// Timed waits saturate: wait_for(hours::max()), wait_for(years(1000)) or
// wait_until(time_point::max()) wait without limit instead of overflowing
// into a deadline in the past.
#pragma once

#include <chrono>
#include <coroutine>
#include <cstdio>
#include <exception>
#include <functional>
#include <type_traits>
#include <utility>

#include <crew/detail/deadline.hpp>
#include <crew/detail/demangle.hpp>
#include <crew/detail/shared_state.hpp>
#include <crew/errors.hpp>

namespace crew {

template <class T>
class Future;
template <class T>
class Promise;

namespace detail {

struct FutureAccess;

template <class T>
struct is_future : std::false_type {};
template <class T>
struct is_future<Future<T>> : std::true_type {};

/// What `f` returns when given the value of a Future<T>.
template <class F, class T>
struct then_result {
    using type = std::invoke_result_t<F, T>;
};
template <class F>
struct then_result<F, void> {
    using type = std::invoke_result_t<F>;
};

template <class T>
Future<T> make_future(SharedState<T>* state) noexcept;

[[noreturn]] inline void throw_no_state() {
    throw Error("crew: this future has no state (default-constructed, moved from, or its value "
                "was already taken by get()); keep the future returned by submit() and call get() once");
}

}  // namespace detail

/// A value (or exception) of type T that will be ready later.
template <class T>
class Future {
public:
    using value_type = T;

    /// An empty future: valid() is false.
    Future() noexcept = default;
    Future(Future&&) noexcept = default;
    Future& operator=(Future&&) noexcept = default;
    Future(const Future&) = delete;
    Future& operator=(const Future&) = delete;
    ~Future() = default;

    /// True while this future refers to a result (not default-constructed,
    /// moved from, or consumed by get() or then()).
    [[nodiscard]] bool valid() const noexcept { return static_cast<bool>(state_); }

    /// True when get() would not block.
    [[nodiscard]] bool ready() const noexcept { return state_ && state_->is_ready(); }

    /// Blocks until ready. On a ThreadExecutor worker it runs other queued
    /// tasks meanwhile, so waiting on a nested task cannot deadlock the pool.
    void wait() const { checked().wait(); }

    /// Waits at most `d`; true when ready. Saturates: `hours::max()` or
    /// `duration::max()` waits without limit instead of overflowing.
    template <class Rep, class Period>
    bool wait_for(const std::chrono::duration<Rep, Period>& d) const {
        auto& state = checked();
        return state.wait_until(detail::deadline_after(d));
    }

    /// Waits until `t` at most; true when ready. Any clock: the wait runs on
    /// steady_clock and is re-checked against `Clock` (so a system_clock
    /// deadline follows clock changes, as std::condition_variable's does).
    /// Saturates: `time_point::max()` waits without limit.
    template <class Clock, class Duration>
    bool wait_until(const std::chrono::time_point<Clock, Duration>& t) const {
        // The distance is taken in long double seconds: t - now() in t's own
        // type overflows for time_point::max() (or a coarse Duration).
        using Seconds = std::chrono::duration<long double>;
        auto& state = checked();
        for (;;) {
            const Seconds left = Seconds(t.time_since_epoch()) - Seconds(Clock::now().time_since_epoch());
            if (left <= left.zero()) return state.is_ready();
            if (state.wait_until(detail::deadline_after(left))) return true;
        }
    }

    /// Waits, then returns the value or rethrows the task's exception
    /// (crew::Cancelled when it was cancelled). Consumes the future: valid()
    /// is false afterwards.
    T get() {
        checked().wait();
        detail::StateRef<detail::SharedState<T>> state = std::move(state_);
        if (state->status() != detail::Status::value) std::rethrow_exception(state->take_error());
        if constexpr (!std::is_void_v<T>) return std::move(state->value());
    }

    /// Cancels the task if it has not started: true when it now never will
    /// (get() throws crew::Cancelled); false when it already runs or ran.
    bool cancel() noexcept { return state_ && state_->try_cancel(); }

    /// Returns a future of `f(value)`; `f()` for Future<void>. If this future
    /// fails, `f` is skipped and the exception travels on. Consumes this
    /// future. `f` runs on the thread that completes this future, or inline
    /// when it is already complete.
    template <class F>
    auto then(F&& f) -> Future<typename detail::then_result<std::decay_t<F>, T>::type>;

    /// Calls `f()` (no arguments) once this future is ready, whatever the
    /// outcome: a value, an exception or a cancellation (Python's
    /// add_done_callback). Does not consume the future: it stays valid and
    /// get() still works, in a callback too. Several callbacks may be added;
    /// they run in the order they were added, on the thread that completes
    /// the future, or inline here when it is already ready. `f` should not
    /// throw: an exception escaping it is printed to stderr (it cannot reach
    /// anyone else) and the other callbacks still run. Thread-safe: may be
    /// called concurrently with the completion and with other on_done calls
    /// (not with get(), then() or a move of this future).
    template <class F>
    void on_done(F&& f) const;

    /// `co_await future` in a C++20 coroutine: suspends until the future is
    /// ready (not at all when it already is), then yields the value or
    /// rethrows the exception (crew::Cancelled when it was cancelled).
    /// Consumes the future, as get() does. The coroutine is resumed on the
    /// thread that completes the future (a worker of the executor that ran
    /// the task, or the thread that called Promise::set_value), or goes on
    /// inline when the future was already ready; co_await a scheduling
    /// awaitable of your own afterwards to move elsewhere. Resumption
    /// happens inside the completing thread's noexcept publication, so the
    /// coroutine's own promise must not let exceptions escape resume()
    /// (store them in unhandled_exception, as every task type does).
    auto operator co_await();

private:
    template <class U>
    friend Future<U> detail::make_future(detail::SharedState<U>*) noexcept;
    template <class U>
    friend class Future;
    friend struct detail::FutureAccess;

    explicit Future(detail::SharedState<T>* s) noexcept : state_(s) {}

    detail::SharedState<T>& checked() const {
        if (!state_) detail::throw_no_state();
        return *state_;
    }

    detail::StateRef<detail::SharedState<T>> state_;
};

namespace detail {

template <class T>
Future<T> make_future(SharedState<T>* state) noexcept {
    return Future<T>(state);
}

/// Lets crew's own combinators reach a future's state without widening the
/// public interface.
struct FutureAccess {
    template <class T>
    static SharedState<T>* state(const Future<T>& f) noexcept {
        return f.state_.get();
    }
};

/// The state behind then(): waits on `source`, then runs `f` on its value.
template <class T, class U, class F>
class ThenState final : public SharedState<U>, public Continuation {
public:
    ThenState(StateRef<SharedState<T>> source, F f)
        : SharedState<U>(2),  // the returned future + the pending continuation
          source_(std::move(source)),
          f_(std::move(f)) {}

    void invoke() noexcept override {
        if (this->try_claim()) {
            auto& src = *source_;
            if (src.status() == Status::value) {
                if constexpr (std::is_void_v<T>)
                    publish_invoke<U>(*this, std::move(f_));
                else
                    publish_invoke<U>(*this, std::move(f_), std::move(src.value()));
            } else {
                this->publish_error(src.take_error());
            }
        }
        source_.reset();
        this->release();
    }

private:
    void destroy() noexcept override { delete this; }

    StateRef<SharedState<T>> source_;
    F f_;
};

}  // namespace detail

template <class T>
template <class F>
auto Future<T>::then(F&& f) -> Future<typename detail::then_result<std::decay_t<F>, T>::type> {
    using U = typename detail::then_result<std::decay_t<F>, T>::type;
    static_assert(!detail::is_future<U>::value,
                  "crew::Future::then: the continuation returns a Future; return the value instead, "
                  "or call get() on the inner future inside the continuation");
    detail::SharedState<T>* source = &checked();
    auto* next = new detail::ThenState<T, U, std::decay_t<F>>(std::move(state_), std::forward<F>(f));
    if (!source->add_continuation(next)) next->invoke();
    return detail::make_future<U>(next);
}

namespace detail {

/// The awaiter behind `co_await future`: a continuation that resumes the
/// coroutine. It lives in the coroutine's frame and holds the state, so
/// neither can go while the coroutine is suspended. run_continuations reads
/// `next` before invoke(), so resuming (which destroys this awaiter) is safe.
template <class T>
class FutureAwaiter final : public Continuation {
public:
    explicit FutureAwaiter(StateRef<SharedState<T>> state) noexcept : state_(std::move(state)) {}
    FutureAwaiter(const FutureAwaiter&) = delete;
    FutureAwaiter& operator=(const FutureAwaiter&) = delete;
    FutureAwaiter(FutureAwaiter&&) = delete;
    FutureAwaiter& operator=(FutureAwaiter&&) = delete;
    ~FutureAwaiter() = default;

    [[nodiscard]] bool await_ready() const noexcept { return state_->is_ready(); }

    /// False (go on at once) when the future completed meanwhile. Once the
    /// continuation is pushed another thread may resume the coroutine at any
    /// moment: nothing here touches `this` after add_continuation.
    bool await_suspend(std::coroutine_handle<> coroutine) noexcept {
        coroutine_ = coroutine;
        return state_->add_continuation(this);
    }

    T await_resume() {
        StateRef<SharedState<T>> state = std::move(state_);
        if (state->status() != Status::value) std::rethrow_exception(state->take_error());
        if constexpr (!std::is_void_v<T>) return std::move(state->value());
    }

    void invoke() noexcept override { coroutine_.resume(); }

private:
    StateRef<SharedState<T>> state_;
    std::coroutine_handle<> coroutine_;
};

/// One on_done() callback; frees itself after running.
template <class F>
class DoneCallback final : public Continuation {
public:
    explicit DoneCallback(F f) : f_(std::move(f)) {}

    void invoke() noexcept override {
        if (auto error = capture_exception([&] { std::invoke(f_); })) report(error);
        delete this;
    }

private:
    static void report(const std::exception_ptr& error) noexcept {
        try {
            const auto info = describe(error);
            std::fprintf(stderr,
                         "crew: an on_done() callback threw %s: %s\n"
                         "crew: (catch exceptions inside the callback; nobody else can receive them)\n",
                         info.type_name.c_str(), info.what.c_str());
        } catch (...) {
            std::fputs("crew: an on_done() callback threw (and describing it failed too)\n", stderr);
        }
    }

    F f_;
};

}  // namespace detail

template <class T>
template <class F>
void Future<T>::on_done(F&& f) const {
    static_assert(std::is_invocable_v<std::decay_t<F>&>,
                  "crew::Future::on_done: the callback is called with no arguments, f(); "
                  "capture what it needs (call get() on the future after it ran, or use then() for the value)");
    auto& state = checked();
    auto* callback = new detail::DoneCallback<std::decay_t<F>>(std::forward<F>(f));
    if (!state.add_continuation(callback)) callback->invoke();
}

template <class T>
auto Future<T>::operator co_await() {
    if (!state_) detail::throw_no_state();
    return detail::FutureAwaiter<T>(std::move(state_));
}

namespace detail {

template <class T>
class PromiseState final : public SharedState<T> {
public:
    PromiseState() : SharedState<T>(2) {}  // the promise + its future

private:
    void destroy() noexcept override { delete this; }
};

}  // namespace detail

/// The producing side of a Future you complete yourself.
template <class T>
class Promise {
public:
    Promise() : state_(new detail::PromiseState<T>()) {}
    Promise(Promise&&) noexcept = default;
    Promise& operator=(Promise&& o) noexcept {
        if (this != &o) {
            abandon();
            state_ = std::move(o.state_);
            future_taken_ = o.future_taken_;
        }
        return *this;
    }
    Promise(const Promise&) = delete;
    Promise& operator=(const Promise&) = delete;
    /// A promise destroyed unsatisfied fails its future with crew::Error
    /// ("broken promise").
    ~Promise() { abandon(); }

    /// The future this promise completes; callable once.
    Future<T> get_future() {
        if (!state_ || future_taken_)
            throw Error("crew: Promise::get_future() called twice or on a moved-from promise; "
                        "a promise has exactly one future");
        future_taken_ = true;
        return detail::make_future<T>(state_.get());
    }

    /// Completes the future with a value. Ignored when the future was
    /// cancelled; throws crew::Error when already satisfied.
    template <class... Args>
    void set_value(Args&&... args) {
        if (claim()) state_->publish_value(std::forward<Args>(args)...);
    }

    /// Completes the future with an exception.
    void set_exception(std::exception_ptr e) {
        if (claim()) state_->publish_error(std::move(e));
    }

private:
    bool claim() {
        if (!state_) throw Error("crew: this promise was moved from; use the promise it was moved into");
        if (state_->try_claim()) return true;
        if (state_->status() == detail::Status::cancelled) return false;
        throw Error("crew: this promise was already satisfied; set_value/set_exception may be called once");
    }

    void abandon() noexcept {
        if (!state_) return;
        if (state_->try_claim())
            state_->publish_error(std::make_exception_ptr(
                Error("crew: broken promise: the Promise was destroyed without setting a value")));
        // The future's reference was never handed out: drop it too.
        if (!future_taken_) state_->release();
        state_.reset();
    }

    detail::StateRef<detail::SharedState<T>> state_;
    bool future_taken_ = false;
};

}  // namespace crew
