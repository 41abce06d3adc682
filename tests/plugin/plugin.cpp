// A shared library that uses crew, loaded with dlopen() by a host program
// that knows nothing of crew (tests/plugin/host.cpp): no crew::Session in its
// main(). Spawned or fork-server workers would be fresh copies of the *host*,
// so crew must refuse those start methods with a clear error; Start::fork
// works.
#include <cstdio>
#include <exception>

#include <crew/crew.hpp>

namespace {
int triple(int x) { return 3 * x; }
}  // namespace

/// Runs triple(14) on a ProcessExecutor started with `start` (0 fork,
/// 1 fork_server, 2 spawn): the result, or -1 with the error in `message`.
extern "C" int crew_plugin_run(int start, char* message, std::size_t size) {
    try {
        crew::ProcessExecutor<> ex(1, crew::Options{.start = static_cast<crew::Start>(start)});
        return ex.submit(triple, 14).get();
    } catch (const std::exception& e) {
        std::snprintf(message, size, "%s", e.what());
        return -1;
    }
}
