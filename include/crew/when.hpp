// crew/when.hpp — combinators over many futures: when_all, when_any,
// as_completed and wait, as in std::experimental and Python's
// concurrent.futures.
//
// Cost: one small continuation per input future; nothing polls. when_any,
// as_completed and wait leave their continuations on futures still pending
// when they return; those fire later into a shared, reference-counted record
// and free themselves.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <exception>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include <crew/detail/deadline.hpp>
#include <crew/errors.hpp>
#include <crew/future.hpp>

namespace crew {

/// When crew::wait() returns, as in Python's concurrent.futures.wait.
enum class Return {
    first_completed,  ///< as soon as any future is ready
    first_exception,  ///< as soon as any future fails, or when all are ready
    all_completed,    ///< when every future is ready
};

/// crew::wait()'s answer: indices into the futures passed, each ascending.
struct WaitResult {
    std::vector<std::size_t> done;
    std::vector<std::size_t> not_done;
};

/// when_any()'s answer: the index of the future that was ready first.
/// Converts to std::size_t, so `futures[crew::when_any(futures)]` works.
struct AnyResult {
    std::size_t index;
    [[nodiscard]] std::size_t get() const noexcept { return index; }
    operator std::size_t() const noexcept { return index; }  // NOLINT: implicit by design
};

namespace detail {

/// void has no value to collect; when_all stores std::monostate in its place.
template <class T>
using value_or_monostate = std::conditional_t<std::is_void_v<T>, std::monostate, T>;

template <class T>
value_or_monostate<T> take_value(SharedState<T>& s) {
    if constexpr (std::is_void_v<T>)
        return {};
    else
        return std::move(s.value());
}

/// A countdown shared by when_all's per-input continuations: the last input
/// to complete collects the results.
template <class Derived, class Result>
class AllState : public SharedState<Result> {
protected:
    struct Arrival final : Continuation {
        AllState* owner = nullptr;
        void invoke() noexcept override { owner->arrive(); }
    };

    explicit AllState(std::size_t n) : SharedState<Result>(2), remaining_(n + 1), arrivals_(n) {
        for (auto& a : arrivals_) a.owner = this;
    }

    /// Registers input `i`'s continuation; call for every input, then start().
    void watch(StateBase& input, std::size_t i) {
        if (!input.add_continuation(&arrivals_[i])) arrive();
    }
    /// The extra count held during registration, so completion cannot race it.
    void start() { arrive(); }

private:
    void arrive() noexcept {
        if (remaining_.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
        if (this->try_claim()) static_cast<Derived*>(this)->collect();
        this->release();
    }
    void destroy() noexcept override { delete static_cast<Derived*>(this); }

    std::atomic<std::size_t> remaining_;
    std::vector<Arrival> arrivals_;
};

template <class T>
class AllOfVector final : public AllState<AllOfVector<T>, std::conditional_t<std::is_void_v<T>, void, std::vector<T>>> {
    using Base = AllState<AllOfVector<T>, std::conditional_t<std::is_void_v<T>, void, std::vector<T>>>;
    friend Base;

public:
    explicit AllOfVector(std::vector<Future<T>> inputs) : Base(inputs.size()), inputs_(std::move(inputs)) {}

    void begin() {
        for (std::size_t i = 0; i < inputs_.size(); ++i) this->watch(*FutureAccess::state(inputs_[i]), i);
        this->start();
    }

private:
    void collect() noexcept {
        // The first failure in input order wins, so the outcome does not depend
        // on timing.
        for (auto& f : inputs_) {
            auto* s = FutureAccess::state(f);
            if (s->status() != Status::value) return this->publish_error(s->take_error());
        }
        if constexpr (std::is_void_v<T>) {
            this->publish_value();
        } else {
            std::vector<T> values;
            auto error = capture_exception([&] {
                values.reserve(inputs_.size());
                for (auto& f : inputs_) values.push_back(std::move(FutureAccess::state(f)->value()));
            });
            if (error) return this->publish_error(std::move(error));
            this->publish_value(std::move(values));
        }
    }

    std::vector<Future<T>> inputs_;
};

template <class... Ts>
class AllOfTuple final : public AllState<AllOfTuple<Ts...>, std::tuple<value_or_monostate<Ts>...>> {
    using Base = AllState<AllOfTuple<Ts...>, std::tuple<value_or_monostate<Ts>...>>;
    friend Base;

public:
    explicit AllOfTuple(Future<Ts>... inputs) : Base(sizeof...(Ts)), inputs_(std::move(inputs)...) {}

