// imap's core (detail::ImapRange) driven directly, with a ThreadExecutor and a
// chunk submitter written here, as ThreadExecutor::imap builds it: order,
// laziness and the in-flight bound, inputs that are only input ranges,
// failures at their turn with the rest cancelled, early destruction.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <iterator>
#include <memory>
#include <mutex>
#include <ranges>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include <crew/detail/imap.hpp>
#include <crew/thread_executor.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;

namespace {

using Executor = crew::ThreadExecutor<>;

// What ThreadExecutor::imap does: one task per chunk, owning the chunk and a
// copy of f.
template <class F, class Inputs>
auto thread_imap(Executor& ex, F f, Inputs&& inputs, crew::MapOptions options = {}) {
    using In = std::ranges::range_value_t<std::views::all_t<Inputs>>;
    using R = std::decay_t<std::invoke_result_t<F&, In&>>;
    return crew::detail::make_imap<R>(
        std::forward<Inputs>(inputs),
        [&ex, f](std::vector<In>&& chunk) {
            return ex.submit(
                [f, c = std::move(chunk)]() mutable { return crew::detail::imap_run_chunk<R>(f, c); });
        },
        options, ex.size());
}

// A latch the tasks wait on. Not a crew future: a worker waiting on one would
// run queued tasks meanwhile, and these tests need the worker held.
struct Gate {
    std::atomic<bool> open{false};
    void wait() const { open.wait(false); }
    void release() {
        open = true;
        open.notify_all();
    }
};

// Inputs that ran, by value.
struct Ran {
    std::mutex m;
    std::set<int> inputs;
    void add(int i) {
        std::lock_guard lock(m);
        inputs.insert(i);
    }
    std::set<int> get() {
        std::lock_guard lock(m);
        return inputs;
    }
};

// One line of text, read by operator>> (for std::ranges::istream_view).
struct Line {
    std::string text;
    friend std::istream& operator>>(std::istream& in, Line& l) { return std::getline(in, l.text); }
};

}  // namespace

