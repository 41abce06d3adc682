// The tests' main(): crew::Session first (spawned and fork-server workers of
// the test binaries serve from it), then Catch2 (v2 or v3) runs the tests
// under a watchdog.
//
// The watchdog turns a test case that hangs into a failure that says which
// one and where: after CREW_TEST_CASE_TIMEOUT seconds (default 300, well
// above the slowest case under a sanitizer) it prints the case's name, the
// stacks of this process and of its descendants (when gdb is installed),
// kills the descendants and aborts. Without it a deadlock costs CTest's whole
// 900 s timeout and leaves only "Timeout" in the log.
#if __has_include(<catch2/catch_all.hpp>)
#include <catch2/catch_session.hpp>
#include <catch2/catch_test_case_info.hpp>
#include <catch2/reporters/catch_reporter_event_listener.hpp>
#include <catch2/reporters/catch_reporter_registrars.hpp>
namespace crew_test {
using ListenerBase = Catch::EventListenerBase;
}
#else
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
namespace crew_test {
using ListenerBase = Catch::TestEventListenerBase;
}
#endif

#include <crew/session.hpp>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "test_support.hpp"

namespace crew_test {
namespace {

std::chrono::seconds case_timeout() {
    const char* text = std::getenv("CREW_TEST_CASE_TIMEOUT");
    const long seconds = text != nullptr ? std::atol(text) : 0;
    return std::chrono::seconds(seconds > 0 ? seconds : 300);
}

/// Every process below this one, children first.
std::vector<int> descendants() {
    std::vector<int> all = child_pids();
    for (std::size_t i = 0; i < all.size(); ++i)
        for (int pid : child_pids(all[i])) all.push_back(pid);
    return all;
}

void print_stacks(int pid) {
    if (::access("/usr/bin/gdb", X_OK) != 0) return;
    const std::string command = "timeout 60 /usr/bin/gdb -p " + std::to_string(pid) +
                                " -batch -nx -ex 'thread apply all bt' </dev/null 1>&2 2>/dev/null";
    std::fprintf(stderr, "--- stacks of process %d\n", pid);
    std::fflush(stderr);
    (void)!std::system(command.c_str());
}

[[noreturn]] void hung(const std::string& name, std::chrono::seconds limit) {
    std::fprintf(stderr, "\ncrew test watchdog: test case \"%s\" still runs after %lld s; stacks follow, then abort\n",
                 name.c_str(), static_cast<long long>(limit.count()));
    std::fflush(stderr);
    (void)::prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0);  // let gdb attach where Yama restricts ptrace
    const std::vector<int> below = descendants();
    print_stacks(::getpid());
    for (int pid : below) print_stacks(pid);
    for (int pid : below) ::kill(pid, SIGKILL);
    std::abort();
}

/// One watchdog thread for the whole run; each test case rearms it.
class Watchdog final : public ListenerBase {
public:
    using ListenerBase::ListenerBase;
    ~Watchdog() override {
        {
            std::lock_guard lock(mutex_);
            stopping_ = true;
        }
        changed_.notify_one();
        if (thread_.joinable()) thread_.join();
    }

    void testCaseStarting(const Catch::TestCaseInfo& info) override {
        {
            std::lock_guard lock(mutex_);
            current_ = info.name;
            deadline_ = Clock::now() + limit_;
        }
        if (!thread_.joinable()) thread_ = std::thread([this] { watch(); });
        changed_.notify_one();
    }

    void testCaseEnded(const Catch::TestCaseStats& stats) override {
        {
            std::lock_guard lock(mutex_);
            deadline_ = Clock::time_point::max();
        }
        changed_.notify_one();
        ListenerBase::testCaseEnded(stats);
    }

private:
    using Clock = std::chrono::steady_clock;

    void watch() {
        std::unique_lock lock(mutex_);
        while (!stopping_) {
            if (Clock::now() >= deadline_) {
                const std::string name = current_;
                lock.unlock();  // Catch's SIGABRT handler ends the case: testCaseEnded locks too
                hung(name, limit_);
            }
            if (deadline_ == Clock::time_point::max()) {
                changed_.wait(lock);
            } else {
                changed_.wait_until(lock, deadline_);
            }
        }
    }

    const std::chrono::seconds limit_ = case_timeout();
    std::mutex mutex_;
    std::condition_variable changed_;
    std::string current_;
    Clock::time_point deadline_ = Clock::time_point::max();
    bool stopping_ = false;
    std::thread thread_;
};

}  // namespace
}  // namespace crew_test

using crew_test::Watchdog;
CATCH_REGISTER_LISTENER(Watchdog)

int main(int argc, char** argv) {
    crew::Session session(argc, argv);
    return Catch::Session().run(argc, argv);
}
