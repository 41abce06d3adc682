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
//
// It is an alarm() and a signal handler, not a thread: a thread would be in
// ThreadSanitizer's books when a test forks, and a child that starts threads
// of its own then dies with "dup thread". The handler only makes
// async-signal-safe calls: it writes, forks a shell that prints the stacks
// and kills the descendants, waits for it, and aborts.
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

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

namespace crew_test {
namespace {

// Prints the stacks of process $1 and of its descendants (gdb, when
// installed), then SIGKILLs the descendants; never itself.
constexpr const char* hang_script = R"sh(
p=$1
below() {
  for c in $(cat /proc/$1/task/*/children 2>/dev/null); do
    [ "$c" = "$$" ] || { echo $c; below $c; }
  done
}
all=$(below $p)
for q in $p $all; do
  if [ -x /usr/bin/gdb ]; then
    echo "--- stacks of process $q" >&2
    timeout 60 /usr/bin/gdb -p $q -batch -nx -ex 'thread apply all bt' </dev/null >&2 2>/dev/null
  fi
done
[ -z "$all" ] || kill -9 $all 2>/dev/null
)sh";

unsigned case_timeout() {
    const char* text = std::getenv("CREW_TEST_CASE_TIMEOUT");
    const long seconds = text != nullptr ? std::atol(text) : 0;
    return seconds > 0 ? static_cast<unsigned>(seconds) : 300;
}

// What the handler reads; written by the main thread before alarm() arms it.
char hung_message[768];
std::size_t hung_length = 0;
char pid_text[16];

void say(const char* text) { (void)!::write(STDERR_FILENO, text, std::strlen(text)); }

extern "C" void on_hang(int) {
    (void)!::write(STDERR_FILENO, hung_message, hung_length);
    (void)::prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0);  // let gdb attach where Yama restricts ptrace
    // The raw system call, not fork(): ThreadSanitizer's fork() takes locks
    // of its own, which a signal handler may find held.
    const auto helper = static_cast<pid_t>(::syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0));
    if (helper == 0) {
        ::execl("/bin/sh", "sh", "-c", hang_script, "crew-test-watchdog", pid_text, static_cast<char*>(nullptr));
        ::_exit(127);
    }
    if (helper > 0) {
        int status = 0;
        while (::waitpid(helper, &status, 0) == -1 && errno == EINTR) {
        }
    }
    say("crew test watchdog: aborting\n");
    std::abort();
}

/// Arms the alarm for each test case, disarms it when the case ends.
class Watchdog final : public ListenerBase {
public:
    explicit Watchdog(const Catch::ReporterConfig& config) : ListenerBase(config), limit_(case_timeout()) {
        const std::string pid = std::to_string(::getpid());
        std::memcpy(pid_text, pid.c_str(), pid.size() + 1);
        struct sigaction action {};
        action.sa_handler = on_hang;
        action.sa_flags = SA_RESTART;
        ::sigemptyset(&action.sa_mask);
        ::sigaction(SIGALRM, &action, nullptr);
    }

    void testCaseStarting(const Catch::TestCaseInfo& info) override {
        const std::string text = "\ncrew test watchdog: test case \"" + info.name + "\" still runs after " +
                                 std::to_string(limit_) + " s; stacks follow, then abort\n";
        hung_length = std::min(text.size(), sizeof hung_message);
        std::memcpy(hung_message, text.data(), hung_length);
        ::alarm(limit_);
    }

    void testCaseEnded(const Catch::TestCaseStats& stats) override {
        ::alarm(0);
        ListenerBase::testCaseEnded(stats);
    }

private:
    unsigned limit_;
};

}  // namespace
}  // namespace crew_test

using crew_test::Watchdog;
CATCH_REGISTER_LISTENER(Watchdog)

int main(int argc, char** argv) {
    crew::Session session(argc, argv);
    return Catch::Session().run(argc, argv);
}
