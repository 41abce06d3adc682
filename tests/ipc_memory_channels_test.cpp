// What only the channels without a byte stream underneath have
// (crew::ipc::SharedMemory in its Sync forms, crew::ipc::MessageQueue): no
// name and a sealed memfd for SharedMemory, the life of MessageQueue's names
// in /dev/shm, a peer that dies inside a MessageQueue operation, the Mutex
// policy's signal with a stopped peer, and an end of one Sync form refused by
// another. What every channel does is in tests/channel_suite.hpp.

#include <crew/detail/shm_signal.hpp>
#include <crew/ipc/message_queue.hpp>
#include <crew/ipc/shared_memory.hpp>
#include <crew/sync/mutex.hpp>
#include <crew/sync/semaphore.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <filesystem>
#include <new>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "catch.hpp"
#include "channel_helpers.hpp"
#include "test_support.hpp"

namespace {

using chan::Child;
using chan::contains;
using chan::Latch;
using crew::ChannelError;
using crew::ipc::MessageQueue;
using crew::ipc::SharedMemory;
using ShmMutex = crew::ipc::BasicSharedMemory<crew::sync::Mutex>;
using ShmSemaphore = crew::ipc::BasicSharedMemory<crew::sync::Semaphore>;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

static_assert(std::is_same_v<crew::ipc::with_sync_t<SharedMemory, crew::sync::Mutex>, ShmMutex>);
static_assert(std::is_same_v<crew::ipc::with_sync_t<MessageQueue, crew::sync::Mutex>, MessageQueue>);

/// This process's MessageQueue names in /dev/shm.
std::vector<std::string> my_mq_names(pid_t creator = ::getpid()) {
    std::vector<std::string> names;
    const std::string prefix = "crew-mq-" + std::to_string(creator) + "-";
    for (const auto& entry : std::filesystem::directory_iterator("/dev/shm")) {
        const std::string name = entry.path().filename().string();
        if (name.rfind(prefix, 0) == 0) names.push_back(entry.path().string());
    }
    return names;
}

}  // namespace

// ---------------------------------------------------------------------------

TEST_CASE("SharedMemory has no name and its fd is close-on-exec until exported", "[ipc][memory]") {
    crew_test::LeakCheck leaks;
    {
        auto ends = SharedMemory::pair();
        CHECK(crew_test::ipc_names() == leaks.before().names);
        CHECK(crew_test::open_fds() == leaks.before().fds + 2);  // one memfd per endpoint
        const std::string text = ends.second.export_handle();
        CHECK(text.rfind("shm:", 0) == 0);
        CHECK(text.substr(text.size() - 2) == ":1");
        const int fd = std::stoi(text.substr(4));
        CHECK((::fcntl(fd, F_GETFD) & FD_CLOEXEC) == 0);
        CHECK((::fcntl(fd, F_GET_SEALS) & F_SEAL_SHRINK) != 0);  // the other side cannot pull memory away
    }
    leaks.check();
}

TEST_CASE("MessageQueue's names are private and gone once both sides have the queues", "[ipc][memory]") {
    crew_test::LeakCheck leaks;
    {
        SECTION("0600, unguessable, and removed when the forked child binds") {
            auto ends = MessageQueue::pair();
            const auto names = my_mq_names();
            REQUIRE(names.size() == 3);  // two queues and the control block, all in /dev/shm
            for (const auto& name : names) {
                struct stat st {};
                REQUIRE(::stat(name.c_str(), &st) == 0);
                CHECK((st.st_mode & 0777) == 0600);
                CHECK(st.st_uid == ::geteuid());
                INFO(name);
                CHECK(name.size() >= std::string("/dev/shm/crew-mq-1-").size() + 32);
            }
            Latch bound;
            Child child([&] {
                ends.first.close();
                ends.second.bind_to_current_process();
                bound.open();
                return chan::echo<MessageQueue>(ends.second);
            });
            ends.second.close();
            REQUIRE(bound.wait());
            CHECK(my_mq_names().empty());
            ends.first.send(3);
            CHECK(ends.first.template receive<int>() == 3);
            ends.first.close();
            CHECK(child.wait() == 0);
        }
        SECTION("removed when the first message arrives") {
            auto ends = MessageQueue::pair();
            ends.second.send(1);
            CHECK(my_mq_names().size() == 3);
            CHECK(ends.first.template receive<int>() == 1);
            CHECK(my_mq_names().empty());
            CHECK_THROWS_AS(ends.second.export_handle(), ChannelError);  // nothing left to open by name
        }
        SECTION("removed when the parent's end closes, even if the child never came") {
            auto ends = MessageQueue::pair();
            const std::string text = ends.second.export_handle();
            ends.first.close();
            CHECK(my_mq_names().empty());
            CHECK_THROWS_AS(MessageQueue::Endpoint::import_handle(text), ChannelError);
        }
        SECTION("removed when an unused pair is destroyed") {
            { auto ends = MessageQueue::pair(); }
            CHECK(my_mq_names().empty());
        }
        SECTION("left by a creator killed before its child came: removed by a later pair(), not before") {
            // A creator that stays alive keeps its names, however old.
            Latch made, done;
            Child alive([&] {
                auto ends = MessageQueue::pair();
                made.open();
                (void)done.wait(30s);
                return 0;
            });
            REQUIRE(made.wait());
            const pid_t alive_pid = alive.pid();
            // Another creator is SIGKILLed between pair() and any use.
            Child killed([] {
                auto ends = MessageQueue::pair();
                ::raise(SIGKILL);
                return 0;
            });
            const pid_t killed_pid = killed.pid();
            CHECK(killed.wait() == 128 + SIGKILL);
            CHECK(my_mq_names(killed_pid).size() == 3);
            { auto young = MessageQueue::pair(); }  // within the grace: left alone
            CHECK(my_mq_names(killed_pid).size() == 3);
            std::this_thread::sleep_for(crew::detail::mq_orphan_grace + 100ms);
            { auto later = MessageQueue::pair(); }
            CHECK(my_mq_names(killed_pid).empty());
            CHECK(my_mq_names(alive_pid).size() == 3);
            done.open();
            CHECK(alive.wait() == 0);
            CHECK(my_mq_names(alive_pid).empty());
        }
    }
    leaks.check();
}

