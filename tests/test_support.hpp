// Helpers shared by the tests: scale for sanitizer builds, CPU time, leaks.
#pragma once

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

#include <unistd.h>

#include <time.h>

namespace crew_test {

/// True in TSan/ASan builds, which run 5-20x slower.
constexpr bool sanitized() {
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
    return true;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
    return true;
#else
    return false;
#endif
#else
    return false;
#endif
}

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
/// programs may run at the same time). Those names carry the pid of the
/// process that called pair(), which in the tests is always this one.
inline std::set<std::string> ipc_names() {
    std::set<std::string> names;
    const std::string mine = "-" + std::to_string(::getpid()) + "-";
    for (const char* dir : {"/dev/shm", "/dev/mqueue"}) {
        std::error_code ec;
        for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
            const std::string name = entry.path().filename().string();
            if (name.rfind("crew-mq-", 0) == 0 && name.find(mine) == std::string::npos) continue;
            names.insert(std::string(dir) + "/" + name);
        }
    }
    return names;
}

/// Pids of the children of `parent` (default: this process), zombies
/// included, by scanning /proc.
inline std::vector<int> child_pids(int parent = ::getpid()) {
    std::vector<int> pids;
    const std::string me = std::to_string(parent);
    for (auto& e : std::filesystem::directory_iterator("/proc")) {
        std::ifstream stat(e.path() / "stat");
        std::string line;
        if (!std::getline(stat, line)) continue;
        const auto close = line.rfind(')');
        if (close == std::string::npos || line.size() < close + 4) continue;
        std::istringstream rest(line.substr(close + 2));
        std::string state, ppid;
        rest >> state >> ppid;
        if (ppid == me) pids.push_back(std::stoi(e.path().filename().string()));
    }
    return pids;
}

/// Children of this process, zombies included.
inline std::size_t child_count() { return child_pids().size(); }

/// Resident memory of process `pid` in bytes (VmRSS), 0 if unknown.
inline std::size_t resident_bytes(int pid) {
    std::ifstream status("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(status, line))
        if (line.rfind("VmRSS:", 0) == 0) return static_cast<std::size_t>(std::stoull(line.substr(6))) * 1024;
    return 0;
}

}  // namespace crew_test
