// bench/bench.hpp — what crew's benchmarks share: command-line options, the
// one timing helper, medians over interleaved repetitions, and the markdown
// tables they print (crew rows, peer rows, then crew/peer ratios).
//
// Method: every case runs once unmeasured (warm-up), then `reps` times,
// round-robin over the cases, so a drift of a shared VM hits every case
// alike; the figure reported is the median, with min and max beside it.
// Threads are not pinned.
#pragma once

#include <algorithm>
#include <cstring>
#include <ctime>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <dirent.h>
#include <unistd.h>

namespace bench {

/// Seconds that `f()` takes, on the steady clock.
template <class F>
double seconds(F&& f) {
    const auto start = std::chrono::steady_clock::now();
    f();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

/// A benchmark that lies is worse than none: stop the run.
inline void check(bool ok, const char* what) {
    if (ok) return;
    std::fprintf(stderr, "bench: check failed: %s\n", what);
    std::exit(2);
}

struct Options {
    int reps = 5;            ///< measured repetitions per case (median reported)
    double scale = 1.0;      ///< multiplies every N
    std::size_t workers = 2; ///< pool size (thread-pool bench only)
    std::string only;        ///< run only the rows whose title contains this
    std::string python = "python3";  ///< runs the Python peers (bench/python_pool.py)

    [[nodiscard]] bool wants(std::string_view title) const { return title.find(only) != std::string_view::npos; }

    [[nodiscard]] std::size_t n(std::size_t base) const {
        auto v = static_cast<std::size_t>(static_cast<double>(base) * scale);
        return v == 0 ? 1 : v;
    }
};

/// Parses --reps=N, --scale=X, --only=TEXT, --python=PATH and, when
/// `with_workers`, --workers=N.
inline Options parse(int argc, char** argv, bool with_workers) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        std::string_view a = argv[i];
        auto value = [&](std::string_view key) -> std::optional<std::string> {
            if (a.substr(0, key.size()) != key) return std::nullopt;
            return std::string(a.substr(key.size()));
        };
        if (auto v = value("--reps=")) {
            o.reps = std::max(1, std::atoi(v->c_str()));
        } else if (auto v = value("--scale=")) {
            o.scale = std::atof(v->c_str());
        } else if (auto v = value("--only=")) {
            o.only = *v;
        } else if (auto v = value("--python=")) {
            o.python = *v;
        } else if (auto v = value("--workers="); v && with_workers) {
            o.workers = static_cast<std::size_t>(std::max(1, std::atoi(v->c_str())));
        } else {
            std::fprintf(stderr, "usage: %s [--reps=N] [--scale=X] [--only=TEXT] [--python=PATH]%s\n", argv[0],
                         with_workers ? " [--workers=N]" : "");
            std::exit(1);
        }
    }
    return o;
}

/// One row: `run` does the whole measurement (set-up untimed) and returns the
/// figure, e.g. ns per task.
struct Case {
    std::string name;
    bool crew;
    std::function<double()> run;
};

struct Result {
    std::string name;
    bool crew;
    double median, min, max;
};

inline std::vector<Result> measure(const std::vector<Case>& cases, int reps) {
    std::vector<std::vector<double>> samples(cases.size());
    for (const auto& c : cases) c.run();  // warm-up, not counted
    for (int r = 0; r < reps; ++r)
        for (std::size_t i = 0; i < cases.size(); ++i) samples[i].push_back(cases[i].run());
    std::vector<Result> out;
    for (std::size_t i = 0; i < cases.size(); ++i) {
        auto& s = samples[i];
        std::sort(s.begin(), s.end());
        double median = s.size() % 2 ? s[s.size() / 2] : (s[s.size() / 2 - 1] + s[s.size() / 2]) / 2;
        out.push_back({cases[i].name, cases[i].crew, median, s.front(), s.back()});
    }
    return out;
}

#ifdef CREW_BENCH_SOURCE_DIR
/// The Python that runs the peers of bench/python_pool.py, as found: a
/// missing interpreter skips the Python rows (a peer that is not installed
/// is never an error), a missing numpy only the rows that need it.
struct Python {
    std::string command;  ///< empty: no Python rows
    bool has_numpy = false;

    /// What `python_pool.py probe` says under `command`; says so when it
    /// does not run.
    static Python find(const std::string& command) {
        const auto word = first_word(command, "probe 2>/dev/null");
        if (!word) {
            std::printf("\n(%s does not run bench/python_pool.py: the Python rows are skipped)\n", command.c_str());
            return {};
        }
        return {command, *word == "numpy"};
    }

