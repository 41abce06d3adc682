// Tests for the process-shared primitives: crew::ipc::Mutex (robust),
// ConditionVariable, Semaphore and SharedRegion, exercised across fork()ed
// processes. Every child ends with _exit(), never returning into Catch; every
// test checks that no file descriptor, child process or /dev/shm entry is left
// behind.
#include "catch.hpp"
#include "test_support.hpp"

#include <crew/ipc/mutex.hpp>
#include <crew/ipc/semaphore.hpp>
#include <crew/ipc/shared_region.hpp>
#include <crew/detail/sanitizers.hpp>

#include <atomic>
#include <bit>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace std::chrono_literals;
using crew::ipc::ConditionVariable;
using crew::ipc::LockResult;
using crew::ipc::Mutex;
using crew::ipc::MutexUnrecoverable;
using crew::ipc::Semaphore;
using crew::ipc::SharedRegion;

namespace {

// ThreadSanitizer reports lock misuse (double lock, foreign unlock) itself
// before the mutex can refuse it; those checks are skipped under it.
constexpr bool under_tsan = crew::detail::under_tsan;

std::set<std::string> shm_entries() {
    std::set<std::string> names;
    DIR* dir = ::opendir("/dev/shm");
    REQUIRE(dir != nullptr);
    while (const dirent* entry = ::readdir(dir)) names.insert(entry->d_name);
    ::closedir(dir);
    return names;
}

bool shm_exists(const std::string& name) { return shm_entries().count(name.substr(1)) == 1; }

/// Runs `body` in a forked child, which ends with _exit(body()); an exception
/// becomes exit code 101. Never returns in the child.
template <class Body>
pid_t fork_child(Body&& body) {
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        int rc = 100;
        try {
            rc = body();
        } catch (...) {
            rc = 101;
        }
        ::_exit(rc);
    }
    return pid;
}

/// Reaps `pid`: its exit code, or -signal when a signal killed it. A child
/// still running after `limit` is killed and reported as -1000.
int reap(pid_t pid, std::chrono::seconds limit = 60s) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    int status = 0;
    for (;;) {
        const pid_t r = ::waitpid(pid, &status, WNOHANG);
        if (r == pid) break;
        if (r < 0 && errno != EINTR) return -2000;
        if (std::chrono::steady_clock::now() > deadline) {
            ::kill(pid, SIGKILL);
            ::waitpid(pid, &status, 0);
            return -1000;
        }
        std::this_thread::sleep_for(1ms);
    }
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return -WTERMSIG(status);
    return -3000;
}

/// A child process locks `mutex` and exits without unlocking it: the next
/// locker is told owner_died.
void die_holding(Mutex& mutex) {
    CHECK(reap(fork_child([&] {
              mutex.lock();
              ::_exit(0);
              return 0;
          })) == 0);
}

/// Polls `condition` until it holds or 30 s pass.
template <class Condition>
bool eventually(Condition condition) {
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    while (!condition()) {
        if (std::chrono::steady_clock::now() > deadline) return false;
        std::this_thread::sleep_for(1ms);
    }
    return true;
}

/// Snapshot of what a test could leak (fds, names, descendants); check()
/// compares at the end.
using crew_test::LeakCheck;

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

// ---------------------------------------------------------------------------
// Mutex

TEST_CASE("ipc::Mutex: an owner killed while holding it is reported, and the mutex can be repaired",
          "[ipc][mutex]") {
    LeakCheck leaks;
    {
        auto region = SharedRegion::anonymous(4096);
        struct Shared {
            Mutex mutex;
            std::atomic<int> child_holds{0};
            int value = 0;
        };
        auto& s = region.construct<Shared>();

        const pid_t child = fork_child([&] {
            s.mutex.lock();
            s.value = 1;  // "half-way through an update"
            s.child_holds.store(1);
            for (;;) ::pause();
            return 0;
        });
        REQUIRE(eventually([&] { return s.child_holds.load() == 1; }));
        ::kill(child, SIGKILL);
        CHECK(reap(child) == -SIGKILL);

        CHECK(s.mutex.lock() == LockResult::owner_died);
        CHECK(s.mutex.previous_owner_died());
        CHECK(s.value == 1);
        s.value = 0;  // repair
        s.mutex.mark_consistent();
        CHECK_FALSE(s.mutex.previous_owner_died());
        s.mutex.unlock();

        CHECK(s.mutex.lock() == LockResult::acquired);
        CHECK_FALSE(s.mutex.previous_owner_died());
        s.mutex.unlock();
        {
            std::lock_guard<Mutex> guard(s.mutex);  // Lockable: works with the std wrappers
            CHECK_FALSE(s.mutex.previous_owner_died());
        }
    }
    leaks.check();
}

