// Issue 11, the process path under attack and bad luck: the worker bootstrap,
// descriptors (inherited, 0-2), exit status whatever SIGCHLD is, the fork
// server under signals, /dev/shm short of space, and foreign shm objects.
//
// Each scenario runs in a forked child of the test process (run_isolated), so
// a signal disposition, a closed stdio or a private mount namespace stays
// there; the child reports through its exit code and its stderr, and is
// killed when it passes its deadline. Spawned and fork-server workers are
// fresh copies of this binary, serving from the crew::Session in
// tests/catch_main.cpp.
#include "catch.hpp"
#include "test_support.hpp"

#include <crew/ipc/message_queue.hpp>
#include <crew/ipc/shared_region.hpp>
#include <crew/ipc/pipe.hpp>
#include <crew/ipc/socket.hpp>
#include <crew/process_executor.hpp>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <poll.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

namespace {

using namespace std::chrono_literals;

/// Runs `body` in a forked child (its return value is the exit code; an
/// exception is exit code 99 with the message on stderr), killed after
/// `deadline`. Returns the child's wait status.
int run_isolated(const std::function<int()>& body, std::chrono::seconds deadline = 60s) {
    std::fflush(nullptr);
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        int code = 98;
        try {
            code = body();
        } catch (const std::exception& e) {
            std::fprintf(stderr, "hardening_test child: %s\n", e.what());
            code = 99;
        }
        std::fflush(nullptr);
        ::_exit(code);
    }
    const auto until = std::chrono::steady_clock::now() + deadline;
    int status = 0;
    for (;;) {
        const pid_t r = ::waitpid(pid, &status, WNOHANG);
        if (r == pid) return status;
        if (std::chrono::steady_clock::now() >= until) {
            ::kill(pid, SIGKILL);
            ::waitpid(pid, &status, 0);
            FAIL("the scenario ran past its deadline and was killed");
        }
        std::this_thread::sleep_for(5ms);  // polling the child, not ordering events
    }
}

void require_exit_0(int status) {
    INFO("wait status " << status << (WIFEXITED(status) ? " exit code " : " signal ")
                        << (WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status)));
    REQUIRE(WIFEXITED(status));
    REQUIRE(WEXITSTATUS(status) == 0);
}

int twice(int x) { return 2 * x; }
int crash() {
    // A Start::fork worker inherits Catch's signal handlers, which would
    // report the abort as a failure of its own copy of the test run.
    std::signal(SIGABRT, SIG_DFL);
    std::abort();
}
int close_everything() {
    ::syscall(SYS_close_range, 3U, ~0U, 0U);
    return 7;
}

template <class Channel>
int run_tasks(crew::Start start, int tasks) {
    crew::ProcessExecutor<Channel> ex(2, crew::Options{.start = start});
    std::vector<crew::Future<int>> results;
    for (int i = 0; i < tasks; ++i) results.push_back(ex.submit(&twice, i));
    for (int i = 0; i < tasks; ++i)
        if (results[static_cast<std::size_t>(i)].get() != 2 * i) return 3;
    return 0;
}

/// Runs this test binary again with `env_entry` added and Catch's --help,
/// `fd` (if >= 0) inherited as `fd`; returns its wait status and stderr.
std::pair<int, std::string> run_self(const std::string& env_entry, int fd) {
    int err[2];
    REQUIRE(::pipe2(err, O_CLOEXEC) == 0);
    std::vector<std::string> env_text{env_entry};
    std::vector<char*> env;
    for (char** e = environ; *e != nullptr; ++e)
        if (std::strncmp(*e, "CREW_WORKER=", 12) != 0) env.push_back(*e);
    env.push_back(env_text[0].data());
    env.push_back(nullptr);
    char arg0[] = "hardening_test";
    char arg1[] = "--help";
    char* argv[] = {arg0, arg1, nullptr};
    std::fflush(nullptr);
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        ::dup2(err[1], 2);
        const int devnull = ::open("/dev/null", O_WRONLY);
        ::dup2(devnull, 1);
        if (fd >= 0) ::fcntl(fd, F_SETFD, 0);
        ::execve("/proc/self/exe", argv, env.data());
        ::_exit(127);
    }
    ::close(err[1]);
    std::string text;
    char buf[512];
    for (ssize_t n; (n = ::read(err[0], buf, sizeof buf)) > 0;) text.append(buf, static_cast<std::size_t>(n));
    ::close(err[0]);
    int status = 0;
    ::waitpid(pid, &status, 0);
    return {status, text};
}

}  // namespace

