// crew/future.hpp — crew::Future<T> and crew::Promise<T>.
//
// What: a move-only handle to a result that arrives later, from a thread or a
// worker process; `void` results too.
// When: every executor's submit() returns one; make your own with Promise.
// Cost: one allocation shared with the task itself, no std::function, no mutex;
// get() on a ready future is a load; a blocked get() spins ~50 us, then sleeps
// on a futex.
//
// Continuations (`then`) run exactly once: on the thread that completes the
// future, or inline in then() when it is already complete. Keep them short or
// submit work from them.
#pragma once

#include <chrono>
#include <exception>
#include <functional>
#include <type_traits>
#include <utility>

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

    /// Waits at most `d`; true when ready.
    template <class Rep, class Period>
    bool wait_for(const std::chrono::duration<Rep, Period>& d) const {
        return checked().wait_until(std::chrono::steady_clock::now() +
                                    std::chrono::ceil<std::chrono::steady_clock::duration>(d));
    }

    /// Waits until `t` at most; true when ready.
    template <class Clock, class Duration>
    bool wait_until(const std::chrono::time_point<Clock, Duration>& t) const {
        if constexpr (std::is_same_v<Clock, std::chrono::steady_clock>) {
            return checked().wait_until(std::chrono::time_point_cast<std::chrono::steady_clock::duration>(t));
        } else {
            return wait_for(t - Clock::now());
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
