// crew/initializer.hpp — crew::initializer(f, args...): an
// Options::initializer that passes arguments (Python's initializer +
// initargs).
//
// When: each worker needs values main() computed before the executor was
// made (a path, a model's size, a seed), and a global would not reach a
// spawned worker. A plain `.initializer = &setup` needs no header;
// <crew/process_executor.hpp>, <crew/mpi.hpp> and <crew/crew.hpp> include
// this one.
//
// Cost: the arguments are encoded once, here; each new worker process decodes
// its own copy (threads use the copy made here, without encoding).
#pragma once

#include <type_traits>
#include <utility>

#include <crew/detail/remote_call.hpp>
#include <crew/options.hpp>

namespace crew {

/// An initializer that runs `f(args...)` once in each new worker:
/// `crew::Options{.initializer = crew::initializer(&load_table, path, 256)}`.
/// `f` is a plain function; the arguments are copied now and must be
/// encodable (they travel to worker processes as a task's do).
template <class... Params, class... Args>
Initializer initializer(void (*f)(Params...), Args&&... args) {
    static_assert(sizeof...(Params) == sizeof...(Args),
                  "crew::initializer: give one argument per parameter of the function");
    static_assert(std::is_invocable_v<void (*)(Params...), const std::decay_t<Args>&...>,
                  "crew::initializer: the arguments do not fit the function's parameters");
    using Function = void (*)(Params...);
    auto call = detail::encode_call<&detail::call_trampoline<Function, std::decay_t<Args>...>>(f, args...);
    return Initializer::bound([f, ... copies = std::decay_t<Args>(std::forward<Args>(args))] { f(copies...); },
                              std::move(call));
}

}  // namespace crew
