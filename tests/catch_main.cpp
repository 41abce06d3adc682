// The tests' main(): crew::Session first (spawned and fork-server workers of
// the test binaries serve from it), then Catch2 (v2 or v3) runs the tests.
#if __has_include(<catch2/catch_all.hpp>)
#include <catch2/catch_session.hpp>
#else
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#endif

#include <crew/session.hpp>

int main(int argc, char** argv) {
    crew::Session session(argc, argv);
    return Catch::Session().run(argc, argv);
}