TEST_CASE("ipc::Mutex: owner death is reported by try_lock and try_lock_for, and again when the "
          "next owner dies too",
          "[ipc][mutex]") {
    LeakCheck leaks;
    {
        auto region = SharedRegion::anonymous(4096);
        auto& mutex = region.construct<Mutex>();

        // _exit without unlock: the kernel releases the robust mutex as owner-died.
        die_holding(mutex);
        CHECK(mutex.try_lock());
        CHECK(mutex.previous_owner_died());
        mutex.mark_consistent();
        mutex.unlock();

        die_holding(mutex);
        CHECK(mutex.try_lock_for(5s));
        CHECK(mutex.previous_owner_died());
        mutex.mark_consistent();
        mutex.unlock();

        // The first child dies holding it; the second takes it as owner_died and
        // dies too without repairing: the parent is told again.
        die_holding(mutex);
        CHECK(reap(fork_child([&] {
                  if (mutex.lock() != LockResult::owner_died) return 2;
                  ::_exit(0);
                  return 0;
              })) == 0);
        CHECK(mutex.lock() == LockResult::owner_died);
        mutex.mark_consistent();
        mutex.unlock();
        CHECK(mutex.lock() == LockResult::acquired);
        mutex.unlock();
    }
    leaks.check();
}

TEST_CASE("ipc::Mutex: unlock after owner_died without mark_consistent makes it unrecoverable",
          "[ipc][mutex]") {
    LeakCheck leaks;
    {
        auto region = SharedRegion::anonymous(4096);
        auto& mutex = region.construct<Mutex>();
        die_holding(mutex);
        CHECK(mutex.lock() == LockResult::owner_died);
        mutex.unlock();  // no mark_consistent: the state is declared beyond repair
        CHECK_FALSE(mutex.previous_owner_died());

        CHECK_THROWS_AS(mutex.lock(), MutexUnrecoverable);
        CHECK_THROWS_AS(static_cast<void>(mutex.try_lock()), MutexUnrecoverable);
        CHECK_THROWS_AS(static_cast<void>(mutex.try_lock_for(10ms)), MutexUnrecoverable);
        CHECK_THROWS_AS(mutex.lock(), crew::Error);  // one catch (crew::Error) sees it
        try {
            mutex.lock();
        } catch (const MutexUnrecoverable& e) {
            const std::string what = e.what();
            CHECK(what.find("unrecoverable") != std::string::npos);
            CHECK(what.find("mark_consistent()") != std::string::npos);
        }
        // Another process is told the same.
        CHECK(reap(fork_child([&] {
                  try {
                      mutex.lock();
                  } catch (const MutexUnrecoverable&) {
                      return 0;
                  }
                  return 2;
              })) == 0);
    }
    leaks.check();
}

TEST_CASE("ipc::Mutex: try_lock on a mutex made unrecoverable behind its back does not wedge it",
          "[ipc][mutex]") {
    // glibc's pthread_mutex_trylock keeps the lock word of an unrecoverable
    // robust mutex while returning ENOTRECOVERABLE; Mutex gives it back.
    LeakCheck leaks;
    {
        auto region = SharedRegion::anonymous(4096);
        auto& mutex = region.construct<Mutex>();
        die_holding(mutex);
        // Through the native handle, so that Mutex does not know.
        CHECK(::pthread_mutex_lock(mutex.native_handle()) == EOWNERDEAD);
        CHECK(::pthread_mutex_unlock(mutex.native_handle()) == 0);

        CHECK_THROWS_AS(static_cast<void>(mutex.try_lock()), MutexUnrecoverable);
        // Another process asks glibc directly (Mutex would answer from its own
        // flag): it must be told, not block on a lock word nobody will release.
        CHECK(reap(fork_child([&] { return ::pthread_mutex_lock(mutex.native_handle()) == ENOTRECOVERABLE ? 0 : 2; }),
                   10s) == 0);
        CHECK_THROWS_AS(mutex.lock(), MutexUnrecoverable);
        CHECK_THROWS_AS(static_cast<void>(mutex.try_lock_for(10ms)), MutexUnrecoverable);
    }
    leaks.check();
}

