// crew::compiled (CREW_SEPARATE_COMPILATION): this file uses the default
// executors without compiling them; their code comes from the library built
// from <crew/compiled.hpp>. What it must keep: every behaviour of the
// header-only build (typed exceptions, crashes, every start method, the
// channels and policies that stay header-only). The check that this file's
// object really holds none of the executors' code is the CTest
// separate_compilation_objects (tests/separate_compilation_objects.cmake).
#ifndef CREW_SEPARATE_COMPILATION
#error "separate_compilation_test.cpp is built with crew::compiled"
#endif

#include <csignal>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include <crew/crew.hpp>

#include "catch.hpp"
#include "test_support.hpp"

namespace {

int square(int x) { return x * x; }

int fail_or_crash(int x) {
    if (x == 1) throw std::invalid_argument("one is refused");
    if (x == 2) std::abort();
    return x;
}

std::string greet(const std::string& name, int times) {
    std::string out;
    for (int i = 0; i < times; ++i) out += "hello " + name + ";";
    return out;
}

template <crew::executor Ex>
void check_futures_api(Ex& ex) {
    CHECK(ex.submit(square, 7).get() == 49);
    CHECK(ex.submit(greet, std::string("crew"), 2).get() == "hello crew;hello crew;");
    CHECK(ex.map(square, std::vector<int>{1, 2, 3}) == std::vector<int>{1, 4, 9});
    int total = 0;
    for (int r : ex.imap(square, std::vector<int>{4, 5})) total += r;
    CHECK(total == 41);
    auto failed = ex.submit(fail_or_crash, 1);
    CHECK_THROWS_AS(failed.get(), std::invalid_argument);  // the same type on every executor
    auto f = ex.submit(square, 3);
    CHECK(f.then([](int v) { return v + 1; }).get() == 10);
}

}  // namespace

TEST_CASE("the default ThreadExecutor works from crew::compiled", "[separate]") {
    crew::ThreadExecutor<> ex(2);
    check_futures_api(ex);
}

TEST_CASE("the default ProcessExecutor works from crew::compiled, on every start method", "[separate]") {
    crew_test::LeakCheck leaks;
    for (crew::Start start : {crew::Start::spawn, crew::Start::fork_server, crew::Start::fork}) {
        crew::Options options;
        options.start = start;
        crew::ProcessExecutor<> ex(2, options);
        check_futures_api(ex);
        auto crashed = ex.submit(fail_or_crash, 2);
        try {
            crashed.get();
            FAIL("a crashed task returned");
        } catch (const crew::WorkerDied& e) {
            CHECK((e.signal() == SIGABRT || (crew_test::sanitized() && e.exit_code() != 0)));
        }
        CHECK(ex.submit(square, 5).get() == 25);  // a new worker took over
    }
    leaks.check();
}

TEST_CASE("executors other than the defaults stay header-only next to crew::compiled", "[separate]") {
    crew::ThreadExecutor<crew::sync::Mutex> threads(1);
    CHECK(threads.submit(square, 6).get() == 36);
    crew::ProcessExecutor<crew::ipc::Pipe> pipe(1);
    CHECK(pipe.submit(square, 8).get() == 64);
    crew::ProcessExecutor<crew::ipc::SharedMemory, crew::sync::Semaphore> semaphore(1);
    CHECK(semaphore.submit(square, 9).get() == 81);
}