TEST_CASE("MessageQueue: a peer that dies inside a queue operation is a ChannelError, never a hang",
          "[ipc][memory]") {
    // Boost's queue mutex is not robust; crew runs every Boost call under a
    // robust guard per direction. The child takes the guard as a send would
    // and is killed there, as if it died inside Boost holding Boost's lock.
    crew_test::LeakCheck leaks;
    {
        auto ends = MessageQueue::pair();
        const std::string text = ends.second.export_handle();  // "mq:<base>:1"
        const std::string control_name = "/" + text.substr(3, text.rfind(':') - 3) + "-c";
        Child child([&] {
            ends.first.close();
            const int fd = ::shm_open(control_name.c_str(), O_RDWR, 0);
            if (fd < 0) return 90;
            void* p = ::mmap(nullptr, crew::detail::mq_control_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
            if (p == MAP_FAILED) return 91;
            ends.second.bind_to_current_process();
            static_cast<crew::detail::MqControl*>(p)->dir[1].guard.lock();  // side 1 sends on dir[1]
            ::raise(SIGKILL);
            return 92;
        });
        ends.second.close();
        REQUIRE(child.wait() == 128 + SIGKILL);
        std::vector<std::byte> out;
        const auto start = Clock::now();
        try {
            (void)ends.first.receive_bytes_until(out, Clock::now() + 10s);
            FAIL("no exception");
        } catch (const ChannelError& e) {
            CHECK(contains(e.what(), "died in the middle"));
        }
        CHECK(Clock::now() - start < 5s);
        CHECK_THROWS_AS(ends.first.receive_bytes(out), ChannelError);  // and stays so
    }
    leaks.check();
}

TEST_CASE("ShmMutex: a peer stopped inside the monitor never holds a timed wait past its deadline", "[ipc][memory]") {
    // The Mutex policy's signal takes a process-shared mutex to notify. A
    // peer stopped (SIGSTOP, a debugger) while it holds that mutex used to
    // block the other side's timed receive until it was continued; CI hung
    // once so (the parent, which was to send SIGCONT, waited for ever). Here
    // the child notifies without pause, so it is often stopped holding it.
    crew_test::LeakCheck leaks;
    void* memory = ::mmap(nullptr, sizeof(crew::detail::MonitorSignal), PROT_READ | PROT_WRITE,
                          MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    REQUIRE(memory != MAP_FAILED);
    auto* signal = new (memory) crew::detail::MonitorSignal();
    (void)signal->prepare_wait();  // a waiter announced: every notify takes the mutex
    Child child([&] {
        for (;;) signal->notify_all();
        return 0;
    });
    const int rounds = crew_test::sanitized() ? 100 : 300;
    auto slowest = Clock::duration::zero();
    for (int round = 0; round < rounds; ++round) {
        std::this_thread::sleep_for(std::chrono::microseconds(200 + 37 * (round % 11)));
        REQUIRE(child.stop());  // stopped for sure, or fails within a deadline
        const auto start = Clock::now();
        const auto deadline = start + 20ms;
        const auto key = signal->prepare_wait();
        (void)signal->wait(key, &deadline);
        slowest = std::max(slowest, Clock::now() - start);
        REQUIRE(::kill(child.pid(), SIGCONT) == 0);
    }
    const double slowest_ms = std::chrono::duration<double, std::milli>(slowest).count();
    INFO("slowest timed wait: " << slowest_ms << " ms");
    CHECK(slowest < 2s);
    ::kill(child.pid(), SIGKILL);
    (void)child.wait();
    ::munmap(memory, sizeof(crew::detail::MonitorSignal));
    leaks.check();
}

TEST_CASE("SharedMemory: an end of one Sync policy's channel is refused by another's", "[ipc][memory]") {
    crew_test::LeakCheck leaks;
    {
        auto ends = ShmMutex::pair();
        const std::string text = ends.second.export_handle();  // "shm-mutex:<fd>:1"
        CHECK_THROWS_AS(SharedMemory::Endpoint::import_handle(text), ChannelError);
        CHECK_THROWS_AS(ShmSemaphore::Endpoint::import_handle(text), ChannelError);
        // The right prefix on the wrong memory: the block's magic tells.
        const std::string as_plain = "shm" + text.substr(text.find(':'));
        try {
            (void)SharedMemory::Endpoint::import_handle(as_plain);
            FAIL("no exception");
        } catch (const ChannelError& e) {
            CHECK(contains(e.what(), "Sync policy"));
        }
        // The right kind takes it (a duplicate fd: import takes ownership).
        const int fd = ::fcntl(std::stoi(text.substr(text.find(':') + 1)), F_DUPFD_CLOEXEC, 0);
        REQUIRE(fd >= 0);
        ends.second = ShmMutex::Endpoint::import_handle("shm-mutex:" + std::to_string(fd) + ":1");
        ends.first.send(std::string("hi"));
        CHECK(ends.second.receive<std::string>() == "hi");
    }
    leaks.check();
}
