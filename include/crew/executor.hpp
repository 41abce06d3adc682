// crew/executor.hpp — the crew::executor concept both executors model.
//
// Write generic code against it and swap ThreadExecutor<> for
// ProcessExecutor<> with one template argument:
//
//     template <crew::executor Ex> int job(Ex& ex) {
//         return ex.submit(square, 7).get();
//     }
#pragma once

#include <chrono>
#include <concepts>
#include <cstddef>
#include <vector>

#include <crew/future.hpp>
#include <crew/options.hpp>

namespace crew {

/// An executor runs functions on workers and hands back crew::Futures.
template <class E>
concept executor = requires(E& e, const E& ce, int (*fn)(int), void (*proc)(), const std::vector<int>& inputs) {
    { e.submit(fn, 1) } -> std::same_as<Future<int>>;
    { e.submit(proc) } -> std::same_as<Future<void>>;
    e.post(fn, 1);
    { e.map(fn, inputs) } -> std::same_as<std::vector<int>>;
    { e.map(fn, inputs, std::size_t{16}) } -> std::same_as<std::vector<int>>;
    e.shutdown();
    e.shutdown(Shutdown::cancel_pending);
    e.shutdown(Shutdown::kill);
    e.wait_idle();
    { e.wait_idle_for(std::chrono::milliseconds(1)) } -> std::same_as<bool>;
    { ce.stats() } -> std::same_as<Stats>;
    { ce.size() } -> std::convertible_to<std::size_t>;
};

}  // namespace crew