TEST_CASE("item 1: CREW_WORKER inherited by an unrelated run only warns", "[hardening][bootstrap]") {
    SECTION("no socket behind the variable") {
        const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
        REQUIRE(null_fd >= 3);
        auto [status, err] = run_self("CREW_WORKER=" + std::to_string(null_fd) + ":00112233445566778899aabbccddeeff",
                                      null_fd);
        ::close(null_fd);
        INFO(err);
        REQUIRE(WIFEXITED(status));
        CHECK(WEXITSTATUS(status) == 0);  // --help ran: the program ran normally
        CHECK(err.find("crew: ignoring CREW_WORKER") != std::string::npos);
    }
    SECTION("a value that is not <fd>:<nonce>") {
        auto [status, err] = run_self("CREW_WORKER=shm|shm:5:1|0:0:0:0:0", -1);
        INFO(err);
        REQUIRE(WIFEXITED(status));
        CHECK(WEXITSTATUS(status) == 0);
        CHECK(err.find("crew: ignoring CREW_WORKER") != std::string::npos);
    }
    SECTION("our parent's socket with a request that does not check out: a message and exit 126") {
        int sv[2];
        REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
        const char junk[] = "not crew's magic, not the nonce either...";
        REQUIRE(::send(sv[0], junk, sizeof junk, 0) == static_cast<ssize_t>(sizeof junk));
        auto [status, err] =
            run_self("CREW_WORKER=" + std::to_string(sv[1]) + ":00112233445566778899aabbccddeeff", sv[1]);
        ::close(sv[0]);
        ::close(sv[1]);
        INFO(err);
        REQUIRE(WIFEXITED(status));
        CHECK(WEXITSTATUS(status) == 126);
        CHECK(err.find("start request") != std::string::npos);
    }
}

