// Future and Promise on their own, and the combinators, driven by promises so
// every interleaving the test wants is forced, not hoped for.
#include <atomic>
#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <crew/future.hpp>
#include <crew/when.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;

TEST_CASE("a promise completes its future once", "[future]") {
    crew::Promise<int> p;
    auto f = p.get_future();
    CHECK(f.valid());
    CHECK_FALSE(f.ready());
    CHECK_FALSE(f.wait_for(5ms));
    CHECK_FALSE(f.wait_until(std::chrono::system_clock::now() + 5ms));
    CHECK_THROWS_AS(p.get_future(), crew::Error);
    p.set_value(7);
    CHECK(f.ready());
    CHECK(f.wait_for(0ms));
    CHECK_THROWS_AS(p.set_value(8), crew::Error);
    CHECK(f.get() == 7);
    CHECK_FALSE(f.valid());
    CHECK_THROWS_AS(f.get(), crew::Error);
    CHECK_THROWS_AS(crew::Future<int>{}.wait(), crew::Error);
}

TEST_CASE("get() blocks until another thread sets the value", "[future]") {
    crew::Promise<std::string> p;
    auto f = p.get_future();
    std::thread t([&] {
        std::this_thread::sleep_for(20ms);
        p.set_value("late");
    });
    CHECK(f.get() == "late");
    t.join();
}

TEST_CASE("void futures and exceptions", "[future]") {
    crew::Promise<void> p;
    auto f = p.get_future();
    p.set_exception(std::make_exception_ptr(std::out_of_range("nope")));
    CHECK_THROWS_AS(f.get(), std::out_of_range);
}

TEST_CASE("a broken promise fails its future", "[future]") {
    crew::Future<int> f;
    {
        crew::Promise<int> p;
        f = p.get_future();
    }
    CHECK_THROWS_WITH(f.get(), Catch::Contains("broken promise"));
    crew::Promise<int> unused;  // destroyed without get_future(): no leak (ASan checks)
}

TEST_CASE("cancel succeeds only before completion", "[future]") {
    crew::Promise<int> p;
    auto f = p.get_future();
    CHECK(f.cancel());
    CHECK_FALSE(f.cancel());
    p.set_value(1);  // ignored: the consumer gave up
    CHECK_THROWS_AS(f.get(), crew::Cancelled);

    crew::Promise<int> q;
    auto g = q.get_future();
    q.set_value(2);
    CHECK_FALSE(g.cancel());
    CHECK(g.get() == 2);
}

TEST_CASE("then runs once, inline when ready, on the completing thread otherwise", "[future]") {
    crew::Promise<int> p;
    std::atomic<int> calls{0};
    std::thread::id ran_on;
    auto f = p.get_future().then([&](int x) {
        ++calls;
        ran_on = std::this_thread::get_id();
        return x * 2;
    });
    std::thread t([&] { p.set_value(21); });
    auto setter = t.get_id();
    t.join();
    CHECK(f.get() == 42);
    CHECK(calls == 1);
    CHECK(ran_on == setter);

    crew::Promise<int> ready;
    ready.set_value(1);
    auto g = ready.get_future().then([&](int x) {
        ran_on = std::this_thread::get_id();
        return x + 1;
    });
    CHECK(ran_on == std::this_thread::get_id());
    CHECK(g.get() == 2);
}

TEST_CASE("then skips on failure and carries a throwing continuation's exception", "[future]") {
    crew::Promise<int> p;
    bool ran = false;
    auto f = p.get_future().then([&](int) {
        ran = true;
        return 0;
    });
    p.set_exception(std::make_exception_ptr(std::logic_error("first")));
    CHECK_THROWS_WITH(f.get(), "first");
    CHECK_FALSE(ran);

    crew::Promise<void> q;
    auto g = q.get_future().then([] { throw std::runtime_error("in continuation"); }).then([] { return 1; });
    q.set_value();
    CHECK_THROWS_WITH(g.get(), "in continuation");
}

