// Remote exceptions: encode_exception (worker side) and decode_exception
// (caller side), in one process. Every standard type on the list comes back
// as itself, std::system_error with its code, crew's errors with their
// fields, a registered user type as itself, anything else as
// crew::RemoteError; malformed bytes throw crew::CodecError.
#include <crew/detail/remote_exception.hpp>
#include <crew/remote_exception.hpp>

#include <any>
#include <atomic>
#include <cerrno>
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
#include <thread>
#include <typeinfo>
#include <variant>
#include <vector>

#include "catch.hpp"

namespace app {

struct Registered : std::runtime_error {
    using std::runtime_error::runtime_error;
};
struct FromCString : std::exception {
    explicit FromCString(const char* m) : message(m) {}
    const char* what() const noexcept override { return message.c_str(); }
    std::string message;
};
struct Unregistered : std::runtime_error {
    using std::runtime_error::runtime_error;
};
struct DerivedFromRegistered : Registered {
    using Registered::Registered;
};
struct ThreadRegistered : std::logic_error {
    using std::logic_error::logic_error;
};

// An error category neither process knows by address.
class CustomCategory : public std::error_category {
public:
    const char* name() const noexcept override { return "app.custom"; }
    std::string message(int v) const override { return "custom failure " + std::to_string(v); }
};
inline const CustomCategory custom_category;

}  // namespace app

namespace {

using Bytes = std::vector<std::byte>;

Bytes encode(const std::exception_ptr& e) {
    Bytes out;
    crew::Writer w(out);
    crew::detail::encode_exception(w, e);
    return out;
}

std::exception_ptr decode(const Bytes& bytes) {
    crew::Reader r(bytes);
    auto e = crew::detail::decode_exception(r);
    r.expect_end();
    return e;
}

std::exception_ptr through_the_wire(const std::exception_ptr& e) { return decode(encode(e)); }

template <class E>
std::exception_ptr through_the_wire(const E& e) {
    return through_the_wire(std::make_exception_ptr(e));
}

/// Rethrows e and returns what was caught as std::exception: its exact type
/// and message.
struct Caught {
    const std::type_info* type = nullptr;
    std::string what;
};
Caught catch_it(const std::exception_ptr& e) {
    try {
        std::rethrow_exception(e);
    } catch (const std::exception& ex) {
        return {&typeid(ex), ex.what()};
    } catch (...) {
        return {};
    }
}

/// E comes back as exactly E, with the same what().
template <class E>
void same_type_and_message(const E& original) {
    INFO(crew::detail::demangle(typeid(E).name()) << ": " << original.what());
    const Caught got = catch_it(through_the_wire(original));
    REQUIRE(got.type != nullptr);
    CHECK(*got.type == typeid(E));
    CHECK(got.what == original.what());
}

template <class E>
E rethrown_as(const std::exception_ptr& e) {
    try {
        std::rethrow_exception(e);
    } catch (const E& ex) {
        return ex;
    } catch (const std::exception& other) {
        FAIL("came back as " << crew::detail::demangle(typeid(other).name()) << ": " << other.what());
    }
    throw std::logic_error("unreachable");
}

}  // namespace

TEST_CASE("standard exceptions come back as their own type", "[remote_exception]") {
    same_type_and_message(std::exception());
    same_type_and_message(std::logic_error("logic"));
    same_type_and_message(std::invalid_argument("bad argument"));
    same_type_and_message(std::domain_error("domain"));
    same_type_and_message(std::length_error("too long"));
    same_type_and_message(std::out_of_range("index 7"));
    same_type_and_message(std::runtime_error("runtime"));
    same_type_and_message(std::range_error("range"));
    same_type_and_message(std::overflow_error("overflow"));
    same_type_and_message(std::underflow_error("underflow"));
    same_type_and_message(std::runtime_error(""));
    same_type_and_message(std::runtime_error(std::string("embedded\0nul and \xff bytes", 24)));
    same_type_and_message(std::runtime_error(std::string(100000, 'm')));

    // These carry their standard what().
    same_type_and_message(std::bad_alloc());
    same_type_and_message(std::bad_array_new_length());
    same_type_and_message(std::bad_cast());
    same_type_and_message(std::bad_typeid());
    same_type_and_message(std::bad_exception());
    same_type_and_message(std::bad_weak_ptr());
    same_type_and_message(std::bad_any_cast());
    same_type_and_message(std::bad_optional_access());
    same_type_and_message(std::bad_variant_access());
    same_type_and_message(std::bad_function_call());

    // Thrown the way the library throws them.
    CHECK(*catch_it(through_the_wire([] {
               try {
                   (void)std::optional<int>().value();
               } catch (...) {
                   return std::current_exception();
               }
               return std::exception_ptr();
           }())).type == typeid(std::bad_optional_access));
    CHECK(*catch_it(through_the_wire([] {
               try {
                   (void)std::vector<int>().at(3);
               } catch (...) {
                   return std::current_exception();
               }
               return std::exception_ptr();
           }())).type == typeid(std::out_of_range));

    // Generic code that catches a standard base still works.
    CHECK_THROWS_AS(std::rethrow_exception(through_the_wire(std::invalid_argument("x"))), std::logic_error);
    CHECK_THROWS_AS(std::rethrow_exception(through_the_wire(std::overflow_error("x"))), std::runtime_error);
}