TEST_CASE("ipc::Mutex: misuse is an exception, not a hang", "[ipc][mutex]") {
    Mutex mutex;
    mutex.lock();
    CHECK_THROWS_AS(mutex.mark_consistent(), crew::Error);  // not owner-died
    if constexpr (!under_tsan) {
        CHECK_THROWS_AS(mutex.lock(), crew::Error);  // not recursive: EDEADLK, not a deadlock
        CHECK_THROWS_AS(static_cast<void>(mutex.try_lock()), crew::Error);
    }
    mutex.unlock();
    if constexpr (!under_tsan) CHECK_THROWS_AS(mutex.unlock(), crew::Error);  // not held
    CHECK(mutex.try_lock());
    mutex.unlock();
}

TEST_CASE("ipc::Mutex: timed locking across processes, and the std lock wrappers", "[ipc][mutex]") {
    LeakCheck leaks;
    {
        auto region = SharedRegion::anonymous(4096);
        struct Shared {
            Mutex mutex;
            Mutex other;
            std::atomic<int> child_holds{0};
            std::atomic<int> may_release{0};
        };
        auto& s = region.construct<Shared>();
        const pid_t child = fork_child([&] {
            s.mutex.lock();
            s.child_holds.store(1);
            while (s.may_release.load() == 0) ::usleep(1000);
            s.mutex.unlock();
            return 0;
        });
        REQUIRE(eventually([&] { return s.child_holds.load() == 1; }));

        CHECK_FALSE(s.mutex.try_lock());
        auto t0 = std::chrono::steady_clock::now();
        CHECK_FALSE(s.mutex.try_lock_for(30ms));
        CHECK(seconds_since(t0) >= 0.030);
        t0 = std::chrono::steady_clock::now();
        CHECK_FALSE(s.mutex.try_lock_until(std::chrono::steady_clock::now() + 30ms));
        CHECK(seconds_since(t0) >= 0.030);
        t0 = std::chrono::steady_clock::now();
        CHECK_FALSE(s.mutex.try_lock_until(std::chrono::system_clock::now() + 30ms));
        CHECK(seconds_since(t0) >= 0.029);  // system_clock may tick differently by a hair
        CHECK_FALSE(s.mutex.try_lock_for(-5s));
        {
            std::unique_lock<Mutex> lock(s.mutex, std::defer_lock);
            CHECK_FALSE(lock.try_lock_for(10ms));
            s.may_release.store(1);
            CHECK(lock.try_lock_for(30s));
            CHECK(lock.owns_lock());
        }
        CHECK(reap(child) == 0);

        // Far deadlines mean "wait forever" and must not overflow.
        CHECK(s.mutex.try_lock_until(std::chrono::steady_clock::time_point::max()));
        s.mutex.unlock();
        CHECK(s.mutex.try_lock_for(std::chrono::hours::max()));
        s.mutex.unlock();
        CHECK(s.mutex.try_lock_until(std::chrono::system_clock::time_point::max()));
        s.mutex.unlock();
        {
            std::scoped_lock both(s.mutex, s.other);
            CHECK_FALSE(s.mutex.previous_owner_died());
        }
        CHECK(s.mutex.try_lock());
        CHECK(s.other.try_lock());
        s.other.unlock();
        s.mutex.unlock();
        CHECK(s.mutex.native_handle() != nullptr);
    }
    leaks.check();
}

