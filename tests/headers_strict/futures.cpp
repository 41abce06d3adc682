// Strict check (see check.cmake): instantiates the templates of future.hpp,
// when.hpp and detail/imap.hpp, whose warnings a header compiled alone hides.
#include <chrono>
#include <coroutine>
#include <cstddef>
#include <exception>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include <crew/detail/imap.hpp>
#include <crew/future.hpp>
#include <crew/when.hpp>

namespace strict {

struct Task {
    struct promise_type {
        Task get_return_object() noexcept { return {}; }
        std::suspend_never initial_suspend() noexcept { return {}; }
        std::suspend_never final_suspend() noexcept { return {}; }
        void return_void() noexcept {}
        void unhandled_exception() noexcept {}
    };
};

inline Task await_all(crew::Future<int> a, crew::Future<void> b, crew::Future<std::unique_ptr<int>> c) {
    int x = co_await a;
    co_await std::move(b);
    auto p = co_await std::move(c);
    *p += x;
}

inline long use_futures() {
    using namespace std::chrono;
    crew::Promise<int> pi;
    crew::Promise<void> pv;
    crew::Promise<std::string> ps;
    auto fi = pi.get_future();
    fi.on_done([] {});
    bool ok = fi.wait_for(milliseconds(1)) || fi.wait_for(hours::max()) ||
              fi.wait_until(system_clock::time_point::max()) || fi.wait_until(steady_clock::now()) ||
              fi.wait_for(duration<double>(0.5));
    auto doubled = std::move(fi).then([](int v) { return static_cast<long>(v) * 2; });
    auto tuple = crew::when_all(std::move(doubled), pv.get_future(), ps.get_future());
    std::vector<crew::Future<int>> many;
    many.push_back(crew::Promise<int>().get_future());
    auto r = crew::wait(many, crew::Return::first_completed, seconds(1));
    auto r2 = crew::wait(many, crew::Return::all_completed, hours::max());
    std::size_t n = r.done.size() + r2.not_done.size() + crew::when_any(many).get();
    for (auto& f : crew::as_completed(many)) n += f.ready() ? 1u : 0u;
    auto all = crew::when_all(many);
    await_all(crew::Promise<int>().get_future(), crew::Promise<void>().get_future(),
              crew::Promise<std::unique_ptr<int>>().get_future());
    return static_cast<long>(n) + (ok ? 1 : 0) + std::get<0>(tuple.get()) + static_cast<long>(all.get().size());
}

// clang 14 cannot check libstdc++ 12's <ranges> (its own views fail their
// concepts there), so imap is instantiated by the other compilers only.
#if !defined(__clang__) || __clang_major__ >= 15 || defined(_LIBCPP_VERSION)
inline long use_imap() {
    std::vector<int> inputs{1, 2, 3};
    auto submit = [](std::vector<int>&& chunk) {
        auto widen = [](int i) { return static_cast<long>(i); };
        crew::Promise<std::vector<long>> p;
        auto f = p.get_future();
        p.set_value(crew::detail::imap_run_chunk<long>(widen, chunk));
        return f;
    };
    long total = 0;
    for (long x : crew::detail::make_imap<long>(inputs, submit, crew::MapOptions{.chunk = 2, .in_flight = 1}, 4))
        total += x;
    return total;
}
#endif

}  // namespace strict