TEST_CASE("imap yields results in input order", "[imap]") {
    Executor ex(3);
    std::vector<int> inputs(500);
    for (int i = 0; i < 500; ++i) inputs[static_cast<std::size_t>(i)] = i;
    auto slow_square = [](int i) {
        if (i % 7 == 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
        return i * i;
    };
    for (crew::MapOptions options : {crew::MapOptions{}, crew::MapOptions{.chunk = 1, .in_flight = 1},
                                     crew::MapOptions{.chunk = 3, .in_flight = 2},
                                     crew::MapOptions{.chunk = 64, .in_flight = 16},
                                     crew::MapOptions{.chunk = 1000, .in_flight = 0}}) {
        std::vector<int> out;
        for (int r : thread_imap(ex, slow_square, inputs, options)) out.push_back(r);
        REQUIRE(out.size() == inputs.size());
        for (std::size_t i = 0; i < out.size(); ++i) CHECK(out[i] == static_cast<int>(i * i));
    }

    std::vector<int> none;
    auto empty = thread_imap(ex, slow_square, none);
    CHECK(empty.begin() == empty.end());
}

TEST_CASE("imap is a single-pass input range", "[imap]") {
    Executor ex(2);
    std::vector<int> inputs{1, 2, 3};
    auto r = thread_imap(ex, [](int i) { return i + 1; }, inputs);
    static_assert(std::ranges::input_range<decltype(r)>);
    static_assert(std::input_iterator<std::ranges::iterator_t<decltype(r)>>);
    static_assert(std::is_same_v<std::ranges::range_value_t<decltype(r)>, int>);
    static_assert(std::is_same_v<std::ranges::range_reference_t<decltype(r)>, int&>);

    // Moving the range after begin() keeps the iterator valid.
    auto it = r.begin();
    CHECK(*it == 2);
    auto moved = std::move(r);
    ++it;
    CHECK(*it == 3);
    CHECK(*moved.begin() == 3);  // begin() again: the current position
    ++it;
    CHECK(*it == 4);
    ++it;
    CHECK(it == moved.end());

    // Works with the standard range adaptors.
    std::vector<int> firsts;
    auto counting = thread_imap(ex, [](int i) { return i; }, std::views::iota(0, 1000));
    for (int x : counting | std::views::take(5)) firsts.push_back(x);
    CHECK(firsts == std::vector<int>{0, 1, 2, 3, 4});
}

TEST_CASE("imap picks chunk and in_flight from the workers when given 0", "[imap]") {
    Executor ex(2);
    auto id = [](int i) { return i; };
    auto sized = thread_imap(ex, id, std::views::iota(0, 800));
    CHECK(sized.chunk_size() == 64);  // 800 / (2 * 4) = 100, at most 64
    CHECK(sized.in_flight() == 4);
    CHECK(thread_imap(ex, id, std::views::iota(0, 40)).chunk_size() == 5);
    CHECK(thread_imap(ex, id, std::views::iota(0, 3)).chunk_size() == 1);
    CHECK(thread_imap(ex, id, std::views::iota(0)).chunk_size() == 1);  // unknown length
    auto given = thread_imap(ex, id, std::views::iota(0, 800), {.chunk = 7, .in_flight = 3});
    CHECK(given.chunk_size() == 7);
    CHECK(given.in_flight() == 3);
}

TEST_CASE("imap draws inputs lazily, at most in_flight chunks ahead", "[imap]") {
    Executor ex(2);
    for (crew::MapOptions options : {crew::MapOptions{.chunk = 1, .in_flight = 1},
                                     crew::MapOptions{.chunk = 4, .in_flight = 3},
                                     crew::MapOptions{.chunk = 5, .in_flight = 0}}) {
        std::size_t drawn = 0;  // drawn on this thread only: the range draws in begin()/++
        auto counted = std::views::iota(0) | std::views::transform([&drawn](int i) {
                           ++drawn;
                           return i;
                       });
        auto r = thread_imap(ex, [](int i) { return 2 * i; }, counted, options);
        CHECK(drawn == 0);  // nothing before begin()
        const std::size_t bound = r.in_flight() * r.chunk_size();
        std::size_t yielded = 0;
        std::size_t most_ahead = 0;
        for (int x : r) {
            CHECK(x == static_cast<int>(2 * yielded));
            ++yielded;
            most_ahead = std::max(most_ahead, drawn - yielded);
            CHECK(drawn <= yielded + bound);
            if (yielded == 300) break;  // an unbounded input: stop here
        }
        CHECK(yielded == 300);
        if (bound > 1) CHECK(most_ahead > 0);  // it does run ahead of the consumer
        CHECK(drawn <= 300 + bound);
    }
}

TEST_CASE("imap draws from an input range that is not forward", "[imap]") {
    Executor ex(2);
    std::string text;
    for (int i = 1; i <= 200; ++i) text += std::to_string(i) + " ";
    std::istringstream stream(text);
    auto numbers = std::ranges::istream_view<int>(stream);
    static_assert(!std::ranges::forward_range<decltype(numbers)>);
    long total = 0;
    std::vector<int> order;
    for (int x : thread_imap(ex, [](int i) { return i * 10; }, std::move(numbers), {.chunk = 3, .in_flight = 2})) {
        total += x;
        order.push_back(x);
    }
    CHECK(total == 10L * 200 * 201 / 2);
    CHECK(std::ranges::is_sorted(order));

    // Lines of a "file", converted as they are drawn.
    std::istringstream lines("alpha\nbeta\ngamma\n");
    std::vector<std::size_t> lengths;
    for (auto n : thread_imap(ex, [](const Line& l) { return l.text.size(); }, std::ranges::istream_view<Line>(lines)))
        lengths.push_back(n);
    CHECK(lengths == std::vector<std::size_t>{5, 4, 5});
}

TEST_CASE("imap keeps an rvalue container and yields move-only and bool results", "[imap]") {
    Executor ex(2);
    auto owned = thread_imap(ex, [](const std::string& s) { return s + "!"; },
                             std::vector<std::string>{"a", "b", "c"}, {.chunk = 2});
    std::vector<std::string> out;
    std::ranges::copy(owned, std::back_inserter(out));
    CHECK(out == std::vector<std::string>{"a!", "b!", "c!"});

    std::vector<std::unique_ptr<int>> boxes;
    for (auto& box : thread_imap(ex, [](int i) { return std::make_unique<int>(i); }, std::views::iota(0, 10)))
        boxes.push_back(std::move(box));
    REQUIRE(boxes.size() == 10);
    CHECK(*boxes[9] == 9);

    std::vector<bool> even;
    for (bool b : thread_imap(ex, [](int i) { return i % 2 == 0; }, std::views::iota(0, 6), {.chunk = 4}))
        even.push_back(b);
    CHECK(even == std::vector<bool>{true, false, true, false, true, false});
}

TEST_CASE("imap throws a failure at its turn and cancels the rest", "[imap]") {
    Executor ex(1);
    Gate gate;
    Ran ran;
    auto f = [&](int i) {
        ran.add(i);
        if (i == 5) throw std::invalid_argument("input 5 is bad");
        if (i == 6) gate.wait();  // holds the only worker until the failure was seen
        return i;
    };
    auto r = thread_imap(ex, f, std::views::iota(0, 100), {.chunk = 1, .in_flight = 4});
    std::vector<int> before;
    auto it = r.begin();
    bool threw = false;
    try {
        for (; it != r.end(); ++it) {
            before.push_back(*it);
            // Before the failure is seen, let 6 begin (it holds the worker):
            // were 6 still queued at the cancel, the worker could take 7
            // before 7's own cancel, a legitimate order this test is not about.
            const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
            while (*it == 4 && ran.get().count(6) == 0 && std::chrono::steady_clock::now() < deadline)
                std::this_thread::yield();
        }
    } catch (const std::invalid_argument& e) {
        threw = true;
        CHECK(std::string(e.what()) == "input 5 is bad");
    }
    gate.release();
    ex.wait_idle();
    CHECK(threw);
    CHECK(before == std::vector<int>{0, 1, 2, 3, 4});  // every earlier result first
    CHECK(it == r.end());                             // the range ended
    CHECK(r.begin() == r.end());
    // 6 was running; 7 and 8 were queued and were cancelled.
    const auto ran_inputs = ran.get();
    CHECK(ran_inputs.count(7) == 0);
    CHECK(ran_inputs.count(8) == 0);
    CHECK(*ran_inputs.rbegin() <= 6);
}

TEST_CASE("imap loses the results that share a chunk with the failure, not earlier ones", "[imap]") {
    Executor ex(2);
    auto f = [](int i) {
        if (i == 10) throw std::runtime_error("ten");
        return i;
    };
    std::vector<int> before;
    CHECK_THROWS_WITH(
        [&] {
            for (int x : thread_imap(ex, f, std::views::iota(0, 40), {.chunk = 4, .in_flight = 2})) before.push_back(x);
        }(),
        "ten");
    CHECK(before == std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7});  // the chunk 8..11 failed as one

    // A failure in the first chunk comes out of begin().
    auto first = thread_imap(ex, f, std::views::iota(10, 20), {.chunk = 1});
    CHECK_THROWS_WITH(first.begin(), "ten");
    CHECK(first.begin() == first.end());
}