    /// A peer row: `python_pool.py <args>`, which times itself (its start-up
    /// untimed) and prints the figure.
    [[nodiscard]] Case row(std::string name, std::string args) const {
        return {std::move(name), false, [command = command, args = std::move(args)] {
                    const auto word = first_word(command, args);
                    const double figure = word ? std::atof(word->c_str()) : 0;
                    check(figure > 0, "python_pool.py printed a figure");
                    return figure;
                }};
    }

private:
    /// The first word `command bench/python_pool.py <args>` prints, or
    /// nothing when it printed none or failed.
    static std::optional<std::string> first_word(const std::string& command, const std::string& args) {
        const std::string cmd = command + " " CREW_BENCH_SOURCE_DIR "/python_pool.py " + args;
        FILE* p = ::popen(cmd.c_str(), "r");
        check(p != nullptr, "popen");
        char out[64] = {};
        const bool read = std::fscanf(p, "%63s", out) == 1;
        if (::pclose(p) != 0 || !read) return std::nullopt;
        return std::string(out);
    }
};
#endif

/// CPU seconds (user + system) used so far by this process and by its
/// children that still run (worker processes, found in /proc since they have
/// not been waited for). For idle-cost rows. Read from the CPU-time clocks
/// (nanoseconds), not /proc's utime and stime, which count whole 10 ms ticks.
inline double cpu_seconds_of_tree() {
    auto seconds_of = [](clockid_t clock) {
        timespec t{};
        if (::clock_gettime(clock, &t) != 0) return 0.0;
        return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) * 1e-9;
    };
    auto parent_of = [](const std::string& stat_path) -> long {
        std::FILE* f = std::fopen(stat_path.c_str(), "r");
        if (f == nullptr) return 0;
        char buf[1024];
        const std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
        std::fclose(f);
        buf[n] = '\0';
        const char* p = std::strrchr(buf, ')');  // the command may hold spaces
        long ppid = 0;
        if (p == nullptr || std::sscanf(p + 2, "%*c %ld", &ppid) != 1) return 0;
        return ppid;
    };
    double total = seconds_of(CLOCK_PROCESS_CPUTIME_ID);
    const long self = static_cast<long>(::getpid());
    if (DIR* d = ::opendir("/proc")) {
        while (const dirent* e = ::readdir(d)) {
            if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
            if (parent_of(std::string("/proc/") + e->d_name + "/stat") != self) continue;
            clockid_t child{};
            if (::clock_getcpuclockid(static_cast<pid_t>(std::atol(e->d_name)), &child) == 0)
                total += seconds_of(child);
        }
        ::closedir(d);
    }
    return total;
}

/// Three significant digits, no exponent: 0.0912, 1.23, 45.6, 789, 12345.
inline std::string fmt(double v) {
    char buf[32];
    int decimals = v >= 100 ? 0 : v >= 10 ? 1 : v >= 1 ? 2 : v >= 0.1 ? 3 : 4;
    std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
    return buf;
}

/// A goal stated in ANCHORS.md: crew's median at most `max_ratio` times the
/// peer named `peer`, or the fastest peer when `peer` is empty.
struct Target {
    double max_ratio;
    std::string_view peer;
};

/// Prints the medians, then crew/peer ratios (and the target, if any).
inline void report(std::string_view title, std::string_view unit, const std::vector<Result>& results,
                   std::optional<Target> target = std::nullopt) {
    std::printf("\n### %.*s\n\n| | %.*s (median) | min | max |\n|---|---:|---:|---:|\n", int(title.size()),
                title.data(), int(unit.size()), unit.data());
    for (const auto& r : results)
        std::printf("| %s | %s | %s | %s |\n", r.name.c_str(), fmt(r.median).c_str(), fmt(r.min).c_str(),
                    fmt(r.max).c_str());

    std::vector<const Result*> peers;
    for (const auto& r : results)
        if (!r.crew) peers.push_back(&r);
    if (peers.empty()) {
        std::printf("\n(no peer was built: no ratios)\n");
        return;
    }
    const Result* reference = peers.front();
    std::string goal;
    if (target) {
        if (target->peer.empty()) {
            reference = *std::min_element(peers.begin(), peers.end(),
                                          [](auto* a, auto* b) { return a->median < b->median; });
            goal = "<= " + fmt(target->max_ratio) + "x fastest peer (" + reference->name + ")";
        } else {
            auto it = std::find_if(peers.begin(), peers.end(), [&](auto* p) { return p->name == target->peer; });
            reference = it == peers.end() ? nullptr : *it;
            goal = "<= " + fmt(target->max_ratio) + "x " + std::string(target->peer);
        }
    }

    std::printf("\n| crew / peer |");
    for (auto* p : peers) std::printf(" %s |", p->name.c_str());
    if (target) std::printf(" target | |");
    std::printf("\n|---|");
    for (std::size_t i = 0; i < peers.size(); ++i) std::printf("---:|");
    if (target) std::printf("---|---|");
    std::printf("\n");
    for (const auto& r : results) {
        if (!r.crew) continue;
        std::printf("| %s |", r.name.c_str());
        for (auto* p : peers) std::printf(" %sx |", fmt(r.median / p->median).c_str());
        if (target) {
            if (reference == nullptr)
                std::printf(" %s | (peer not built) |", goal.c_str());
            else
                std::printf(" %s | %s |", goal.c_str(),
                            r.median <= target->max_ratio * reference->median ? "MET" : "NOT MET");
        }
        std::printf("\n");
    }
    std::fflush(stdout);
}

}  // namespace bench