TEST_CASE("ipc::Mutex: mutual exclusion across 4 processes", "[ipc][mutex][stress]") {
    LeakCheck leaks;
    {
        constexpr int processes = 4;
        constexpr long increments = 100'000;
        auto region = SharedRegion::anonymous(4096);
        struct Shared {
            Mutex mutex;
            long counter = 0;  // deliberately not atomic: the mutex protects it
        };
        auto& s = region.construct<Shared>();
        std::vector<pid_t> children;
        for (int p = 0; p < processes; ++p) {
            children.push_back(fork_child([&] {
                for (long i = 0; i < increments; ++i) {
                    std::lock_guard<Mutex> guard(s.mutex);
                    s.counter = s.counter + 1;
                }
                return 0;
            }));
        }
        for (pid_t child : children) CHECK(reap(child, 600s) == 0);
        std::lock_guard<Mutex> guard(s.mutex);
        CHECK(s.counter == processes * increments);
    }
    leaks.check();
}

// ---------------------------------------------------------------------------
// ConditionVariable

TEST_CASE("ipc::ConditionVariable: producer/consumer hand-off between processes", "[ipc][condvar]") {
    LeakCheck leaks;
    {
        constexpr int rounds = 2000;
        auto region = SharedRegion::anonymous(4096);
        struct Shared {
            Mutex mutex;
            ConditionVariable request_ready;
            ConditionVariable reply_ready;
            int request = 0;
            int reply = 0;
        };
        auto& s = region.construct<Shared>();
        const pid_t consumer = fork_child([&] {
            for (int i = 1; i <= rounds; ++i) {
                std::unique_lock<Mutex> lock(s.mutex);
                s.request_ready.wait(lock, [&] { return s.request == i; });
                s.reply = 2 * i;
                s.reply_ready.notify_one();
            }
            return 0;
        });
        bool all_replied = true;
        for (int i = 1; i <= rounds; ++i) {
            std::unique_lock<Mutex> lock(s.mutex);
            s.request = i;
            s.request_ready.notify_one();
            if (!s.reply_ready.wait_for(lock, 30s, [&] { return s.reply == 2 * i; })) {
                all_replied = false;
                break;
            }
        }
        CHECK(all_replied);
        CHECK(reap(consumer) == 0);
    }
    leaks.check();
}

TEST_CASE("ipc::ConditionVariable: timed waits time out", "[ipc][condvar]") {
    Mutex mutex;
    ConditionVariable cv;
    std::unique_lock<Mutex> lock(mutex);
    auto t0 = std::chrono::steady_clock::now();
    CHECK(cv.wait_for(lock, 30ms) == std::cv_status::timeout);
    CHECK(seconds_since(t0) >= 0.030);
    CHECK(lock.owns_lock());
    t0 = std::chrono::steady_clock::now();
    CHECK_FALSE(cv.wait_for(lock, 20ms, [] { return false; }));
    CHECK(seconds_since(t0) >= 0.020);
    CHECK(cv.wait_until(lock, std::chrono::system_clock::now() + 10ms) == std::cv_status::timeout);
    CHECK(cv.wait_until(lock, std::chrono::steady_clock::now() - 1s, [] { return true; }));
    CHECK(lock.owns_lock());
    cv.notify_all();  // nobody waiting: harmless
}

TEST_CASE("ipc::ConditionVariable: a waiter killed while waiting does not swallow a notify_one",
          "[ipc][condvar]") {
    LeakCheck leaks;
    {
        auto region = SharedRegion::anonymous(4096);
        struct Shared {
            Mutex mutex;
            ConditionVariable cv;
            int waiting = 0;
            bool go = false;
        };
        auto& s = region.construct<Shared>();
        auto waiter = [&] {
            std::unique_lock<Mutex> lock(s.mutex);
            ++s.waiting;
            s.cv.wait(lock, [&] { return s.go; });
            return 0;
        };
        auto waiting_count = [&] {
            std::lock_guard<Mutex> guard(s.mutex);
            return s.waiting;
        };
        const pid_t doomed = fork_child(waiter);
        REQUIRE(eventually([&] { return waiting_count() == 1; }));
        std::this_thread::sleep_for(20ms);  // let it fall asleep in the kernel
        ::kill(doomed, SIGKILL);
        CHECK(reap(doomed) == -SIGKILL);

        const pid_t survivor = fork_child(waiter);
        REQUIRE(eventually([&] { return waiting_count() == 2; }));
        {
            std::lock_guard<Mutex> guard(s.mutex);
            s.go = true;
        }
        s.cv.notify_one();
        CHECK(reap(survivor, 30s) == 0);
    }
    leaks.check();
}