TEST_CASE("item 2: workers inherit only crew's own descriptors", "[hardening][fds]") {
    for (auto start : {crew::Start::spawn, crew::Start::fork_server}) {
        require_exit_0(run_isolated([start] {
            int p[2];
            if (::pipe(p) != 0) return 2;  // inheritable, as a careless program makes it
            crew::ProcessExecutor<crew::ipc::Pipe> ex(2, crew::Options{.start = start});
            if (ex.submit(&twice, 21).get() != 42) return 3;
            ::close(p[1]);
            // Only our own write end existed; the workers hold none: EOF.
            pollfd pf{p[0], POLLIN, 0};
            if (::poll(&pf, 1, 10'000) != 1) return 4;
            char c;
            return ::read(p[0], &c, 1) == 0 ? 0 : 5;
        }));
    }
}

TEST_CASE("item 3: with 0, 1 and 2 closed no channel lands there", "[hardening][fds]") {
    for (auto start : {crew::Start::spawn, crew::Start::fork_server}) {
        require_exit_0(run_isolated([start] {
            // Keep a way to complain (fd 9), then close stdio.
            ::dup2(2, 9);
            ::close(0);
            ::close(1);
            ::close(2);
            int code = run_tasks<crew::ipc::Pipe>(start, 50);
            if (code == 0) code = run_tasks<crew::ipc::Socket>(start, 50);
            if (code == 0) code = run_tasks<crew::ipc::SharedMemory>(start, 50);
            if (code != 0) (void)!::write(9, "stdio-closed scenario failed\n", 29);
            return code;
        }));
    }
}

TEST_CASE("item 13: the exit cause is right whatever the program does with SIGCHLD", "[hardening][sigchld]") {
    for (auto start : {crew::Start::spawn, crew::Start::fork_server, crew::Start::fork}) {
        for (auto disposition : {SIG_IGN, SIG_DFL}) {
            INFO("start " << static_cast<int>(start) << (disposition == SIG_IGN ? " SIG_IGN" : " SIG_DFL"));
            require_exit_0(run_isolated([start, disposition] {
                std::signal(SIGCHLD, disposition);
                crew::ProcessExecutor<crew::ipc::Pipe> ex(1, crew::Options{.start = start});
                try {
                    ex.submit(&crash).get();
                    return 2;
                } catch (const crew::WorkerDied& e) {
                    if (e.signal() != SIGABRT) {
                        std::fprintf(stderr, "expected SIGABRT: %s\n", e.what());
                        return 3;
                    }
                }
                return ex.submit(&twice, 4).get() == 8 ? 0 : 4;
            }));
        }
    }
}

TEST_CASE("item 14: a task that closes crew's descriptors fails itself, not the next task", "[hardening][fds]") {
    auto scenario = []<class Channel>(Channel*) {
        return run_isolated([] {
            crew::ProcessExecutor<Channel> ex(1, crew::Options{.start = crew::Start::spawn});
            if (ex.submit(&twice, 1).get() != 2) return 2;
            try {
                (void)ex.submit(&close_everything).get();  // may succeed (shm keeps its mapping) or fail
            } catch (const crew::WorkerDied&) {
            }
            for (int i = 0; i < 5; ++i)
                if (ex.submit(&twice, i).get() != 2 * i) return 3;
            return 0;
        });
    };
    require_exit_0(scenario(static_cast<crew::ipc::SharedMemory*>(nullptr)));
    require_exit_0(scenario(static_cast<crew::ipc::Pipe*>(nullptr)));
    require_exit_0(scenario(static_cast<crew::ipc::Socket*>(nullptr)));
    require_exit_0(scenario(static_cast<crew::ipc::MessageQueue*>(nullptr)));
}

TEST_CASE("item 12: Ctrl-C to the process group does not break a fork-server executor", "[hardening][forkserver]") {
    require_exit_0(run_isolated([] {
        ::setpgid(0, 0);
        static std::atomic<int> interrupts{0};
        struct sigaction sa {};
        sa.sa_handler = [](int) { interrupts.fetch_add(1); };
        ::sigaction(SIGINT, &sa, nullptr);  // the program handles Ctrl-C
        crew::ProcessExecutor<crew::ipc::Pipe> ex(2, crew::Options{.start = crew::Start::fork_server});
        if (ex.submit(&twice, 1).get() != 2) return 2;
        ::kill(0, SIGINT);  // the whole group: this process, the server, its workers
        // Idle workers may die of it (they have the program's default); the
        // server must not, and new workers replace those that died.
        for (int round = 0; round < 3; ++round) {
            std::vector<crew::Future<int>> fs;
            for (int i = 0; i < 20; ++i) fs.push_back(ex.submit(&twice, i));
            for (int i = 0; i < 20; ++i) {
                try {
                    if (fs[static_cast<std::size_t>(i)].get() != 2 * i) return 3;
                } catch (const crew::WorkerDied&) {
                    if (round == 2) return 4;  // only work racing the interrupt may fail
                }
            }
        }
        return interrupts.load() >= 1 ? 0 : 5;
    }));
}

TEST_CASE("item 12: a timer signal without SA_RESTART does not break worker starts", "[hardening][forkserver]") {
    for (auto start : {crew::Start::fork_server, crew::Start::spawn}) {
        require_exit_0(run_isolated([start] {
            struct sigaction sa {};
            sa.sa_handler = [](int) {};
            sa.sa_flags = 0;  // no SA_RESTART: slow calls fail with EINTR
            ::sigaction(SIGALRM, &sa, nullptr);
            itimerval every{{0, 500}, {0, 500}};
            ::setitimer(ITIMER_REAL, &every, nullptr);
            crew::ProcessExecutor<crew::ipc::Pipe> ex(2, crew::Options{.max_tasks_per_worker = 1, .start = start});
            std::vector<crew::Future<int>> fs;
            for (int i = 0; i < 40; ++i) fs.push_back(ex.submit(&twice, i));
            for (int i = 0; i < 40; ++i)
                if (fs[static_cast<std::size_t>(i)].get() != 2 * i) return 3;
            itimerval off{};
            ::setitimer(ITIMER_REAL, &off, nullptr);
            return 0;
        }));
    }
}

TEST_CASE("item 12: a fork server that was killed is replaced", "[hardening][forkserver]") {
    require_exit_0(run_isolated([] {
        crew::ProcessExecutor<crew::ipc::Pipe> ex(2, crew::Options{.max_tasks_per_worker = 1,
                                                                    .start = crew::Start::fork_server});
        if (ex.submit(&twice, 1).get() != 2) return 2;
        // The server: our child that has children of its own.
        pid_t server = -1;
        for (int pid : crew_test::child_pids()) {
            std::ifstream children("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children");
            std::string kids;
            if (std::getline(children, kids) && !kids.empty()) server = pid;
        }
        if (server <= 0) return 3;
        ::kill(server, SIGKILL);
        int failed = 0;
        for (int i = 0; i < 20; ++i) {
            try {
                if (ex.submit(&twice, i).get() != 2 * i) return 4;
            } catch (const crew::WorkerDied&) {
                ++failed;  // a worker the dead server took with it
            }
        }
        return failed <= 2 ? 0 : 5;
    }));
}

TEST_CASE("item 4: SharedRegion::open refuses a region others may write", "[hardening][shm]") {
    const std::string name = crew::ipc::SharedRegion::unique_name("crew-harden");
    const int fd = ::shm_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL, 0666);
    REQUIRE(fd >= 0);
    REQUIRE(::fchmod(fd, 0666) == 0);
    REQUIRE(::ftruncate(fd, 4096) == 0);
    ::close(fd);
    CHECK_THROWS_AS(crew::ipc::SharedRegion::open(name), crew::ChannelError);
    ::shm_unlink(name.c_str());
}

TEST_CASE("item 9: /dev/shm short of space is a ChannelError, and leaves no names", "[hardening][shm]") {
    if (::geteuid() != 0) {
        WARN("skipped: needs root for a private mount namespace");
        return;
    }
    const int status = run_isolated([] {
        if (::unshare(CLONE_NEWNS) != 0) return 77;
        if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return 77;
        if (::mount("tmpfs", "/dev/shm", "tmpfs", 0, "size=1M,mode=1777") != 0) return 77;
        auto empty = [] { return std::filesystem::is_empty("/dev/shm"); };
        try {
            (void)crew::ipc::MessageQueue::pair();
            return 2;
        } catch (const crew::ChannelError& e) {
            if (std::string(e.what()).find("/dev/shm") == std::string::npos) return 3;
        }
        if (!empty()) return 4;
        try {
            (void)crew::ipc::SharedRegion::create(crew::ipc::SharedRegion::unique_name(), 4 << 20);
            return 5;
        } catch (const crew::ChannelError& e) {
            if (std::string(e.what()).find("free space in /dev/shm") == std::string::npos) return 6;
        }
        if (!empty()) return 7;
        // What fits still works.
        auto small = crew::ipc::SharedRegion::create(crew::ipc::SharedRegion::unique_name(), 64 << 10);
        return small.size() >= (64 << 10) ? 0 : 8;
    });
    if (WIFEXITED(status) && WEXITSTATUS(status) == 77) {
        WARN("skipped: cannot make a private mount namespace here");
        return;
    }
    require_exit_0(status);
}

namespace {
int not_a_task_entry(int x) { return x + 1; }
}  // namespace

TEST_CASE("item 1: a call can only name a crew task entry of this program", "[hardening][entries]") {
    // A well-formed call whose "trampoline" is an ordinary function of this
    // binary (executable, but not one crew registered): refused, not run.
    std::vector<std::byte> call;
    crew::Writer w(call);
    w.write_value(crew::detail::ModuleTable::ref(reinterpret_cast<const void*>(&not_a_task_entry)));
    w.write_value(std::uint64_t{0});
    crew::Reader in(call);
    std::vector<std::byte> out;
    crew::detail::run_call(5, in, out);
    crew::Reader reply(out);
    CHECK(reply.read_value<std::uint64_t>() == 5);
    CHECK(reply.read_value<std::uint8_t>() == static_cast<std::uint8_t>(crew::detail::Outcome::exception));
    auto error = crew::detail::decode_exception(reply);
    CHECK_THROWS_AS(std::rethrow_exception(error), crew::CodecError);
}

namespace {
// Raises this worker's address-space limit back to its hard limit (the
// parent lowered its own soft limit, which the worker inherited), then
// returns `mib` MiB.
std::vector<char> big_result(std::size_t mib) {
    rlimit limit{};
    ::getrlimit(RLIMIT_AS, &limit);
    limit.rlim_cur = limit.rlim_max;
    ::setrlimit(RLIMIT_AS, &limit);
    return std::vector<char>(mib << 20, 'r');
}

// Writes one extra, well-formed reply frame (Pipe framing: 8-byte length,
// then seq, outcome "value", an int) into this worker's reply pipe, as
// garbage from a buggy library in the task might; then returns normally.
int forge_extra_reply() {
    for (int fd = 3; fd < 256; ++fd) {
        struct stat st {};
        if (::fstat(fd, &st) != 0 || !S_ISFIFO(st.st_mode)) continue;
        if ((::fcntl(fd, F_GETFL) & O_ACCMODE) != O_WRONLY) continue;
        std::vector<std::byte> frame;
        crew::Writer w(frame);
        w.write_value(std::uint64_t{8 + 1 + 4});
        w.write_value(std::uint64_t{424242});
        w.write_value(std::uint8_t{0});
        w.write_value(99);
        (void)!::write(fd, frame.data(), frame.size());
    }
    return 1;
}
}  // namespace

TEST_CASE("item 7: a result this process cannot allocate fails its future, the program goes on",
          "[hardening][memory]") {
    if (crew_test::sanitized()) return;  // sanitizers reserve terabytes of address space
    require_exit_0(run_isolated([] {
        crew::ProcessExecutor<crew::ipc::Pipe> ex(1, crew::Options{.start = crew::Start::fork});
        if (ex.submit(&twice, 1).get() != 2) return 2;
        // Room for what this process uses now plus 128 MiB, not for a 256 MiB reply.
        rlimit limit{};
        ::getrlimit(RLIMIT_AS, &limit);
        std::size_t used = 0;
        {
            std::ifstream status("/proc/self/status");
            for (std::string line; std::getline(status, line);)
                if (line.rfind("VmSize:", 0) == 0) used = std::stoull(line.substr(7)) * 1024;
        }
        limit.rlim_cur = used + (std::size_t{128} << 20);
        if (::setrlimit(RLIMIT_AS, &limit) != 0) return 0;  // cannot lower it here: nothing to test
        try {
            (void)ex.submit(&big_result, std::size_t{256}).get();
            return 3;
        } catch (const std::bad_alloc&) {
        } catch (const crew::ChannelError&) {
        }
        limit.rlim_cur = limit.rlim_max;
        ::setrlimit(RLIMIT_AS, &limit);
        return ex.submit(&twice, 5).get() == 10 ? 0 : 4;  // a new worker took its place
    }));
}

TEST_CASE("item 8: an extra frame in a worker's channel is caught, never a wrong value", "[hardening][frames]") {
    crew::ProcessExecutor<crew::ipc::Pipe> ex(1, crew::Options{.start = crew::Start::fork});
    // The forged frame arrives before the task's own reply: its seq names no
    // task in flight, so the task that wrote it fails and its worker goes.
    try {
        (void)ex.submit(&forge_extra_reply).get();
        FAIL("expected a ChannelError");
    } catch (const crew::ChannelError& e) {
        CHECK(std::string(e.what()).find("protocol") != std::string::npos);
    }
    // Later tasks get their own values, never the forged 99.
    for (int i = 0; i < 5; ++i) CHECK(ex.submit(&twice, i).get() == 2 * i);
}

TEST_CASE("item 1: a function pointer sent as a task must name the start of a function", "[hardening][entries]") {
    using Fn = int (*)(int);
    auto call_with = [](const void* target) {
        std::vector<std::byte> call;
        crew::Writer w(call);
        w.write_value(crew::detail::trampoline_ref<&crew::detail::call_trampoline<Fn, int>>());
        w.write_value(std::uint64_t{16 + sizeof(int)});
        w.write_value(crew::detail::ModuleTable::ref(target));
        w.write_value(21);
        crew::Reader in(call);
        std::vector<std::byte> out;
        crew::detail::run_call(9, in, out);
        return out;
    };
    // The real function runs.
    auto good = call_with(reinterpret_cast<const void*>(&twice));
    crew::Reader ok(good);
    CHECK(ok.read_value<std::uint64_t>() == 9);
    CHECK(ok.read_value<std::uint8_t>() == static_cast<std::uint8_t>(crew::detail::Outcome::value));
    CHECK(ok.read_value<int>() == 42);
    // One byte into it: executable, but no function starts there: refused.
    auto bad = call_with(reinterpret_cast<const char*>(reinterpret_cast<const void*>(&twice)) + 1);
    crew::Reader no(bad);
    CHECK(no.read_value<std::uint64_t>() == 9);
    CHECK(no.read_value<std::uint8_t>() == static_cast<std::uint8_t>(crew::detail::Outcome::exception));
    CHECK_THROWS_AS(std::rethrow_exception(crew::detail::decode_exception(no)), crew::CodecError);
}
