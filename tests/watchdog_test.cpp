// The test watchdog of catch_main.cpp: a test case that hangs fails with its
// name instead of stalling CTest (the `watchdog_fires` test runs the hidden
// case below with a 1 s limit and looks for the message).

#include <csignal>
#include <cstdlib>

#include <sys/wait.h>
#include <unistd.h>

#include "catch.hpp"

TEST_CASE("the watchdog lets a test case that ends in time pass", "[watchdog]") { CHECK(true); }

TEST_CASE("a case that hangs", "[.watchdog]") {
    const pid_t child = ::fork();
    if (child == 0) {
        ::pause();  // the watchdog kills it
        ::_exit(0);
    }
    REQUIRE(child > 0);
    ::pause();  // this never returns: the watchdog aborts the process
}
