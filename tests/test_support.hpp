// Helpers shared by the tests: scale for sanitizer builds, CPU time, and the
// one leak checker (crew_test::LeakCheck).
#pragma once

#include <crew/detail/sanitizers.hpp>

#include <chrono>
#include <cstddef>
#include <exception>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include <unistd.h>

#include <time.h>

#include "catch.hpp"

namespace crew_test {

/// True in TSan/ASan builds, which run 5-20x slower.
constexpr bool sanitized() { return crew::detail::under_tsan || crew::detail::under_asan; }

/// Iteration counts shrink under sanitizers so CI stays within its budget.
constexpr std::size_t scaled(std::size_t n) { return sanitized() ? n / 20 : n; }

/// CPU time used by this process so far (all threads).
inline std::chrono::nanoseconds process_cpu_time() {
    timespec ts{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
}

/// The contract: an executor idle for a second uses under 10 ms of CPU.
/// Sanitizer runtimes run background threads of their own; allow for them.
inline std::chrono::nanoseconds idle_cpu_limit() {
    return sanitized() ? std::chrono::milliseconds(60) : std::chrono::milliseconds(10);
}

/// Number of open file descriptors of this process.
inline std::size_t open_fds() {
    std::size_t n = 0;
    for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
    return n;
}

/// Entries of /dev/shm and /dev/mqueue that this test program could have
/// made: everything except other processes' MessageQueue names (other test
/// programs may run at the same time: `ctest -j`). Those names carry the pid
/// of the process that called pair(), which in the tests is always this one.
/// Open MPI's segments (an mpirun of mpi_suite alongside) are not crew's.
inline std::set<std::string> ipc_names() {
    std::set<std::string> names;
    const std::string mine = "-" + std::to_string(::getpid()) + "-";
    for (const char* dir : {"/dev/shm", "/dev/mqueue"}) {
        std::error_code ec;
        for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
            const std::string name = entry.path().filename().string();
            if (name.rfind("crew-mq-", 0) == 0 && name.find(mine) == std::string::npos) continue;
            if (name.rfind("vader_segment.", 0) == 0 || name.rfind("sm_segment.", 0) == 0) continue;
            names.insert(std::string(dir) + "/" + name);
        }
    }
    return names;
}

/// (pid, parent pid) of every process in /proc, zombies included.
inline std::vector<std::pair<int, int>> process_table() {
    std::vector<std::pair<int, int>> table;
    std::error_code ec;
    for (auto& e : std::filesystem::directory_iterator("/proc", ec)) {
        const std::string pid = e.path().filename().string();
        if (pid.empty() || pid.find_first_not_of("0123456789") != std::string::npos) continue;
        std::ifstream stat(e.path() / "stat");
        std::string line;
        if (!std::getline(stat, line)) continue;  // gone meanwhile
        const auto close = line.rfind(')');
        if (close == std::string::npos || line.size() < close + 4) continue;
        std::istringstream rest(line.substr(close + 2));
        std::string state;
        int ppid = 0;
        rest >> state >> ppid;
        table.emplace_back(std::stoi(pid), ppid);
    }
    return table;
}

/// Pids of the children of `parent` (default: this process), zombies
/// included, by scanning /proc.
inline std::vector<int> child_pids(int parent = ::getpid()) {
    std::vector<int> pids;
    for (const auto& [pid, ppid] : process_table())
        if (ppid == parent) pids.push_back(pid);
    return pids;
}

/// Children of this process, zombies included.
inline std::size_t child_count() { return child_pids().size(); }

/// Pids of every descendant of `root` (children, their children, ...),
/// zombies included.
inline std::vector<int> descendant_pids(int root = ::getpid()) {
    std::multimap<int, int> children;
    for (const auto& [pid, ppid] : process_table()) children.emplace(ppid, pid);
    std::vector<int> found;
    std::vector<int> todo{root};
    while (!todo.empty()) {
        const int parent = todo.back();
        todo.pop_back();
        for (auto [it, end] = children.equal_range(parent); it != end; ++it) {
            found.push_back(it->second);
            todo.push_back(it->second);
        }
    }
    return found;
}

/// Open file descriptors of process `pid`; 0 for a zombie or a process gone.
inline std::size_t open_fds_of(int pid) {
    std::size_t n = 0;
    std::error_code ec;
    for (std::filesystem::directory_iterator it("/proc/" + std::to_string(pid) + "/fd", ec), end; !ec && it != end;
         it.increment(ec))
        ++n;
    return n;
}

/// Everything a test could leave behind: descriptors of this process, IPC
/// names (ipc_names()), descendant processes (zombies, grandchildren such as
/// fork-server workers, included) and the descriptors those hold.
struct Resources {
    std::size_t fds = 0;
    std::set<std::string> names;
    std::size_t descendants = 0;
    std::size_t descendant_fds = 0;
    bool operator==(const Resources&) const = default;
};

inline Resources resources() {
    Resources r;
    r.fds = open_fds();
    r.names = ipc_names();
    for (int pid : descendant_pids()) {
        ++r.descendants;
        r.descendant_fds += open_fds_of(pid);
    }
    return r;
}

/// The leak checker of every test: takes a snapshot of resources() when
/// made; check() (or the destructor, if check() was not called and no new
/// exception is on its way) CHECKs that all of it is as before. Processes
/// on their way out (a worker that just saw EOF) get up to `grace` to go, so
/// a leak is a process or descriptor still there after it.
///
///     crew_test::LeakCheck leaks;
///     { ... the test ... }
///     leaks.check();
class LeakCheck {
public:
    explicit LeakCheck(std::chrono::milliseconds grace = std::chrono::seconds(10))
        : before_(resources()), grace_(grace), exceptions_(std::uncaught_exceptions()) {}
    LeakCheck(const LeakCheck&) = delete;
    LeakCheck& operator=(const LeakCheck&) = delete;
    ~LeakCheck() {
        if (!checked_ && std::uncaught_exceptions() == exceptions_) check();
    }

    /// What was there at the snapshot.
    [[nodiscard]] const Resources& before() const { return before_; }

    void check() {
        checked_ = true;
        const auto until = std::chrono::steady_clock::now() + grace_;
        Resources now = resources();
        while (!(now == before_) && std::chrono::steady_clock::now() < until) {
            std::this_thread::sleep_for(std::chrono::milliseconds(10));  // polling, not ordering
            now = resources();
        }
        CHECK(now.fds == before_.fds);
        CHECK(now.names == before_.names);
        CHECK(now.descendants == before_.descendants);
        CHECK(now.descendant_fds == before_.descendant_fds);
    }

private:
    Resources before_;
    std::chrono::milliseconds grace_;
    int exceptions_;
    bool checked_ = false;
};

/// A "Vm...:" figure of /proc/<pid>/status ("VmRSS", "VmSize"), in bytes;
/// 0 if unknown.
inline std::size_t status_bytes(int pid, const std::string& field) {
    std::ifstream status("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    const std::string key = field + ":";
    while (std::getline(status, line))
        if (line.rfind(key, 0) == 0) return static_cast<std::size_t>(std::stoull(line.substr(key.size()))) * 1024;
    return 0;
}

/// Resident memory of process `pid` in bytes (VmRSS), 0 if unknown.
inline std::size_t resident_bytes(int pid) { return status_bytes(pid, "VmRSS"); }

}  // namespace crew_test
