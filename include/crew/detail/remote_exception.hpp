// crew/detail/remote_exception.hpp — an exception thrown by a task in a
// worker process, as bytes, and rebuilt in the caller as its own type.
//
// encode_exception(w, e) runs in the worker: it writes the exception's
// dynamic type (demangled name), what(), and what its type needs besides (a
// std::system_error's code, a WorkerDied's exit code and signal, a
// RemoteError's own type name and message). decode_exception(r) runs in the
// caller: it rebuilds a standard exception, one of crew's errors or a type
// registered with crew::register_exception<E>() as that exact type, and
// anything else as crew::RemoteError(type_name, what). The list of types is
// in crew/remote_exception.hpp.
//
// Format (crew::Codec encodings, in order): std::string type name,
// std::string what, uint8 extra, then by extra: 0 nothing; 1 int32 code
// value, uint8 category (0 generic, 1 system, 2 iostream, 3 future, 4 other),
// std::string category name; 2 int32 exit code, int32 signal; 3 std::string
// type name, std::string message (of the RemoteError being forwarded).
#pragma once

#include <any>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <future>
#include <ios>
#include <memory>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <typeinfo>
#include <unordered_map>
#include <variant>
#include <vector>

#include <cxxabi.h>

#include "crew/codec.hpp"
#include "crew/detail/demangle.hpp"
#include "crew/errors.hpp"
#include "crew/remote_exception.hpp"

