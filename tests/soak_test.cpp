// Fault-injection soak: thousands of tasks over every Channel x Sync
// combination, where at random (fixed seed) a task throws, returns a large
// payload, sleeps past task_timeout, calls abort(), or its worker is
// SIGKILLed. Every future must resolve exactly once, with the right value or
// the right error; nothing may hang or leak.
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <crew/crew.hpp>

#include "catch.hpp"
#include "test_support.hpp"

namespace {

enum Fault : int { none, throws, large, overtime, aborts, killed };

constexpr std::size_t large_bytes = std::size_t{1} << 20;

std::vector<char> soak_task(int fault, int i) {
    switch (fault) {
        case throws: throw std::runtime_error("fault " + std::to_string(i));
        case large: return std::vector<char>(large_bytes, static_cast<char>(i));
        case overtime: std::this_thread::sleep_for(std::chrono::seconds(5)); break;
        case aborts: std::abort();
        case killed: std::raise(SIGKILL);  // as a kill from outside: no handler can run
        default: break;
    }
    return std::vector<char>(4, static_cast<char>(i));
}

// Per 10,000 tasks: 50 throw, 50 return 1 MiB, 3 overrun the timeout, 30
// abort, 20 are killed; the rest return 4 bytes.
Fault pick(std::mt19937& rng) {
    const auto r = std::uniform_int_distribution<int>(0, 9'999)(rng);
    if (r < 50) return throws;
    if (r < 100) return large;
    if (r < 103) return overtime;
    if (r < 133) return aborts;
    if (r < 153) return killed;
    return none;
}

template <class Channel, class Sync>
struct Combo {
    using Executor = crew::ProcessExecutor<Channel, Sync>;
};

using Combos = std::tuple<
    Combo<crew::ipc::SharedMemory, crew::sync::LockFree>, Combo<crew::ipc::SharedMemory, crew::sync::Mutex>,
    Combo<crew::ipc::SharedMemory, crew::sync::Semaphore>, Combo<crew::ipc::Pipe, crew::sync::LockFree>,
    Combo<crew::ipc::Pipe, crew::sync::Mutex>, Combo<crew::ipc::Pipe, crew::sync::Semaphore>,
    Combo<crew::ipc::Socket, crew::sync::LockFree>, Combo<crew::ipc::Socket, crew::sync::Mutex>,
    Combo<crew::ipc::Socket, crew::sync::Semaphore>, Combo<crew::ipc::MessageQueue, crew::sync::LockFree>,
    Combo<crew::ipc::MessageQueue, crew::sync::Mutex>, Combo<crew::ipc::MessageQueue, crew::sync::Semaphore>>;

}  // namespace

TEMPLATE_LIST_TEST_CASE("soak: random faults, every future resolves exactly once with the right outcome",
                        "[soak][process]", Combos) {
    // 20,000 per combination in the plain build; sanitizers run 10x slower.
    const int tasks = crew_test::sanitized() ? 2'000 : 20'000;
    crew_test::LeakCheck leaks;
    std::mt19937 rng(20261122);
    int seen[6] = {};
    int wrong = 0;
    {
        typename TestType::Executor ex(2, crew::Options{.task_timeout = std::chrono::milliseconds(300)});
        // A window of futures in flight: many batches, bounded memory.
        constexpr std::size_t window = 256;
        std::vector<std::pair<Fault, crew::Future<std::vector<char>>>> inflight;
        auto settle = [&](std::pair<Fault, crew::Future<std::vector<char>>>& entry, int i) {
            const Fault fault = entry.first;
            Fault got = none;
            try {
                const auto v = entry.second.get();
                const std::size_t want = fault == large ? large_bytes : 4;
                got = v.size() == want && v.back() == static_cast<char>(i) ? (fault == large ? large : none)
                                                                            : Fault(-1);
            } catch (const crew::Timeout&) {
                got = overtime;
            } catch (const crew::WorkerDied& e) {
                got = e.signal() == SIGABRT ? aborts : e.signal() == SIGKILL ? killed : Fault(-1);
                // A sanitizer's abort handler turns SIGABRT into an exit.
                if (crew_test::sanitized() && fault == aborts && e.exit_code() != 0) got = aborts;
            } catch (const crew::Error&) {
                got = Fault(-1);
            } catch (const std::runtime_error& e) {  // the task's own exception type, as on threads
                got = std::string(e.what()) == "fault " + std::to_string(i) ? throws : Fault(-1);
            } catch (...) {
                got = Fault(-1);
            }
            if (got != fault) ++wrong;
            if (got >= 0) ++seen[got];
            REQUIRE_FALSE(entry.second.valid());  // get() took it: resolved exactly once
        };
        int settled = 0;
        for (int i = 0; i < tasks; ++i) {
            const Fault fault = pick(rng);
            inflight.emplace_back(fault, ex.submit(soak_task, static_cast<int>(fault), i));
            if (inflight.size() == window) {
                for (auto& entry : inflight) settle(entry, settled++);
                inflight.clear();
            }
        }
        for (auto& entry : inflight) settle(entry, settled++);
        CHECK(settled == tasks);
    }
    CHECK(wrong == 0);
    INFO("none " << seen[none] << ", throws " << seen[throws] << ", large " << seen[large] << ", overtime "
                 << seen[overtime] << ", aborts " << seen[aborts] << ", killed " << seen[killed]);
    CHECK(seen[none] + seen[throws] + seen[large] + seen[overtime] + seen[aborts] + seen[killed] == tasks);
    CHECK(seen[aborts] > 0);
    leaks.check();
}