TEST_CASE("std::system_error keeps its code, category and message", "[remote_exception]") {
    const std::error_code eio(EIO, std::generic_category());
    same_type_and_message(std::system_error(eio, "reading the file"));
    same_type_and_message(std::system_error(eio));
    same_type_and_message(std::system_error(eio, ""));
    same_type_and_message(std::system_error(ENOENT, std::system_category(), "open"));
    same_type_and_message(std::system_error(std::make_error_code(std::io_errc::stream), "stream"));

    auto e = rethrown_as<std::system_error>(through_the_wire(std::system_error(EACCES, std::system_category(), "x")));
    CHECK(e.code().value() == EACCES);
    CHECK(e.code().category() == std::system_category());
    e = rethrown_as<std::system_error>(through_the_wire(std::system_error(eio, "y")));
    CHECK(e.code() == eio);

    // Another category: the value is kept under the generic category, and the
    // original text is kept in what().
    const std::system_error custom(std::error_code(42, app::custom_category), "custom op");
    const Caught got = catch_it(through_the_wire(custom));
    REQUIRE(got.type != nullptr);
    CHECK(*got.type == typeid(std::system_error));
    CHECK(got.what.find(custom.what()) != std::string::npos);
    e = rethrown_as<std::system_error>(through_the_wire(custom));
    CHECK(e.code().value() == 42);
    CHECK(e.code().category() == std::generic_category());
}

TEST_CASE("std::ios_base::failure and std::future_error keep their codes", "[remote_exception]") {
    same_type_and_message(std::ios_base::failure("stream broke"));
    same_type_and_message(std::ios_base::failure("with code", std::error_code(EIO, std::generic_category())));
    const auto f = rethrown_as<std::ios_base::failure>(through_the_wire(std::ios_base::failure("s")));
    CHECK(f.code() == std::make_error_code(std::io_errc::stream));

    for (auto errc : {std::future_errc::broken_promise, std::future_errc::future_already_retrieved,
                      std::future_errc::promise_already_satisfied, std::future_errc::no_state}) {
        same_type_and_message(std::future_error(errc));
        CHECK(rethrown_as<std::future_error>(through_the_wire(std::future_error(errc))).code() ==
              std::make_error_code(errc));
    }
}

TEST_CASE("crew's own errors come back as themselves", "[remote_exception]") {
    same_type_and_message(crew::Error("error"));
    same_type_and_message(crew::Cancelled());
    same_type_and_message(crew::Cancelled("cancelled, custom"));
    same_type_and_message(crew::Timeout("too slow"));
    same_type_and_message(crew::ExecutorShutdown());
    same_type_and_message(crew::ChannelError("channel"));
    same_type_and_message(crew::CodecError("codec"));
    same_type_and_message(crew::InvalidArgument("invalid"));

    same_type_and_message(crew::WorkerDied("died", -1, 9));
    const auto died = rethrown_as<crew::WorkerDied>(through_the_wire(crew::WorkerDied("exit", 3, 0)));
    CHECK(died.exit_code() == 3);
    CHECK(died.signal() == 0);
    const auto killed = rethrown_as<crew::WorkerDied>(through_the_wire(crew::WorkerDied("signal", -1, 11)));
    CHECK(killed.exit_code() == -1);
    CHECK(killed.signal() == 11);

    // A RemoteError forwarded by a worker (from its own worker) is not wrapped again.
    same_type_and_message(crew::RemoteError("app::Thing", "it broke"));
    const auto re = rethrown_as<crew::RemoteError>(through_the_wire(crew::RemoteError("app::Thing", "it broke")));
    CHECK(re.type_name() == "app::Thing");
    CHECK(re.message() == "it broke");
}

