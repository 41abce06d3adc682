// crew/remote_exception.hpp — crew::register_exception<E>(): make an exception
// type of yours, thrown by a task in a worker process, come back to the
// caller as itself.
//
// What comes back as itself with no registration (the exact dynamic type, by
// demangled name, with what()): std::exception, std::logic_error and
// std::invalid_argument, std::domain_error, std::length_error,
// std::out_of_range; std::runtime_error and std::range_error,
// std::overflow_error, std::underflow_error; std::system_error and
// std::ios_base::failure with their error code (generic, system, iostream and
// future categories kept; another category's value is kept under the generic
// category, with the original what()); std::future_error; std::bad_alloc,
// std::bad_array_new_length, std::bad_cast, std::bad_typeid,
// std::bad_exception, std::bad_weak_ptr, std::bad_any_cast,
// std::bad_optional_access, std::bad_variant_access, std::bad_function_call
// (these carry their standard what(), not the remote one); and crew's own
// errors (crew::Error and every subclass; WorkerDied keeps exit_code() and
// signal(), RemoteError its type_name() and message()).
//
// Anything else comes back as crew::RemoteError(type_name, what), also a type
// derived from a standard one that was not registered: RemoteError is a
// crew::Error, itself a std::runtime_error, so `catch (std::runtime_error&)`
// still catches it but `catch (MyError&)` does not until MyError is
// registered.
#pragma once

#include <exception>
#include <mutex>
#include <string>
#include <type_traits>
#include <typeinfo>
#include <unordered_map>
#include <utility>

#include "crew/detail/demangle.hpp"

namespace crew {

namespace detail {

/// Makes an exception of a registered type from the remote what().
using ExceptionFactory = std::exception_ptr (*)(const std::string& what);

/// Registered exception types by demangled name. Thread-safe.
class ExceptionRegistry {
public:
    void add(std::string name, ExceptionFactory make) {
        const std::lock_guard lock(mutex_);
        types_.insert_or_assign(std::move(name), make);
    }
    /// The factory registered under `name`, or nullptr.
    [[nodiscard]] ExceptionFactory find(const std::string& name) const {
        const std::lock_guard lock(mutex_);
        const auto it = types_.find(name);
        return it == types_.end() ? nullptr : it->second;
    }

private:
    mutable std::mutex mutex_;
    std::unordered_map<std::string, ExceptionFactory> types_;
};

/// The process-wide registry. Never destroyed, so a worker or a thread that
/// decodes during static destruction still finds it.
inline ExceptionRegistry& exception_registry() {
    static auto* registry = new ExceptionRegistry;  // NOLINT: leaked on purpose
    return *registry;
}

template <class E>
std::exception_ptr make_registered(const std::string& what) {
    if constexpr (std::is_constructible_v<E, const std::string&>)
        return std::make_exception_ptr(E(what));
    else
        return std::make_exception_ptr(E(what.c_str()));
}

}  // namespace detail

/// Lets exceptions of type E thrown by a task in a worker process be rethrown
/// in the caller as E (constructed from the remote what()), instead of as
/// crew::RemoteError.
///
/// E derives from std::exception and is constructible from std::string or
/// const char*, from which it should reproduce its what(). Only the exact
/// type is matched (by demangled name): a subclass of E needs its own call.
///
/// When: in the process that calls get(), before the exception arrives;
/// typically at the start of main(), after crew::Session and before creating
/// the executor. Workers need nothing: they send the type's name, message and
/// (for std::system_error) code, and the caller rebuilds the exception.
/// Thread-safe; calling it again for the same type does nothing new.
///
/// Cost: one map insertion under a mutex; decoding a remote exception is one
/// lookup by name.
template <class E>
void register_exception() {
    static_assert(std::is_class_v<E> && std::is_base_of_v<std::exception, E>,
                  "crew::register_exception<E>: E must be a class derived from std::exception");
    static_assert(!std::is_abstract_v<E>, "crew::register_exception<E>: E must not be abstract");
    static_assert(std::is_constructible_v<E, const std::string&> || std::is_constructible_v<E, const char*>,
                  "crew::register_exception<E>: E must be constructible from std::string or const char* "
                  "(it is rebuilt from the remote what())");
    detail::exception_registry().add(detail::demangle(typeid(E).name()), &detail::make_registered<E>);
}

}  // namespace crew
