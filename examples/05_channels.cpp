// 05_channels: crew's four IPC channels, each on its own between a parent and
// a child process.
//
// What it teaches: a channel is a pair of connected endpoints. The parent
// makes the pair, fork()s, and each process keeps one end: end.send(value)
// encodes a value with crew::Codec and sends it as one message,
// end.receive<T>() takes the next message and decodes it. The code below is
// one template, because all four channels have the same interface:
//   Pipe          two kernel pipes, one per direction; the simplest
//   Socket        a UNIX socket pair; faster than pipes for big messages
//   SharedMemory  two rings in shared memory; the fastest (executor default)
//   MessageQueue  two Boost.Interprocess queues; needs names in /dev/shm
//
// What to look for in the output: for each channel, the child squares the
// number and upper-cases the words it received, and exits with status 0.
#include <cctype>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

#include <crew/crew.hpp>

namespace {

// The child: answer one request, then leave. Its exit status tells the parent
// whether it went well (a child must not return into the parent's main()).
template <class C>
[[noreturn]] void child_main(typename C::Endpoint& end) {
    int status = 0;
    try {
        auto n = end.template receive<int>();
        auto words = end.template receive<std::vector<std::string>>();
        for (auto& w : words)
            for (auto& c : w) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        end.send(n * n);
        end.send(words);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "child: %s\n", e.what());
        status = 1;
    }
    ::_exit(status);  // _exit: run none of the parent's destructors or atexit handlers
}

template <class C>
bool demo() {
    auto ends = C::pair();  // first: the parent's end, second: the child's
    auto& parent_end = ends.first;
    auto& child_end = ends.second;
    std::fflush(stdout);  // else the child inherits, and prints again, what is still buffered
    const pid_t pid = ::fork();
    if (pid < 0) return false;
    if (pid == 0) {
        // Shared memory and message queues have no EOF: each side records which
        // process uses it, so the peer can notice if it dies. Claim our side first.
        if constexpr (requires { child_end.bind_to_current_process(); }) child_end.bind_to_current_process();
        parent_end.close();  // each process closes the end it does not use
        child_main<C>(child_end);
    }
    child_end.close();

    bool ok = false;
    try {
        parent_end.send(12);
        parent_end.send(std::vector<std::string>{"hello", "channel"});
        const int square = parent_end.template receive<int>();
        const auto shouted = parent_end.template receive<std::vector<std::string>>();
        std::printf("%-7s: 12 -> %d, hello channel -> %s %s", std::string(C::name).c_str(), square,
                    shouted.at(0).c_str(), shouted.at(1).c_str());
        ok = square == 144 && shouted == std::vector<std::string>{"HELLO", "CHANNEL"};
    } catch (const std::exception& e) {
        // A child that died early surfaces here as crew::ChannelError.
        std::printf("%-7s: %s", std::string(C::name).c_str(), e.what());
    }
    parent_end.close();

    int status = 0;
    ::waitpid(pid, &status, 0);  // always reap the child (no zombie)
    const bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    std::printf(", child exit status %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    return ok && clean;
}

}  // namespace

int main(int argc, char** argv) {
    crew::Session session(argc, argv);  // first: spawned workers serve from here
    bool ok = demo<crew::ipc::Pipe>();
    ok = demo<crew::ipc::Socket>() && ok;
    ok = demo<crew::ipc::SharedMemory>() && ok;
    ok = demo<crew::ipc::MessageQueue>() && ok;
    if (!ok) {
        std::fprintf(stderr, "FAIL: a channel did not carry the values correctly\n");
        return 1;
    }
    return 0;
}