TEST_CASE("other exceptions come back as crew::RemoteError with type name and message", "[remote_exception]") {
    auto re = rethrown_as<crew::RemoteError>(through_the_wire(app::Unregistered("not registered")));
    CHECK(re.type_name() == "app::Unregistered");
    CHECK(re.message() == "not registered");
    CHECK(std::string(re.what()).find("app::Unregistered") != std::string::npos);
    // Still a std::runtime_error, as the original was.
    CHECK_THROWS_AS(std::rethrow_exception(through_the_wire(app::Unregistered("u"))), std::runtime_error);

    re = rethrown_as<crew::RemoteError>(through_the_wire(std::make_exception_ptr(42)));
    CHECK(re.type_name() == "int");
    CHECK(re.message().empty());

    re = rethrown_as<crew::RemoteError>(through_the_wire(std::exception_ptr()));
    CHECK(re.type_name() == "unknown exception");
}

TEST_CASE("register_exception brings a user type back as itself", "[remote_exception]") {
    // Only the exact type registered: a subclass stays a RemoteError.
    crew::register_exception<app::Registered>();
    crew::register_exception<app::Registered>();  // again: harmless
    crew::register_exception<app::FromCString>();
    same_type_and_message(app::Registered("mine"));
    same_type_and_message(app::FromCString("from a C string"));
    const auto re = rethrown_as<crew::RemoteError>(through_the_wire(app::DerivedFromRegistered("sub")));
    CHECK(re.type_name() == "app::DerivedFromRegistered");

    // Before registration it is a RemoteError; registration from several
    // threads while others decode is safe.
    const Bytes bytes = encode(std::make_exception_ptr(app::ThreadRegistered("t")));
    CHECK(*catch_it(decode(bytes)).type == typeid(crew::RemoteError));
    std::atomic<int> as_itself{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&, t] {
            if (t == 0) crew::register_exception<app::ThreadRegistered>();
            for (int i = 0; i < 200; ++i) {
                const Caught got = catch_it(decode(bytes));
                if (got.type != nullptr && *got.type == typeid(app::ThreadRegistered)) ++as_itself;
            }
        });
    }
    for (auto& th : threads) th.join();
    CHECK(as_itself.load() > 0);
    same_type_and_message(app::ThreadRegistered("after"));
}

TEST_CASE("malformed remote exception bytes throw CodecError", "[remote_exception]") {
    const std::vector<std::exception_ptr> samples{
        std::make_exception_ptr(std::runtime_error("message")),
        std::make_exception_ptr(std::system_error(EIO, std::generic_category(), "io")),
        std::make_exception_ptr(crew::WorkerDied("died", 1, 0)),
        std::make_exception_ptr(crew::RemoteError("t", "m")),
    };
    for (const auto& e : samples) {
        const Bytes bytes = encode(e);
        for (std::size_t n = 0; n < bytes.size(); ++n) {
            INFO("prefix of " << n << " of " << bytes.size() << " bytes");
            crew::Reader r{std::span(bytes.data(), n)};
            CHECK_THROWS_AS(crew::detail::decode_exception(r), crew::CodecError);
        }
    }

    // An unknown record kind, an unknown category id, a hostile length.
    Bytes b = encode(std::make_exception_ptr(std::runtime_error("m")));
    b.back() = std::byte{9};
    CHECK_THROWS_AS(decode(b), crew::CodecError);
    b = encode(std::make_exception_ptr(std::system_error(EIO, std::generic_category(), "io")));
    const std::size_t category_at = b.size() - 8 - std::string(std::generic_category().name()).size() - 1;
    b[category_at] = std::byte{77};
    CHECK_THROWS_AS(decode(b), crew::CodecError);
    b = Bytes(8, std::byte{0xff});
    CHECK_THROWS_AS(decode(b), crew::CodecError);
    CHECK_THROWS_AS(decode(Bytes{}), crew::CodecError);
}

TEST_CASE("encode_exception appends to what the writer holds", "[remote_exception]") {
    Bytes out{std::byte{1}, std::byte{2}};
    crew::Writer w(out);
    w.write_value(std::uint32_t{7});
    crew::detail::encode_exception(w, std::make_exception_ptr(std::out_of_range("r")));
    crew::detail::encode_exception(w, std::make_exception_ptr(crew::Timeout("t")));

    crew::Reader r{std::span(out).subspan(2)};
    CHECK(r.read_value<std::uint32_t>() == 7);
    CHECK(*catch_it(crew::detail::decode_exception(r)).type == typeid(std::out_of_range));
    CHECK(*catch_it(crew::detail::decode_exception(r)).type == typeid(crew::Timeout));
    r.expect_end();
    static_assert(noexcept(crew::detail::encode_exception(w, std::exception_ptr())));
}