TEST_CASE("imap reports a failure to draw or to submit at its turn", "[imap]") {
    Executor ex(2);
    // The input range throws while drawing input 7.
    auto throwing = std::views::iota(0, 20) | std::views::transform([](int i) {
                        if (i == 7) throw std::out_of_range("cannot read input 7");
                        return i;
                    });
    std::vector<int> got;
    CHECK_THROWS_AS(
        [&] {
            for (int x : thread_imap(ex, [](int i) { return i; }, throwing, {.chunk = 2, .in_flight = 2}))
                got.push_back(x);
        }(),
        std::out_of_range);
    CHECK(got == std::vector<int>{0, 1, 2, 3, 4, 5});  // 6 shared the chunk that could not be formed

    // The submitter throws on its third chunk (an executor shut down, say).
    int calls = 0;
    auto r = crew::detail::make_imap<int>(
        std::views::iota(0, 100),
        [&](std::vector<int>&& chunk) {
            if (++calls == 3) throw crew::ExecutorShutdown();
            return ex.submit([c = std::move(chunk)] { return c; });
        },
        crew::MapOptions{.chunk = 5, .in_flight = 2}, ex.size());
    got.clear();
    CHECK_THROWS_AS(
        [&] {
            for (int x : r) got.push_back(x);
        }(),
        crew::ExecutorShutdown);
    CHECK(got.size() == 10);
    CHECK(calls == 3);  // nothing drawn or submitted after the failure
}

TEST_CASE("destroying imap early cancels what has not started and does not wait", "[imap]") {
    Executor ex(1);
    Gate gate;
    Ran ran;
    auto f = [&](int i) {
        ran.add(i);
        if (i == 1) gate.wait();
        return i;
    };
    {
        auto r = thread_imap(ex, f, std::views::iota(0, 1000), {.chunk = 1, .in_flight = 4});
        auto it = r.begin();
        CHECK(*it == 0);
        // 1 runs (held at the gate), 2..3 are queued; the range goes now,
        // without waiting for 1. (Wait until 1 began: were it still queued,
        // cancelling it would free the worker for 2 and 3 before their own
        // cancel, a legitimate order this test is not about.)
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
        while (ran.get().count(1) == 0 && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
        REQUIRE(ran.get().count(1) == 1);
    }
    gate.release();
    ex.wait_idle();
    const auto ran_inputs = ran.get();
    CHECK(ran_inputs.count(2) == 0);
    CHECK(ran_inputs.count(3) == 0);
    CHECK(*ran_inputs.rbegin() <= 1);

    // A range never iterated draws and submits nothing.
    std::size_t drawn = 0;
    {
        auto r = thread_imap(ex, f, std::views::iota(0, 10) | std::views::transform([&](int i) {
                                        ++drawn;
                                        return i;
                                    }));
    }
    CHECK(drawn == 0);
}

TEST_CASE("imap from a task of the same executor", "[imap]") {
    Executor ex(2);
    auto outer = ex.submit([&ex] {
        long sum = 0;
        for (int x : thread_imap(ex, [](int i) { return i; }, std::views::iota(0, 200), {.chunk = 7}))
            sum += x;
        return sum;
    });
    REQUIRE(outer.wait_for(60s));
    CHECK(outer.get() == 199L * 200 / 2);
}
