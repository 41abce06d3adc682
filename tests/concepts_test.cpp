// Compile-time checks: what models crew::executor and crew::sync::policy.
#include <vector>

#include <crew/crew.hpp>

#include "catch.hpp"

namespace {
struct NotAnExecutor {
    int submit(int) { return 0; }
};
struct NotAPolicy {};
}  // namespace

TEST_CASE("executor and policy concepts", "[concepts]") {
    STATIC_REQUIRE(crew::executor<crew::ThreadExecutor<>>);
    STATIC_REQUIRE(crew::executor<crew::ThreadExecutor<crew::sync::Mutex>>);
    STATIC_REQUIRE(crew::executor<crew::ThreadExecutor<crew::sync::Semaphore>>);
    STATIC_REQUIRE_FALSE(crew::executor<NotAnExecutor>);
    STATIC_REQUIRE_FALSE(crew::executor<int>);
    STATIC_REQUIRE(crew::sync::policy<crew::sync::LockFree>);
    STATIC_REQUIRE(crew::sync::policy<crew::sync::Mutex>);
    STATIC_REQUIRE(crew::sync::policy<crew::sync::Semaphore>);
    STATIC_REQUIRE_FALSE(crew::sync::policy<NotAPolicy>);
    STATIC_REQUIRE(std::is_same_v<decltype(std::declval<crew::ThreadExecutor<>&>().submit([] { return 1.5; })),
                                  crew::Future<double>>);
    STATIC_REQUIRE_FALSE(std::is_copy_constructible_v<crew::Future<int>>);
    STATIC_REQUIRE(std::is_nothrow_move_constructible_v<crew::Future<int>>);
    STATIC_REQUIRE(std::is_base_of_v<crew::Error, crew::WorkerDied>);
    STATIC_REQUIRE(std::is_base_of_v<std::runtime_error, crew::Error>);
}