    void begin() {
        std::size_t i = 0;
        std::apply([&](auto&... f) { (this->watch(*FutureAccess::state(f), i++), ...); }, inputs_);
        this->start();
    }

private:
    void collect() noexcept {
        std::exception_ptr first;
        std::apply(
            [&](auto&... f) {
                ((first = first ? first
                                : (FutureAccess::state(f)->status() == Status::value ? nullptr
                                                                                     : FutureAccess::state(f)->take_error())),
                 ...);
            },
            inputs_);
        if (first) return this->publish_error(first);
        auto error = capture_exception([&] {
            this->publish_value(std::apply(
                [](auto&... f) { return std::tuple<value_or_monostate<Ts>...>(take_value(*FutureAccess::state(f))...); },
                inputs_));
        });
        if (error) this->publish_error(std::move(error));
    }

    std::tuple<Future<Ts>...> inputs_;
};

/// A record of which futures (by index) completed, in completion order, fed by
/// one continuation per future. Shared by when_any, as_completed and wait.
class CompletionLog {
public:
    template <class T>
    static std::shared_ptr<CompletionLog> watch(const std::vector<Future<T>>& futures) {
        auto log = std::make_shared<CompletionLog>();
        for (std::size_t i = 0; i < futures.size(); ++i) {
            StateBase* s = FutureAccess::state(futures[i]);
            if (s == nullptr) throw_no_state();
            auto* note = new Note(log, i, s);
            if (!s->add_continuation(note)) note->invoke();
        }
        return log;
    }

    /// Waits until `enough(completed, failed)` or the deadline; false on timeout.
    template <class Enough>
    bool wait_until(Enough enough, const std::optional<std::chrono::steady_clock::time_point>& deadline) {
        std::unique_lock lock(mutex_);
        auto pred = [&] { return enough(order_.size(), failures_); };
        if (!deadline) {
            cv_.wait(lock, pred);
            return true;
        }
        return cv_.wait_until(lock, *deadline, pred);
    }

    /// The i-th future to complete (blocks until there is one).
    std::size_t nth(std::size_t i) {
        std::unique_lock lock(mutex_);
        cv_.wait(lock, [&] { return order_.size() > i; });
        return order_[i];
    }

private:
    struct Note final : Continuation {
        Note(std::shared_ptr<CompletionLog> owner, std::size_t position, const StateBase* watched)
            : log(std::move(owner)), index(position), state(watched) {}
        // Runs while `state` is being published (or inline when it already
        // was), so the state is alive here and never touched afterwards.
        void invoke() noexcept override {
            log->record(index, state->status() != Status::value);
            delete this;
        }
        std::shared_ptr<CompletionLog> log;
        std::size_t index;
        const StateBase* state;
    };

    void record(std::size_t index, bool failed) noexcept {
        {
            std::lock_guard lock(mutex_);
            order_.push_back(index);
            failures_ += failed ? 1 : 0;
        }
        cv_.notify_all();
    }