TEST_CASE("ipc::ConditionVariable: a wait that reacquires after the owner died reports it",
          "[ipc][condvar]") {
    LeakCheck leaks;
    {
        auto region = SharedRegion::anonymous(4096);
        struct Shared {
            Mutex mutex;
            ConditionVariable cv;
            int waiting = 0;
            bool go = false;
        };
        auto& s = region.construct<Shared>();
        const pid_t waiter = fork_child([&] {
            std::unique_lock<Mutex> lock(s.mutex);
            ++s.waiting;
            s.cv.wait(lock, [&] { return s.go; });
            if (!lock.mutex()->previous_owner_died()) return 2;
            lock.mutex()->mark_consistent();
            return 0;
        });
        REQUIRE(eventually([&] {
            std::lock_guard<Mutex> guard(s.mutex);
            return s.waiting == 1;
        }));
        // The notifier dies holding the mutex, after setting the flag.
        CHECK(reap(fork_child([&] {
                  s.mutex.lock();
                  s.go = true;
                  s.cv.notify_all();
                  ::_exit(0);
                  return 0;
              })) == 0);
        CHECK(reap(waiter, 30s) == 0);
        CHECK(s.mutex.lock() == LockResult::acquired);  // repaired by the waiter
        s.mutex.unlock();
    }
    leaks.check();
}

// ---------------------------------------------------------------------------
// Semaphore

TEST_CASE("ipc::Semaphore(3): at most 3 of 8 processes inside at once", "[ipc][semaphore][stress]") {
    LeakCheck leaks;
    {
        constexpr int processes = 8;
        constexpr int entries = 200;
        auto region = SharedRegion::anonymous(4096);
        struct Shared {
            Semaphore sem{3};
            std::atomic<int> inside{0};
            std::atomic<int> max_inside{0};
        };
        auto& s = region.construct<Shared>();
        std::vector<pid_t> children;
        for (int p = 0; p < processes; ++p) {
            children.push_back(fork_child([&] {
                for (int i = 0; i < entries; ++i) {
                    s.sem.acquire();
                    const int now = s.inside.fetch_add(1) + 1;
                    int seen = s.max_inside.load();
                    while (now > seen && !s.max_inside.compare_exchange_weak(seen, now)) {
                    }
                    ::usleep(50);
                    s.inside.fetch_sub(1);
                    s.sem.release();
                }
                return 0;
            }));
        }
        for (pid_t child : children) CHECK(reap(child, 600s) == 0);
        CHECK(s.max_inside.load() <= 3);
        CHECK(s.max_inside.load() >= 2);  // 3 almost always; 2 tolerated on a starved machine
        if (s.max_inside.load() != 3) WARN("only " << s.max_inside.load() << " processes were inside at once");
        CHECK(s.inside.load() == 0);
        CHECK(s.sem.value() == 3);
    }
    leaks.check();
}

TEST_CASE("ipc::Semaphore: try_acquire, timeouts, release(n), limits", "[ipc][semaphore]") {
    Semaphore sem(0);
    CHECK(sem.value() == 0);
    CHECK_FALSE(sem.try_acquire());

    auto t0 = std::chrono::steady_clock::now();
    CHECK_FALSE(sem.try_acquire_for(30ms));
    CHECK(seconds_since(t0) >= 0.030);
    t0 = std::chrono::steady_clock::now();
    CHECK_FALSE(sem.try_acquire_until(std::chrono::steady_clock::now() + 20ms));
    CHECK(seconds_since(t0) >= 0.020);
    t0 = std::chrono::steady_clock::now();
    CHECK_FALSE(sem.try_acquire_until(std::chrono::system_clock::now() + 20ms));
    CHECK(seconds_since(t0) >= 0.019);
    CHECK_FALSE(sem.try_acquire_for(-1s));

    sem.release(2);
    CHECK(sem.value() == 2);
    CHECK(sem.try_acquire());
    CHECK(sem.try_acquire_for(1h));
    CHECK_FALSE(sem.try_acquire());
    sem.release(0);
    CHECK(sem.value() == 0);
    sem.release();
    CHECK(sem.try_acquire_until(std::chrono::steady_clock::time_point::max()));
    sem.release();
    CHECK(sem.try_acquire_for(std::chrono::hours::max()));
    sem.release();
    sem.acquire();
    CHECK(sem.value() == 0);

    CHECK_THROWS_AS(sem.release(Semaphore::max() + 1u), crew::InvalidArgument);
    CHECK_THROWS_AS(Semaphore(Semaphore::max() + 1u), crew::InvalidArgument);
    Semaphore big(Semaphore::max());
    CHECK(big.value() == Semaphore::max());
}

