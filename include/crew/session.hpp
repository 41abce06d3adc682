// crew/session.hpp — crew::Session, the program's entry point for workers
// that are fresh copies of the program (Start::spawn, Start::fork_server,
// crew::MpiExecutor).
//
// What: the first statement of main():
//
//     int main(int argc, char** argv) {
//         crew::Session session(argc, argv);
//         ...
//     }
//
// In a process its own parent started as a crew worker (or an MPI rank that
// serves), the constructor serves tasks and ends the process: it never
// returns there. Everywhere else it returns at once. A worker has therefore
// run the program's whole static initialisation, every translation unit's
// globals constructed as in the parent, and nothing of main() after that line.
// When: always, in a program that uses ProcessExecutor with its default start
// method (spawn) or fork_server, or MpiExecutor. Start::fork needs none.
// Cost: one getenv when the process is not a worker.
#pragma once

#include <atomic>
#include <cstdio>
#include <cstdlib>

namespace crew {

namespace detail {

/// Something a Session runs at construction (and, reversed, at destruction):
/// e.g. <crew/mpi.hpp> registers one that initialises MPI, and makes ranks
/// other than 0 serve. `enter` never returns in a process that serves.
struct SessionHook {
    void (*enter)(int& argc, char**& argv) = nullptr;
    void (*leave)() = nullptr;
};

inline constexpr int max_session_hooks = 4;

struct SessionRegistry {
    SessionHook hooks[max_session_hooks] = {};
    int count = 0;
    /// How many Sessions were constructed in this process, and whether one
    /// was made by the main program's own code (not a shared library's).
    std::atomic<int> sessions{0};
};

inline SessionRegistry& session_registry() noexcept {
    static SessionRegistry registry;
    return registry;
}

/// Called during static initialisation by headers that need the Session
/// (one call per hook; the order of calls is the order of `enter`s).
inline bool register_session_hook(SessionHook hook) noexcept {
    auto& r = session_registry();
    for (int i = 0; i < r.count; ++i)
        if (r.hooks[i].enter == hook.enter) return true;
    if (r.count == max_session_hooks) return false;
    r.hooks[r.count++] = hook;
    return true;
}

/// Set by <crew/process_executor.hpp>: serves as a worker when this process
/// was started as one by its own parent; returns otherwise.
inline void (*serve_if_worker)() = nullptr;

}  // namespace detail

/// The program's entry point for crew's worker processes; see the top of
/// this header. Create exactly one, first thing in main().
class Session {
public:
    Session() : Session(no_argc_, no_argv_) {}

    /// `argc`/`argv` are main()'s; a hook (MPI) may remove its own arguments.
    Session(int& argc, char**& argv) {
        if (detail::serve_if_worker != nullptr) detail::serve_if_worker();  // never returns in a worker
        auto& r = detail::session_registry();
        for (int i = 0; i < r.count; ++i)
            if (r.hooks[i].enter != nullptr) r.hooks[i].enter(argc, argv);
        r.sessions.fetch_add(1, std::memory_order_release);
    }

    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;

    ~Session() {
        auto& r = detail::session_registry();
        for (int i = r.count; i-- > 0;)
            if (r.hooks[i].leave != nullptr) r.hooks[i].leave();
    }

    /// True when a Session exists (or existed) in this process.
    [[nodiscard]] static bool active() noexcept {
        return detail::session_registry().sessions.load(std::memory_order_acquire) > 0;
    }

private:
    static inline int no_argc_ = 0;
    static inline char** no_argv_ = nullptr;
};

}  // namespace crew