    std::mutex mutex_;
    std::condition_variable cv_;
    std::vector<std::size_t> order_;
    std::size_t failures_ = 0;
};

template <class T>
class CompletionRange;

}  // namespace detail

/// A future of all the values, in input order. Completes when every input has;
/// if any failed, with the first failure in input order. Futures of void
/// contribute std::monostate. crew::Error if a future has no state.
template <class... Ts>
Future<std::tuple<detail::value_or_monostate<Ts>...>> when_all(Future<Ts>... futures) {
    if (!(futures.valid() && ...)) detail::throw_no_state();
    auto* all = new detail::AllOfTuple<Ts...>(std::move(futures)...);
    auto result = detail::make_future<std::tuple<detail::value_or_monostate<Ts>...>>(all);
    all->begin();
    return result;
}

/// A future of the vector of values, in input order (Future<void> for a
/// vector of Future<void>). Takes the futures over: an lvalue vector is left
/// holding empty futures.
template <class T>
auto when_all(std::vector<Future<T>>&& futures) {
    for (const auto& f : futures)
        if (!f.valid()) detail::throw_no_state();
    auto* all = new detail::AllOfVector<T>(std::move(futures));
    auto result = detail::make_future<std::conditional_t<std::is_void_v<T>, void, std::vector<T>>>(all);
    all->begin();
    return result;
}
template <class T>
auto when_all(std::vector<Future<T>>& futures) {
    return when_all(std::move(futures));
}

/// Blocks until one of `futures` is ready and tells which (the lowest index
/// among those already ready). The futures stay in place, untouched.
/// Throws crew::InvalidArgument for an empty vector.
template <class T>
AnyResult when_any(std::vector<Future<T>>& futures) {
    if (futures.empty()) throw InvalidArgument("crew::when_any: no futures given; pass at least one");
    for (std::size_t i = 0; i < futures.size(); ++i)
        if (futures[i].ready()) return AnyResult{i};
    auto log = detail::CompletionLog::watch(futures);
    return AnyResult{log->nth(0)};
}

/// A range over `futures` that yields each one (as Future<T>&) in the order
/// they become ready: `for (auto& f : crew::as_completed(futs)) f.get();`.
/// An lvalue vector must outlive the loop; an rvalue one is kept by the range.
template <class T>
detail::CompletionRange<T> as_completed(std::vector<Future<T>>& futures) {
    return detail::CompletionRange<T>(futures);
}
template <class T>
detail::CompletionRange<T> as_completed(std::vector<Future<T>>&& futures) {
    return detail::CompletionRange<T>(std::move(futures));
}

namespace detail {

/// crew::wait() with an absolute deadline (std::nullopt: none).
template <class T>
WaitResult wait_futures_until(const std::vector<Future<T>>& futures, Return how,
                              const std::optional<std::chrono::steady_clock::time_point>& deadline) {
    const std::size_t n = futures.size();
    if (n > 0) {
        auto log = detail::CompletionLog::watch(futures);
        log->wait_until(
            [&](std::size_t completed, std::size_t failed) {
                switch (how) {
                    case Return::first_completed: return completed > 0;
                    case Return::first_exception: return failed > 0 || completed == n;
                    case Return::all_completed: break;
                }
                return completed == n;
            },
            deadline);
    }
    WaitResult result;
    for (std::size_t i = 0; i < n; ++i) (futures[i].ready() ? result.done : result.not_done).push_back(i);
    return result;
}

}  // namespace detail

/// Waits as Python's concurrent.futures.wait does and reports which futures
/// are done. `timeout` of std::nullopt (the default) waits without limit, and
/// so does one over ~95 years (`duration::max()` saturates, never overflows).
template <class T>
WaitResult wait(const std::vector<Future<T>>& futures, Return how = Return::all_completed,
                std::optional<std::chrono::steady_clock::duration> timeout = std::nullopt) {
    return detail::wait_futures_until(futures, how,
                                      timeout ? detail::deadline_after(*timeout)
                                              : std::optional<std::chrono::steady_clock::time_point>());
}

/// The same with a timeout of any duration type (`hours::max()` waits
/// without limit).
template <class T, class Rep, class Period>
WaitResult wait(const std::vector<Future<T>>& futures, Return how, std::chrono::duration<Rep, Period> timeout) {
    return detail::wait_futures_until(futures, how, detail::deadline_after(timeout));
}

namespace detail {

template <class T>
class CompletionRange {
public:
    explicit CompletionRange(std::vector<Future<T>>& futures) : futures_(&futures) {}
    explicit CompletionRange(std::vector<Future<T>>&& futures)
        : owned_(std::make_unique<std::vector<Future<T>>>(std::move(futures))), futures_(owned_.get()) {}

    class iterator {
    public:
        using value_type = Future<T>;
        using reference = Future<T>&;
        using difference_type = std::ptrdiff_t;
        using iterator_category = std::input_iterator_tag;

        reference operator*() const { return (*range_->futures_)[range_->log_->nth(position_)]; }
        iterator& operator++() {
            ++position_;
            return *this;
        }
        void operator++(int) { ++position_; }
        bool operator==(const iterator& o) const noexcept { return position_ == o.position_; }

    private:
        friend class CompletionRange;
        iterator(CompletionRange* range, std::size_t position) : range_(range), position_(position) {}
        CompletionRange* range_;
        std::size_t position_;
    };

    iterator begin() {
        if (!log_) log_ = CompletionLog::watch(*futures_);
        return iterator(this, 0);
    }
    iterator end() { return iterator(this, futures_->size()); }
    [[nodiscard]] std::size_t size() const noexcept { return futures_->size(); }

private:
    std::unique_ptr<std::vector<Future<T>>> owned_;
    std::vector<Future<T>>* futures_;
    std::shared_ptr<CompletionLog> log_;
};

}  // namespace detail
}  // namespace crew