TEST_CASE("when_all collects in order and waits for every input", "[when]") {
    std::vector<crew::Promise<int>> ps(5);
    std::vector<crew::Future<int>> fs;
    for (auto& p : ps) fs.push_back(p.get_future());
    auto all = crew::when_all(fs);  // an lvalue vector is taken over
    for (auto& f : fs) CHECK_FALSE(f.valid());
    for (int i = 4; i >= 0; --i) {
        CHECK_FALSE(all.ready());
        ps[static_cast<std::size_t>(i)].set_value(i * 10);
    }
    CHECK(all.get() == std::vector<int>{0, 10, 20, 30, 40});

    std::vector<crew::Future<void>> vs;
    crew::Promise<void> v1, v2;
    vs.push_back(v1.get_future());
    vs.push_back(v2.get_future());
    auto both = crew::when_all(std::move(vs));
    v2.set_value();
    CHECK_FALSE(both.ready());
    v1.set_value();
    both.get();

    CHECK(crew::when_all(std::vector<crew::Future<int>>{}).get().empty());
}

TEST_CASE("when_all reports the first failure in input order", "[when]") {
    crew::Promise<int> a, b, c;
    auto all = crew::when_all(a.get_future(), b.get_future(), c.get_future());
    c.set_exception(std::make_exception_ptr(std::runtime_error("c failed")));
    b.set_exception(std::make_exception_ptr(std::runtime_error("b failed")));
    CHECK_FALSE(all.ready());
    a.set_value(1);
    CHECK_THROWS_WITH(all.get(), "b failed");
}

TEST_CASE("when_any, as_completed and wait follow completion order", "[when]") {
    std::vector<crew::Promise<int>> ps(3);
    std::vector<crew::Future<int>> fs;
    for (auto& p : ps) fs.push_back(p.get_future());
    std::thread t([&] {
        std::this_thread::sleep_for(10ms);
        ps[2].set_value(2);
        std::this_thread::sleep_for(10ms);
        ps[0].set_value(0);
        std::this_thread::sleep_for(10ms);
        ps[1].set_exception(std::make_exception_ptr(std::runtime_error("one")));
    });
    CHECK(crew::when_any(fs).get() == 2);
    auto r = crew::wait(fs, crew::Return::first_exception, std::chrono::seconds(5));
    CHECK(r.done.size() == 3);
    std::vector<std::size_t> order;
    for (auto& f : crew::as_completed(fs)) order.push_back(static_cast<std::size_t>(&f - fs.data()));
    t.join();
    CHECK(order.size() == 3);
    CHECK(fs[2].get() == 2);
    CHECK_THROWS_WITH(fs[1].get(), "one");

    std::vector<crew::Future<int>> none;
    CHECK_THROWS_AS(crew::when_any(none), crew::InvalidArgument);
    std::vector<crew::Future<int>> hollow(2);  // futures with no state
    CHECK_THROWS_AS(crew::when_all(hollow), crew::Error);
    CHECK_THROWS_AS(crew::when_all(crew::Future<int>{}, crew::Future<void>{}), crew::Error);
    auto empty = crew::wait(none, crew::Return::all_completed);
    CHECK(empty.done.empty());
}

TEST_CASE("wait honours its timeout", "[when]") {
    crew::Promise<int> p;
    std::vector<crew::Future<int>> fs;
    fs.push_back(p.get_future());
    auto start = std::chrono::steady_clock::now();
    auto r = crew::wait(fs, crew::Return::first_completed, 30ms);
    CHECK(std::chrono::steady_clock::now() - start >= 30ms);
    CHECK(r.done.empty());
    CHECK(r.not_done == std::vector<std::size_t>{0});
    p.set_value(1);
}

TEST_CASE("futures complete correctly under racing producers and waiters", "[future][stress]") {
    for (int round = 0; round < 2000; ++round) {
        crew::Promise<int> p;
        auto f = p.get_future().then([](int x) { return x + 1; });
        std::thread setter([&] { p.set_value(round); });
        CHECK(f.get() == round + 1);
        setter.join();
    }
}