namespace crew::detail {

/// What the worker sends besides type name and what().
enum class RemoteExtra : std::uint8_t { none = 0, error_code = 1, worker_died = 2, remote_error = 3 };
/// A std::error_code's category, for the categories both sides share.
enum class RemoteCategory : std::uint8_t { generic = 0, system = 1, iostream = 2, future = 3, other = 4 };

/// A remote exception as it travels.
struct RemoteException {
    std::string type_name;
    std::string what;
    RemoteExtra extra = RemoteExtra::none;
    std::int32_t code = 0;  // error_code
    RemoteCategory category = RemoteCategory::generic;
    std::string category_name;
    std::int32_t exit_code = 0;  // worker_died
    std::int32_t signal = 0;
    std::string inner_type;  // remote_error
    std::string inner_message;
};

inline RemoteCategory category_id(const std::error_category& c) noexcept {
    if (c == std::generic_category()) return RemoteCategory::generic;
    if (c == std::system_category()) return RemoteCategory::system;
    if (c == std::iostream_category()) return RemoteCategory::iostream;
    if (c == std::future_category()) return RemoteCategory::future;
    return RemoteCategory::other;
}

inline void set_code(RemoteException& x, const std::error_code& ec) {
    x.extra = RemoteExtra::error_code;
    x.code = ec.value();
    x.category = category_id(ec.category());
    x.category_name = ec.category().name();
}

/// The exception in e, described for the wire (worker side).
inline RemoteException describe_remote(const std::exception_ptr& e) {
    RemoteException x;
    if (!e) {
        x.type_name = "unknown exception";
        x.what = "crew: the task failed without an exception object";
        return x;
    }
    try {
        std::rethrow_exception(e);
    } catch (const std::exception& ex) {
        x.type_name = demangle(typeid(ex).name());
        x.what = ex.what();
        if (const auto* se = dynamic_cast<const std::system_error*>(&ex)) {
            set_code(x, se->code());
        } else if (const auto* fe = dynamic_cast<const std::future_error*>(&ex)) {
            set_code(x, fe->code());
        } else if (const auto* wd = dynamic_cast<const WorkerDied*>(&ex)) {
            x.extra = RemoteExtra::worker_died;
            x.exit_code = wd->exit_code();
            x.signal = wd->signal();
        } else if (const auto* re = dynamic_cast<const RemoteError*>(&ex)) {
            x.extra = RemoteExtra::remote_error;
            x.inner_type = re->type_name();
            x.inner_message = re->message();
        }
    } catch (...) {  // not a std::exception (throw 42): its type's name only
        const std::type_info* t = abi::__cxa_current_exception_type();
        x.type_name = t != nullptr ? demangle(t->name()) : std::string("unknown exception");
    }
    return x;
}

inline void write_remote(Writer& w, const RemoteException& x) {
    w.write_value(x.type_name);
    w.write_value(x.what);
    w.write_value(static_cast<std::uint8_t>(x.extra));
    switch (x.extra) {
    case RemoteExtra::none:
        break;
    case RemoteExtra::error_code:
        w.write_value(x.code);
        w.write_value(static_cast<std::uint8_t>(x.category));
        w.write_value(x.category_name);
        break;
    case RemoteExtra::worker_died:
        w.write_value(x.exit_code);
        w.write_value(x.signal);
        break;
    case RemoteExtra::remote_error:
        w.write_value(x.inner_type);
        w.write_value(x.inner_message);
        break;
    }
}

/// Worker side: append the exception in `e` to `w`. Never throws. If it
/// cannot be described (out of memory), a short fixed record is written
/// instead (a crew::RemoteError in the caller); should even that fail, `w`
/// is left as it was and the caller's decode reports a crew::CodecError, so
/// the failure still reaches the task's future.
inline void encode_exception(Writer& w, const std::exception_ptr& e) noexcept {
    try {
        std::vector<std::byte> bytes;
        Writer local(bytes);
        write_remote(local, describe_remote(e));
        w.write(bytes.data(), bytes.size());  // all or nothing: vector insert is strongly exception-safe
        return;
    } catch (...) {
    }
    try {
        std::vector<std::byte> bytes;
        Writer local(bytes);
        RemoteException x;
        x.type_name = "unknown exception";
        x.what = "crew: the worker could not encode the exception the task threw (out of memory?)";
        write_remote(local, x);
        w.write(bytes.data(), bytes.size());
    } catch (...) {  // see above: the caller's decode fails with CodecError
    }
}

inline RemoteException read_remote(Reader& r) {
    RemoteException x;
    x.type_name = r.read_value<std::string>();
    x.what = r.read_value<std::string>();
    const auto extra = r.read_value<std::uint8_t>();
    switch (extra) {
    case static_cast<std::uint8_t>(RemoteExtra::none):
        break;
    case static_cast<std::uint8_t>(RemoteExtra::error_code): {
        x.code = r.read_value<std::int32_t>();
        const auto category = r.read_value<std::uint8_t>();
        if (category > static_cast<std::uint8_t>(RemoteCategory::other))
            throw CodecError("crew: a remote exception's error category id " + std::to_string(category) +
                             " is out of range; the message is malformed");
        x.category = static_cast<RemoteCategory>(category);
        x.category_name = r.read_value<std::string>();
        break;
    }
    case static_cast<std::uint8_t>(RemoteExtra::worker_died):
        x.exit_code = r.read_value<std::int32_t>();
        x.signal = r.read_value<std::int32_t>();
        break;
    case static_cast<std::uint8_t>(RemoteExtra::remote_error):
        x.inner_type = r.read_value<std::string>();
        x.inner_message = r.read_value<std::string>();
        break;
    default:
        throw CodecError("crew: a remote exception's record kind " + std::to_string(extra) +
                         " is unknown; the message is malformed");
    }
    x.extra = static_cast<RemoteExtra>(extra);
    return x;
}

inline std::error_code remote_code(const RemoteException& x) {
    switch (x.category) {
    case RemoteCategory::system:
        return {x.code, std::system_category()};
    case RemoteCategory::iostream:
        return {x.code, std::iostream_category()};
    case RemoteCategory::future:
        return {x.code, std::future_category()};
    case RemoteCategory::generic:
    case RemoteCategory::other:  // the value, under a category this process has
        break;
    }
    return {x.code, std::generic_category()};
}

/// The what_arg that makes a std::system_error built from `ec` say `what`
/// again (its what() is what_arg + ": " + ec.message()); nullopt when `what`
/// is ec.message() alone (built without a what_arg).
inline std::optional<std::string> what_arg_for(const std::string& what, const std::error_code& ec) {
    const std::string suffix = ": " + ec.message();
    if (what.size() >= suffix.size() && what.compare(what.size() - suffix.size(), suffix.size(), suffix) == 0)
        return what.substr(0, what.size() - suffix.size());
    if (what == ec.message()) return std::nullopt;
    return what;  // another category's message: keep the original text in full
}

using Rebuild = std::exception_ptr (*)(const RemoteException&);

template <class E>
std::exception_ptr rebuild_with_what(const RemoteException& x) {
    return std::make_exception_ptr(E(x.what));
}
template <class E>
std::exception_ptr rebuild_default(const RemoteException&) {
    return std::make_exception_ptr(E());
}

inline std::exception_ptr rebuild_system_error(const RemoteException& x) {
    if (x.extra != RemoteExtra::error_code) return std::make_exception_ptr(std::system_error(std::error_code(), x.what));
    const std::error_code ec = remote_code(x);
    const auto arg = x.category == RemoteCategory::other ? std::optional<std::string>(x.what) : what_arg_for(x.what, ec);
    return std::make_exception_ptr(arg ? std::system_error(ec, *arg) : std::system_error(ec));
}

inline std::exception_ptr rebuild_ios_failure(const RemoteException& x) {
    if (x.extra != RemoteExtra::error_code) return std::make_exception_ptr(std::ios_base::failure(x.what));
    const std::error_code ec = remote_code(x);
    const auto arg = x.category == RemoteCategory::other ? std::optional<std::string>(x.what) : what_arg_for(x.what, ec);
    return std::make_exception_ptr(std::ios_base::failure(arg.value_or(std::string()), ec));
}

inline std::exception_ptr rebuild_future_error(const RemoteException& x) {
    if (x.extra == RemoteExtra::error_code && x.category == RemoteCategory::future)
        return std::make_exception_ptr(std::future_error(static_cast<std::future_errc>(x.code)));
    return std::make_exception_ptr(RemoteError(x.type_name, x.what));
}

inline std::exception_ptr rebuild_worker_died(const RemoteException& x) {
    return std::make_exception_ptr(WorkerDied(x.what, x.exit_code, x.signal));
}

inline std::exception_ptr rebuild_remote_error(const RemoteException& x) {
    if (x.extra == RemoteExtra::remote_error)
        return std::make_exception_ptr(RemoteError(x.inner_type, x.inner_message));
    return std::make_exception_ptr(RemoteError(x.type_name, x.what));
}

template <class E>
std::pair<std::string, Rebuild> entry(Rebuild f) {
    return {demangle(typeid(E).name()), f};
}

/// The types rebuilt as themselves with no registration, by demangled name
/// (from typeid, so ABI tags such as std::ios_base::failure[abi:cxx11] match).
inline const std::unordered_map<std::string, Rebuild>& builtin_exceptions() {
    static const auto* table = new std::unordered_map<std::string, Rebuild>{  // NOLINT: never destroyed
        entry<std::exception>(&rebuild_default<std::exception>),
        entry<std::logic_error>(&rebuild_with_what<std::logic_error>),
        entry<std::invalid_argument>(&rebuild_with_what<std::invalid_argument>),
        entry<std::domain_error>(&rebuild_with_what<std::domain_error>),
        entry<std::length_error>(&rebuild_with_what<std::length_error>),
        entry<std::out_of_range>(&rebuild_with_what<std::out_of_range>),
        entry<std::runtime_error>(&rebuild_with_what<std::runtime_error>),
        entry<std::range_error>(&rebuild_with_what<std::range_error>),
        entry<std::overflow_error>(&rebuild_with_what<std::overflow_error>),
        entry<std::underflow_error>(&rebuild_with_what<std::underflow_error>),
        entry<std::system_error>(&rebuild_system_error),
        entry<std::ios_base::failure>(&rebuild_ios_failure),
        entry<std::future_error>(&rebuild_future_error),
        entry<std::bad_alloc>(&rebuild_default<std::bad_alloc>),
        entry<std::bad_array_new_length>(&rebuild_default<std::bad_array_new_length>),
        entry<std::bad_cast>(&rebuild_default<std::bad_cast>),
        entry<std::bad_typeid>(&rebuild_default<std::bad_typeid>),
        entry<std::bad_exception>(&rebuild_default<std::bad_exception>),
        entry<std::bad_weak_ptr>(&rebuild_default<std::bad_weak_ptr>),
        entry<std::bad_any_cast>(&rebuild_default<std::bad_any_cast>),
        entry<std::bad_optional_access>(&rebuild_default<std::bad_optional_access>),
        entry<std::bad_variant_access>(&rebuild_default<std::bad_variant_access>),
        entry<std::bad_function_call>(&rebuild_default<std::bad_function_call>),
        entry<Error>(&rebuild_with_what<Error>),
        entry<Cancelled>(&rebuild_with_what<Cancelled>),
        entry<Timeout>(&rebuild_with_what<Timeout>),
        entry<WorkerDied>(&rebuild_worker_died),
        entry<RemoteError>(&rebuild_remote_error),
        entry<ExecutorShutdown>(&rebuild_with_what<ExecutorShutdown>),
        entry<ChannelError>(&rebuild_with_what<ChannelError>),
        entry<CodecError>(&rebuild_with_what<CodecError>),
        entry<InvalidArgument>(&rebuild_with_what<InvalidArgument>),
    };
    return *table;
}

/// The exception a decoded record stands for (caller side).
inline std::exception_ptr rebuild_exception(const RemoteException& x) {
    const auto& builtin = builtin_exceptions();
    if (const auto it = builtin.find(x.type_name); it != builtin.end()) return it->second(x);
    if (const ExceptionFactory make = exception_registry().find(x.type_name)) return make(x.what);
    return std::make_exception_ptr(RemoteError(x.type_name, x.what));
}

/// Caller side: read what encode_exception wrote and rebuild the exception
/// (see the top of this file). Throws crew::CodecError on malformed bytes.
inline std::exception_ptr decode_exception(Reader& r) { return rebuild_exception(read_remote(r)); }

}  // namespace crew::detail