TEST_CASE("ipc::Semaphore: release(n) wakes n sleeping processes", "[ipc][semaphore]") {
    LeakCheck leaks;
    {
        constexpr int processes = 4;
        auto region = SharedRegion::anonymous(4096);
        struct Shared {
            Semaphore sem{0};
            std::atomic<int> about_to_wait{0};
            std::atomic<int> through{0};
        };
        auto& s = region.construct<Shared>();
        std::vector<pid_t> children;
        for (int p = 0; p < processes; ++p) {
            children.push_back(fork_child([&] {
                s.about_to_wait.fetch_add(1);
                s.sem.acquire();
                s.through.fetch_add(1);
                return 0;
            }));
        }
        REQUIRE(eventually([&] { return s.about_to_wait.load() == processes; }));
        std::this_thread::sleep_for(50ms);  // let them fall asleep in the kernel
        CHECK(s.through.load() == 0);
        s.sem.release(processes);
        for (pid_t child : children) CHECK(reap(child, 30s) == 0);
        CHECK(s.through.load() == processes);
        CHECK(s.sem.value() == 0);
    }
    leaks.check();
}

namespace {
volatile sig_atomic_t signals_seen = 0;
extern "C" void count_signal(int) { signals_seen = signals_seen + 1; }
}  // namespace

TEST_CASE("ipc::Semaphore: signals (EINTR) neither end a wait early nor lose a release",
          "[ipc][semaphore]") {
    LeakCheck leaks;
    {
        auto region = SharedRegion::anonymous(4096);
        struct Shared {
            Semaphore sem{0};
            std::atomic<int> phase{0};
        };
        auto& s = region.construct<Shared>();
        const pid_t child = fork_child([&] {
            struct sigaction action {};
            action.sa_handler = count_signal;
            sigemptyset(&action.sa_mask);
            action.sa_flags = 0;  // no SA_RESTART: the futex wait sees EINTR
            ::sigaction(SIGUSR1, &action, nullptr);
            s.phase.store(1);
            const auto t0 = std::chrono::steady_clock::now();
            if (s.sem.try_acquire_for(200ms)) return 2;
            if (seconds_since(t0) < 0.200) return 3;
            s.phase.store(2);
            s.sem.acquire();
            return signals_seen > 0 ? 0 : 4;
        });
        REQUIRE(eventually([&] { return s.phase.load() >= 1; }));
        const auto t0 = std::chrono::steady_clock::now();
        while (seconds_since(t0) < 0.4) {
            ::kill(child, SIGUSR1);
            std::this_thread::sleep_for(5ms);
        }
        CHECK(s.phase.load() == 2);  // the timed wait ended; the child now sleeps in acquire()
        int status = 0;
        CHECK(::waitpid(child, &status, WNOHANG) == 0);  // and is still waiting
        s.sem.release();
        CHECK(reap(child, 30s) == 0);
    }
    leaks.check();
}

// ---------------------------------------------------------------------------
// SharedRegion

