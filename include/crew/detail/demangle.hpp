// crew/detail/demangle.hpp — readable type names for error messages.
#pragma once

#include <cstdlib>
#include <exception>
#include <memory>
#include <string>
#include <typeinfo>

#include <cxxabi.h>

namespace crew::detail {

inline std::string demangle(const char* mangled) {
    int status = 0;
    std::unique_ptr<char, void (*)(void*)> name(abi::__cxa_demangle(mangled, nullptr, nullptr, &status), std::free);
    return status == 0 && name ? std::string(name.get()) : std::string(mangled);
}

/// The dynamic type and message of the exception in `e`.
struct ExceptionInfo {
    std::string type_name;
    std::string what;
};

inline ExceptionInfo describe(const std::exception_ptr& e) {
    try {
        std::rethrow_exception(e);
    } catch (const std::exception& ex) {
        return {demangle(typeid(ex).name()), ex.what()};
    } catch (...) {
        const std::type_info* t = abi::__cxa_current_exception_type();
        return {t != nullptr ? demangle(t->name()) : std::string("unknown exception"), ""};
    }
}

}  // namespace crew::detail