TEST_CASE("ipc::SharedRegion: named region shared with a child that opens it by name", "[ipc][region]") {
    LeakCheck leaks;
    const std::string name = SharedRegion::unique_name();
    {
        auto region = SharedRegion::create(name, 4096);
        CHECK(region.name() == name);
        CHECK(region.size() == 4096);
        CHECK(reinterpret_cast<std::uintptr_t>(region.data()) % 64 == 0);
        CHECK(shm_exists(name));

        const int fd = ::open(("/dev/shm" + name).c_str(), O_RDONLY | O_CLOEXEC);
        REQUIRE(fd >= 0);
        struct stat st {};
        CHECK(::fstat(fd, &st) == 0);
        CHECK((st.st_mode & 07777) == 0600);
        CHECK(st.st_uid == ::geteuid());
        ::close(fd);

        auto& counter = region.construct<std::atomic<int>>(7);
        const std::size_t offset = region.offset_of(&counter);
        CHECK(offset == 0);  // the first object is the root: at<Root>(0)

        const pid_t child = fork_child([&] {
            auto opened = SharedRegion::open(name);
            if (opened.size() != 4096) return 2;
            if (opened.name() != name) return 3;
            auto& c = opened.at<std::atomic<int>>(offset);
            if (c.load() != 7) return 4;
            c.store(42);
            // Bump allocation continues where the creator left off.
            auto& other = opened.construct<std::uint64_t>(99u);
            if (opened.offset_of(&other) != 8) return 5;
            return 0;
        });
        CHECK(reap(child) == 0);
        CHECK(counter.load() == 42);
        CHECK(region.at<std::uint64_t>(8) == 99u);
        auto& next = region.construct<std::uint64_t>(1u);
        CHECK(region.offset_of(&next) == 16);

        CHECK_THROWS_AS(SharedRegion::create(name, 16), crew::ChannelError);  // O_EXCL
        try {
            (void)SharedRegion::create(name, 16);
        } catch (const crew::ChannelError& e) {
            CHECK(std::string(e.what()).find("unique_name") != std::string::npos);
        }

        region.unlink();
        CHECK_FALSE(shm_exists(name));
        region.unlink();  // idempotent
        CHECK_THROWS_AS(SharedRegion::open(name), crew::ChannelError);
        CHECK(counter.load() == 42);  // the mapping outlives the name
    }
    leaks.check();
}

TEST_CASE("ipc::SharedRegion: the creator's destructor removes the name; moves and forks do not",
          "[ipc][region]") {
    LeakCheck leaks;
    {
        const std::string name = SharedRegion::unique_name("crewtest");
        { auto region = SharedRegion::create(name, 100); CHECK(shm_exists(name)); }
        CHECK_FALSE(shm_exists(name));

        auto first = SharedRegion::create(name, 100);
        SharedRegion second = std::move(first);
        CHECK(first.data() == nullptr);  // NOLINT(bugprone-use-after-move): moved-from is empty
        CHECK(first.size() == 0);
        CHECK(first.name().empty());
        CHECK(second.name() == name);
        CHECK(shm_exists(name));

        // A forked child that destroys its copy leaves the name to the creator.
        CHECK(reap(fork_child([&] {
                  { SharedRegion mine = std::move(second); }
                  return 0;
              })) == 0);
        CHECK(shm_exists(name));

        second = SharedRegion::anonymous(10);  // the named one is released
        CHECK_FALSE(shm_exists(name));
        CHECK(second.name().empty());
        second.unlink();  // anonymous: nothing to do
    }
    leaks.check();
}

TEST_CASE("ipc::SharedRegion: mode is 0600 whatever the umask", "[ipc][region]") {
    LeakCheck leaks;
    {
        const mode_t old_umask = ::umask(0);
        const std::string name = SharedRegion::unique_name();
        auto region = SharedRegion::create(name, 64);
        ::umask(old_umask);
        struct stat st {};
        CHECK(::stat(("/dev/shm" + name).c_str(), &st) == 0);
        CHECK((st.st_mode & 07777) == 0600);
    }
    leaks.check();
}

TEST_CASE("ipc::SharedRegion: names are checked, and unique names look random", "[ipc][region]") {
    for (std::string bad : {std::string(), std::string("noslash"), std::string("/"), std::string("/a/b"),
                            std::string("/a\0b", 4), "/" + std::string(256, 'x')}) {
        CHECK_THROWS_AS(SharedRegion::create(bad, 16), crew::InvalidArgument);
        CHECK_THROWS_AS(SharedRegion::open(bad), crew::InvalidArgument);
    }
    CHECK_THROWS_AS(SharedRegion::open(SharedRegion::unique_name()), crew::ChannelError);
    CHECK_THROWS_AS(SharedRegion::unique_name("a/b"), crew::InvalidArgument);
    CHECK_THROWS_AS(SharedRegion::unique_name(std::string(250, 'p')), crew::InvalidArgument);

    const std::regex shape("/crew-" + std::to_string(::getpid()) + "-[0-9a-f]{32}");
    std::set<std::string> names;
    for (int i = 0; i < 1000; ++i) {
        const std::string n = SharedRegion::unique_name();
        CHECK(std::regex_match(n, shape));
        names.insert(n);
    }
    CHECK(names.size() == 1000);
    // Unguessable: the 128 random bits of two names differ in about half their bits.
    const std::string a = SharedRegion::unique_name(), b = SharedRegion::unique_name();
    int differing_bits = 0;
    for (std::size_t i = a.size() - 32; i < a.size(); ++i) {
        auto nibble = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
        differing_bits += std::popcount(static_cast<unsigned>(nibble(a[i]) ^ nibble(b[i])));
    }
    CHECK(differing_bits > 16);
    CHECK(SharedRegion::unique_name("mine").rfind("/mine-", 0) == 0);
}

TEST_CASE("ipc::SharedRegion: opening something that is not a crew region fails clearly", "[ipc][region]") {
    LeakCheck leaks;
    const std::string name = SharedRegion::unique_name();
    const int fd = ::shm_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
    REQUIRE(fd >= 0);
    CHECK(::ftruncate(fd, 4096) == 0);
    ::close(fd);
    try {
        (void)SharedRegion::open(name);
        FAIL("open() accepted a region crew did not create");
    } catch (const crew::ChannelError& e) {
        CHECK(std::string(e.what()).find("not a crew region") != std::string::npos);
    }
    ::shm_unlink(name.c_str());
    leaks.check();
}

TEST_CASE("ipc::SharedRegion: anonymous regions, bump allocation, bounds", "[ipc][region]") {
    LeakCheck leaks;
    {
        auto region = SharedRegion::anonymous(1024);
        CHECK(region.size() == 1024);
        CHECK(region.name().empty());
        auto* bytes = static_cast<unsigned char*>(region.data());
        CHECK(bytes[0] == 0);  // zeroed
        CHECK(bytes[1023] == 0);

        auto& c = region.construct<char>('x');
        CHECK(region.offset_of(&c) == 0);
        struct alignas(256) Wide {
            int v = 5;
        };
        auto& wide = region.construct<Wide>();
        CHECK(reinterpret_cast<std::uintptr_t>(&wide) % 256 == 0);
        CHECK(region.at<Wide>(region.offset_of(&wide)).v == 5);
        CHECK_THROWS_AS(region.at<Wide>(1), crew::InvalidArgument);     // misaligned
        CHECK_THROWS_AS(region.at<int>(1024), crew::InvalidArgument);    // past the end
        CHECK_THROWS_AS(region.at<int>(1022), crew::InvalidArgument);    // straddles the end
        int outside = 0;
        CHECK_THROWS_AS(region.offset_of(&outside), crew::InvalidArgument);

        struct Big {
            char bytes[500];
        };
        region.construct<Big>();
        CHECK_THROWS_AS(region.construct<Big>(), crew::Error);  // full
        try {
            region.construct<Big>();
        } catch (const crew::Error& e) {
            CHECK(std::string(e.what()).find("full") != std::string::npos);
        }

        // Shared with a forked child, both ways.
        auto& value = region.construct<int>(1);
        CHECK(reap(fork_child([&] {
                  if (value != 1) return 2;
                  value = 2;
                  return 0;
              })) == 0);
        CHECK(value == 2);

        SharedRegion empty;
        CHECK(empty.data() == nullptr);
        CHECK_THROWS_AS(empty.construct<int>(), crew::InvalidArgument);
    }
    leaks.check();
}
