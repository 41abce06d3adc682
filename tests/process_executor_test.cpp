// What only worker processes do: crash isolation, timeouts, recycling, memory
// limits, initializers, remote exceptions, big payloads, start methods, and
// leaving nothing behind.
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <future>
#include <list>
#include <memory>
#include <ranges>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <crew/crew.hpp>

#include "catch.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;

std::size_t crew_test_other_tu_table_size();  // tests/globals_other_tu.cpp

namespace {

int identity(int x) { return x; }

int crash_on(int x) {
    if (x == 5) std::abort();
    if (x == 17) std::raise(SIGSEGV);
    if (x == 29) ::_exit(3);
    return x;
}

int own_pid() { return static_cast<int>(::getpid()); }
int sleepy_pid(int ms) {
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    return static_cast<int>(::getpid());
}

/// Returns `value` once the test raised `gate[0]` (30 s at most).
int when_released(crew::SharedArray<int> gate, int value) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::atomic_ref<int>(gate[0]).load() == 0 && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return value;
}
/// Counts one run of task `slot` in `runs` (shared with the parent), and
/// returns the slot.
int count_run(crew::SharedArray<int> runs, int slot) {
    std::atomic_ref<int>(runs[static_cast<std::size_t>(slot)]).fetch_add(1);
    return slot;
}
int sleep_ms(int ms) {
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    return ms;
}

std::size_t allocate(std::size_t bytes) {
    std::vector<char> block(bytes, 1);
    return block.size();
}

int initialized_value = 0;
void set_initialized() { initialized_value = 42; }
int read_initialized() { return initialized_value; }

std::string initialized_text;  // set by configure() in each worker
void configure(int value, std::string text) {
    initialized_value = value;
    initialized_text = std::move(text);
}
std::string read_configured() { return std::to_string(initialized_value) + " " + initialized_text; }

std::vector<char> echo(std::vector<char> bytes) { return bytes; }
std::vector<char> make_bytes(std::size_t n) { return std::vector<char>(n, 'r'); }
std::size_t slow_size(std::vector<char> bytes, int ms) {
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    return bytes.size();
}

// A global with a dynamic initialiser, defined after crew's headers: a worker
// must see it constructed, as main() does.
std::vector<int> make_table() {
    std::vector<int> t;
    for (int i = 0; i < 256; ++i) t.push_back(i);
    return t;
}
const std::vector<int> table_here = make_table();
std::size_t table_size_here() { return table_here.size(); }

// Hostile tasks: write garbage into every fd the worker has (its channel
// included), or close them all.
int scribble() {
    const unsigned char garbage[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 1, 2, 3, 4, 5, 6, 7, 8};
    for (int fd = 3; fd < 1024; ++fd) (void)!::write(fd, garbage, sizeof garbage);
    return 1;
}
int close_everything() {
    for (int fd = 3; fd < 1024; ++fd) ::close(fd);
    return 2;
}

struct CustomError : std::runtime_error {
    using std::runtime_error::runtime_error;
};
int throw_custom() { throw CustomError("custom failure"); }

// Leak check around a block (checked at its end): fds, descendants and the
// fds they hold, IPC names as before.
using NoLeaks = crew_test::LeakCheck;

using Channels = std::tuple<crew::ipc::SharedMemory, crew::ipc::Pipe, crew::ipc::Socket, crew::ipc::MessageQueue>;
using StreamChannels = std::tuple<crew::ipc::Pipe, crew::ipc::Socket>;  // the ones made of fds

}  // namespace

TEMPLATE_LIST_TEST_CASE("a crash fails only its own task", "[process][crash]", Channels) {
    NoLeaks guard;
    crew::ProcessExecutor<TestType> ex(2);
    std::vector<crew::Future<int>> fs;
    for (int i = 0; i < 40; ++i) fs.push_back(ex.submit(crash_on, i));
    std::set<int> died;
    for (int i = 0; i < 40; ++i) {
        try {
            int value = fs[static_cast<std::size_t>(i)].get();
            CHECK(value == i);
        } catch (const crew::WorkerDied& e) {
            died.insert(i);
            if (i == 5) CHECK(e.signal() == SIGABRT);
            // A sanitizer's SEGV handler turns the signal into a report and an exit.
            if (i == 17) CHECK((e.signal() == SIGSEGV || (crew_test::sanitized() && e.exit_code() != 0)));
            if (i == 29) CHECK(e.exit_code() == 3);
        }
    }
    CHECK(died == std::set<int>{5, 17, 29});
    CHECK(ex.submit(identity, 7).get() == 7);  // still serving
}

TEMPLATE_LIST_TEST_CASE("a worker SIGKILLed from outside fails its task, the rest go on", "[process][crash]",
                        Channels) {
    NoLeaks guard;
    crew::ProcessExecutor<TestType> ex(1);
    int pid = ex.submit(own_pid).get();
    auto victim = ex.submit(sleep_ms, 2000);
    auto after = ex.submit(identity, 9);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ::kill(pid, SIGKILL);
    CHECK_THROWS_AS(victim.get(), crew::WorkerDied);
    CHECK(after.get() == 9);
}

TEST_CASE("task_timeout kills the worker and fails the task with Timeout", "[process]") {
    NoLeaks guard;
    crew::ProcessExecutor<> ex(1, crew::Options{.task_timeout = std::chrono::milliseconds(200)});
    auto slow = ex.submit(sleep_ms, 5000);
    auto next = ex.submit(sleep_ms, 1);
    CHECK_THROWS_AS(slow.get(), crew::Timeout);
    CHECK(next.get() == 1);
}

TEST_CASE("max_tasks_per_worker recycles workers", "[process]") {
    NoLeaks guard;
    crew::ProcessExecutor<> ex(1, crew::Options{.max_tasks_per_worker = 2});
    std::vector<int> pids;
    for (int i = 0; i < 6; ++i) pids.push_back(ex.submit(own_pid).get());
    CHECK(pids[0] == pids[1]);
    CHECK(pids[1] != pids[2]);
    CHECK(pids[2] == pids[3]);
    CHECK(pids[3] != pids[4]);
}

TEST_CASE("memory_limit turns a huge allocation into std::bad_alloc", "[process]") {
    // Sanitizers reserve terabytes of address space; RLIMIT_AS breaks them.
    if (crew_test::sanitized()) return;
    NoLeaks guard;
    crew::ProcessExecutor<> ex(1, crew::Options{.memory_limit = std::size_t{512} << 20});
    CHECK(ex.submit(allocate, std::size_t{1} << 20).get() == std::size_t{1} << 20);
    CHECK_THROWS_AS(ex.submit(allocate, std::size_t{2} << 30).get(), std::bad_alloc);
    // An argument a worker could never hold is refused at submit, saying why.
    try {
        (void)ex.submit(echo, std::vector<char>(std::size_t{600} << 20));
        FAIL("expected a ChannelError");
    } catch (const crew::ChannelError& e) {
        CHECK(std::string(e.what()).find("memory_limit") != std::string::npos);
    }
    CHECK(ex.submit(identity, 3).get() == 3);
}

TEST_CASE("max_message_size applies to one task, not to a batch; a refused send is not a dead worker", "[process]") {
    NoLeaks guard;
    crew::ProcessExecutor<> ex(1, crew::Options{.max_message_size = 4096});
    // Eight tasks of 1000 bytes each, submitted at once, fit one by one.
    std::vector<crew::Future<std::vector<char>>> small;
    for (int i = 0; i < 8; ++i) small.push_back(ex.submit(echo, std::vector<char>(1000, 'x')));
    for (auto& f : small) CHECK(f.get().size() == 1000);
    const int pid = ex.submit(own_pid).get();
    // An argument over the limit fails at submit, without touching a worker.
    CHECK_THROWS_AS(ex.submit(echo, std::vector<char>(5000)), crew::ChannelError);
    // A result over it fails that task with a ChannelError that says so.
    try {
        ex.submit(make_bytes, std::size_t{5000}).get();
        FAIL("expected a ChannelError");
    } catch (const crew::ChannelError& e) {
        CHECK(std::string(e.what()).find("max_message_size") != std::string::npos);
    }
    CHECK(ex.submit(own_pid).get() == pid);  // the same worker lives on
}

TEMPLATE_LIST_TEST_CASE("shutdown(kill) stops a hung task promptly and leaves no child", "[process]", Channels) {
    NoLeaks guard;
    auto ex = std::make_unique<crew::ProcessExecutor<TestType>>(1);
    auto hung = ex->submit(sleep_ms, 1'000'000);
    std::vector<crew::Future<int>> queued;  // behind it, some shipped in its batch
    for (int i = 0; i < 10; ++i) queued.push_back(ex->submit(identity, i));
    for (int i = 0; i < 3000 && ex->stats().running < 1; ++i) std::this_thread::sleep_for(1ms);
    auto stopping = std::async(std::launch::async, [&] { ex->shutdown(crew::Shutdown::kill); });
    REQUIRE(stopping.wait_for(20s) == std::future_status::ready);  // returns promptly (< 1 s here)
    REQUIRE(hung.ready());
    CHECK_THROWS_AS(hung.get(), crew::Cancelled);
    for (auto& f : queued) {
        REQUIRE(f.ready());
        CHECK_THROWS_AS(f.get(), crew::Cancelled);
    }
    ex.reset();
}

TEST_CASE("globals of every translation unit are constructed in spawned and fork-server workers", "[process]") {
    for (auto start : {crew::Start::spawn, crew::Start::fork_server, crew::Start::fork}) {
        crew::ProcessExecutor<> ex(1, crew::Options{.start = start});
        CHECK(ex.submit(table_size_here).get() == 256);
        CHECK(ex.submit(crew_test_other_tu_table_size).get() == 256);
    }
}

TEST_CASE("the initializer runs in every new worker", "[process]") {
    crew::ProcessExecutor<> ex(2, crew::Options{.initializer = set_initialized});
    CHECK(ex.submit(read_initialized).get() == 42);
    CHECK(read_initialized() == 0);  // not in this process
}

TEST_CASE("an initializer with arguments gets values main computed, on every start method", "[process]") {
    std::string computed_in_main = "table of " + std::to_string(6 * 7);  // no global a spawned worker could see
    for (auto start : {crew::Start::spawn, crew::Start::fork_server, crew::Start::fork}) {
        crew::ProcessExecutor<> ex(
            2, crew::Options{.initializer = crew::initializer(&configure, 7, computed_in_main), .start = start});
        std::vector<crew::Future<std::string>> fs;
        for (int i = 0; i < 6; ++i) fs.push_back(ex.submit(read_configured));
        for (auto& f : fs) CHECK(f.get() == "7 table of 42");
    }
    CHECK(read_configured() == "0 ");  // not in this process
    // The same initializer on threads runs in each worker thread.
    crew::ThreadExecutor<> threads(1, crew::Options{.initializer = crew::initializer(&configure, 9, std::string("t"))});
    CHECK(threads.submit(read_configured).get() == "9 t");
    initialized_value = 0;
    initialized_text.clear();
}

void refuse_to_start(int code) { throw std::runtime_error("no config " + std::to_string(code)); }

TEST_CASE("an initializer that throws fails every task of its worker, saying what it threw", "[process]") {
    crew::ProcessExecutor<> ex(1, crew::Options{.initializer = crew::initializer(&refuse_to_start, 5)});
    for (int i = 0; i < 2; ++i) {
        try {
            (void)ex.submit(read_initialized).get();
            FAIL("no exception");
        } catch (const crew::Error& e) {
            const std::string what = e.what();
            CHECK(what.find("initializer threw") != std::string::npos);
            CHECK(what.find("no config 5") != std::string::npos);
        }
    }
}

TEST_CASE("an initializer whose arguments exceed max_message_size is refused at construction", "[process]") {
    const std::string big(4096, 'x');
    try {
        crew::ProcessExecutor<> ex(
            1, crew::Options{.initializer = crew::initializer(&configure, 1, big), .max_message_size = 1024});
        FAIL("no exception");
    } catch (const crew::InvalidArgument& e) {
        CHECK(std::string(e.what()).find("max_message_size") != std::string::npos);
    }
}

TEST_CASE("remote exceptions carry their dynamic type and message", "[process]") {
    crew::ProcessExecutor<crew::ipc::Socket> ex(1);
    try {
        ex.submit(throw_custom).get();
        FAIL("expected a RemoteError");
    } catch (const crew::RemoteError& e) {
        CHECK(e.type_name().find("CustomError") != std::string::npos);
        CHECK(e.message() == "custom failure");
        CHECK(std::string(e.what()).find("custom failure") != std::string::npos);
    }
}

TEMPLATE_LIST_TEST_CASE("payloads of 0 B, 1 B and 256 MiB travel whole", "[process][payload]", Channels) {
    NoLeaks guard;
    crew::ProcessExecutor<TestType> ex(1);
    CHECK(ex.submit(echo, std::vector<char>{}).get().empty());
    CHECK(ex.submit(echo, std::vector<char>{'x'}).get() == std::vector<char>{'x'});
    std::vector<char> big(std::size_t{256} << 20);
    for (std::size_t i = 0; i < big.size(); i += 4096) big[i] = static_cast<char>(i / 4096);
    auto back = ex.submit(echo, big).get();
    CHECK(back.size() == big.size());
    CHECK(back == big);
}

TEST_CASE("a large task never holds small ones back", "[process][payload]") {
    crew::ProcessExecutor<> ex(2);
    // Submitted first, a 32 MiB task that then runs 2 s; 20 small ones behind it.
    auto large = ex.submit(slow_size, std::vector<char>(std::size_t{32} << 20, 'x'), 2000);
    std::vector<crew::Future<int>> small;
    for (int i = 0; i < 20; ++i) small.push_back(ex.submit(identity, i));
    for (auto& f : small) REQUIRE(f.wait_for(30s));
    CHECK_FALSE(large.ready());  // the small ones went to the other worker, not behind it
    for (int i = 0; i < 20; ++i) CHECK(small[static_cast<std::size_t>(i)].get() == i);
    CHECK(large.get() == std::size_t{32} << 20);
}

TEST_CASE("resident memory comes back after a 256 MiB echo", "[process][payload]") {
    if (crew_test::sanitized()) return;  // their allocators keep freed memory
    crew::ProcessExecutor<> ex(1);
    const int worker = ex.submit(own_pid).get();
    const std::size_t parent_before = crew_test::resident_bytes(::getpid());
    const std::size_t worker_before = crew_test::resident_bytes(worker);
    {
        auto back = ex.submit(echo, std::vector<char>(std::size_t{256} << 20, 'x')).get();
        CHECK(back.size() == std::size_t{256} << 20);
    }
    CHECK(ex.submit(own_pid).get() == worker);
    const std::size_t slack = std::size_t{16} << 20;
    CHECK(crew_test::resident_bytes(::getpid()) <= parent_before + slack);
    // The worker lets its large buffers go once it has been idle a moment.
    const auto until = std::chrono::steady_clock::now() + 10s;
    while (crew_test::resident_bytes(worker) > worker_before + slack && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(10ms);
    CHECK(crew_test::resident_bytes(worker) <= worker_before + slack);
}

TEMPLATE_LIST_TEST_CASE("every start method runs tasks and leaves nothing behind", "[process]", Channels) {
    for (auto start : {crew::Start::spawn, crew::Start::fork, crew::Start::fork_server}) {
        NoLeaks guard;
        crew::ProcessExecutor<TestType> ex(2, crew::Options{.start = start});
        CHECK(ex.submit(identity, 3).get() == 3);
        CHECK(ex.submit([](std::string s) { return s + "!"; }, std::string("started")).get() == "started!");
        CHECK(ex.submit(own_pid).get() != ::getpid());
    }
}

TEST_CASE("fork_server workers crash, die, time out and recycle like any other", "[process][crash]") {
    NoLeaks guard;
    crew::ProcessExecutor<> ex(2, crew::Options{.max_tasks_per_worker = 50,
                                                .task_timeout = std::chrono::seconds(20),
                                                .start = crew::Start::fork_server});
    std::vector<crew::Future<int>> fs;
    for (int i = 0; i < 40; ++i) fs.push_back(ex.submit(crash_on, i));
    int died = 0;
    for (auto& f : fs) {
        try {
            (void)f.get();
        } catch (const crew::WorkerDied&) {
            ++died;
        }
    }
    CHECK(died == 3);

    crew::ProcessExecutor<> one(1, crew::Options{.task_timeout = std::chrono::milliseconds(300),
                                                 .start = crew::Start::fork_server});
    const int pid = one.submit(own_pid).get();
    auto victim = one.submit(sleep_ms, 2000);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ::kill(pid, SIGKILL);
    CHECK_THROWS_AS(victim.get(), crew::WorkerDied);
    CHECK_THROWS_AS(one.submit(sleep_ms, 5000).get(), crew::Timeout);
    CHECK(one.submit(identity, 11).get() == 11);
}

TEST_CASE("process executors start safely while other threads allocate and lock", "[process]") {
    crew::ThreadExecutor<> busy(2);
    std::atomic<bool> stop{false};
    std::mutex m;
    for (int i = 0; i < 2; ++i)
        busy.post([&] {
            while (!stop) {
                std::lock_guard lock(m);
                std::vector<int> garbage(1000, 1);
            }
        });
    const int rounds = crew_test::sanitized() ? 5 : 50;
    for (auto start : {crew::Start::spawn, crew::Start::fork_server}) {
        for (int i = 0; i < rounds; ++i) {
            crew::ProcessExecutor<> ex(1, crew::Options{.start = start});
            REQUIRE(ex.submit(identity, i).get() == i);
        }
    }
    stop = true;
}

TEST_CASE("workers exit when the parent is SIGKILLed", "[process]") {
    const auto start = GENERATE(crew::Start::spawn, crew::Start::fork_server);
    CAPTURE(start == crew::Start::spawn ? "spawn" : "fork_server");
    int report[2];
    REQUIRE(::pipe(report) == 0);
    pid_t parent = ::fork();
    REQUIRE(parent >= 0);
    if (parent == 0) {
        crew::ProcessExecutor<> ex(2, crew::Options{.start = start});
        int pids[2] = {ex.submit(own_pid).get(), ex.submit(own_pid).get()};
        auto ignored = ex.submit(sleep_ms, 60000);  // keep a worker busy
        (void)!::write(report[1], pids, sizeof pids);
        ::pause();
        ::_exit(0);
    }
    ::close(report[1]);
    int pids[2] = {0, 0};
    REQUIRE(::read(report[0], pids, sizeof pids) == static_cast<ssize_t>(sizeof pids));
    ::close(report[0]);
    ::kill(parent, SIGKILL);
    ::waitpid(parent, nullptr, 0);
    // Gone, or a zombie waiting for a reaper (a container's init may not reap).
    auto gone = [](int pid) {
        std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
        std::string line;
        if (!std::getline(stat, line)) return true;
        auto close = line.rfind(')');
        return close != std::string::npos && line.size() > close + 2 && line[close + 2] == 'Z';
    };
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    while ((!gone(pids[0]) || !gone(pids[1])) && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    CHECK(gone(pids[0]));
    CHECK(gone(pids[1]));
}

// The same generic job gives identical results on threads and processes.
template <crew::executor Ex>
std::vector<int> generic_job(Ex& ex) {
    std::vector<int> inputs(100);
    for (int i = 0; i < 100; ++i) inputs[static_cast<std::size_t>(i)] = i;
    auto squares = ex.map([](int x) { return x * x; }, inputs, 7);
    squares.push_back(ex.submit([](int a, int b) { return a - b; }, 50, 8).get());
    return squares;
}

TEST_CASE("one generic job, identical on threads and processes", "[process]") {
    crew::ThreadExecutor<> threads(2);
    crew::ProcessExecutor<crew::ipc::SharedMemory> shared_memory(2);
    crew::ProcessExecutor<crew::ipc::Pipe> pipes(2);
    crew::ProcessExecutor<crew::ipc::Socket> sockets(2);
    crew::ProcessExecutor<crew::ipc::MessageQueue> queues(2);
    auto expected = generic_job(threads);
    CHECK(generic_job(shared_memory) == expected);
    CHECK(generic_job(pipes) == expected);
    CHECK(generic_job(sockets) == expected);
    CHECK(generic_job(queues) == expected);
}

std::size_t text_length(const std::string& s) { return s.size(); }
double halve(const double& x) { return x / 2; }
int flip(const bool& b) { return b ? 0 : 1; }
float sum_of(const std::vector<float>& v) {
    float total = 0;
    for (float x : v) total += x;
    return total;
}

TEST_CASE("map encodes chunks straight from any kind of input range, with the same results", "[process]") {
    crew::ProcessExecutor<> ex(2);
    // Contiguous, of raw-copied elements: each chunk is one copy of its bytes.
    std::vector<double> numbers{1, 2, 3, 4, 5, 6, 7};
    CHECK(ex.map(&halve, numbers, 3) == std::vector<double>{0.5, 1, 1.5, 2, 2.5, 3, 3.5});
    // Not contiguous, of raw-copied elements.
    const std::list<double> listed(numbers.begin(), numbers.end());
    CHECK(ex.map(&halve, listed, 2) == std::vector<double>{0.5, 1, 1.5, 2, 2.5, 3, 3.5});
    // Elements with a codec of their own (strings; vectors, as images are).
    const std::vector<std::string> words{"", "a", "three", std::string(100'000, 'x')};
    CHECK(ex.map(&text_length, words, 3) == std::vector<std::size_t>{0, 1, 5, 100'000});
    std::deque<std::vector<float>> images;
    for (int i = 0; i < 5; ++i) images.emplace_back(std::size_t{1} << 16, static_cast<float>(i));
    CHECK(ex.map(&sum_of, images, 2) == std::vector<float>{0, 65536, 131072, 196608, 262144});
    // Ranges whose elements are not stored as they are sent go through a copy:
    // std::vector<bool> (bits), and views that make their values.
    const std::vector<bool> flags{true, false, false};
    CHECK(ex.map(&flip, flags) == std::vector<int>{0, 1, 1});
    auto doubled = std::views::iota(1, 6) | std::views::transform([](int x) { return 2.0 * x; });
    CHECK(ex.map(&halve, doubled, 2) == std::vector<double>{1, 2, 3, 4, 5});
}

TEST_CASE("when_any and when_all over futures of different executors", "[process]") {
    crew::ThreadExecutor<> threads(1);
    crew::ProcessExecutor<> processes(1);
    std::vector<crew::Future<int>> fs;
    crew::SharedArray<int> gate(1);
    // The thread task finishes after the process task on purpose: it waits
    // for the gate, which opens once when_any has answered.
    fs.push_back(threads.submit(when_released, gate, 400));
    fs.push_back(processes.submit(sleep_ms, 1));
    auto first = crew::when_any(fs);
    std::atomic_ref<int>(gate[0]).store(1);
    CHECK(std::size_t(first) == 1);
    CHECK(fs[0].get() == 400);
    auto all = crew::when_all(threads.submit(identity, 1), processes.submit(identity, 2)).get();
    CHECK(std::get<0>(all) + std::get<1>(all) == 3);
}

TEMPLATE_LIST_TEST_CASE("a task that scribbles on or closes its worker's channel fails alone",
                        "[process][hostile]", StreamChannels) {
    NoLeaks guard;
    crew::ProcessExecutor<TestType> ex(1);
    // Garbage where the parent expects a reply: a length far over the limit.
    // The dispatcher kills the worker; only this task fails.
    CHECK_THROWS_AS(ex.submit(scribble).get(), crew::WorkerDied);
    CHECK(ex.submit(identity, 5).get() == 5);
    // The channel closed under the worker: it cannot answer and exits.
    CHECK_THROWS_AS(ex.submit(close_everything).get(), crew::WorkerDied);
    CHECK(ex.submit(identity, 6).get() == 6);
}

TEST_CASE("MessageQueue names: gone after cancel_pending, and after the parent is SIGKILLed", "[process][names]") {
    {
        NoLeaks guard;  // checks /dev/shm and /dev/mqueue too
        crew::ProcessExecutor<crew::ipc::MessageQueue> ex(2);
        std::vector<crew::Future<int>> fs;
        for (int i = 0; i < 20; ++i) fs.push_back(ex.submit(sleep_ms, 20));
        ex.shutdown(crew::Shutdown::cancel_pending);
    }
    // A process that runs an executor over MessageQueue is SIGKILLed: the
    // names its channels used (they carry its pid) must not outlive it. They
    // are removed as soon as each worker has opened its queues, so the owner
    // first makes sure both workers have run a task. (Killed before that, the
    // names of a worker still starting stay behind: see message_queue.hpp.)
    int report[2];
    REQUIRE(::pipe(report) == 0);
    const pid_t owner = ::fork();
    REQUIRE(owner >= 0);
    if (owner == 0) {
        crew::ProcessExecutor<crew::ipc::MessageQueue> ex(2);
        std::set<int> workers;
        for (int round = 0; round < 100 && workers.size() < 2; ++round) {
            // Two slow tasks at once go to the two workers, side by side.
            auto a = ex.submit(sleepy_pid, 20), b = ex.submit(sleepy_pid, 20);
            workers.insert(a.get());
            workers.insert(b.get());
        }
        const int pid = workers.size() == 2 ? *workers.begin() : -1;
        (void)!::write(report[1], &pid, sizeof pid);
        ::pause();
        ::_exit(0);
    }
    ::close(report[1]);
    int worker = 0;
    REQUIRE(::read(report[0], &worker, sizeof worker) == static_cast<ssize_t>(sizeof worker));
    ::close(report[0]);
    CHECK(worker > 0);  // both workers ran a task
    ::kill(owner, SIGKILL);
    ::waitpid(owner, nullptr, 0);
    const std::string prefix = "crew-mq-" + std::to_string(owner) + "-";
    auto left = [&] {
        std::vector<std::string> names;
        for (const char* dir : {"/dev/shm", "/dev/mqueue"}) {
            std::error_code ec;
            for (const auto& e : std::filesystem::directory_iterator(dir, ec))
                if (e.path().filename().string().rfind(prefix, 0) == 0) names.push_back(e.path().string());
        }
        return names;
    };
    // The workers die with their parent within a second; nothing named stays.
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (!left().empty() && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    CHECK(left().empty());
}

TEST_CASE("serial round trips while another thread submits batches: no task lost or run twice", "[process]") {
    crew::ProcessExecutor<> ex(2);
    const int serial = static_cast<int>(crew_test::scaled(2000)) + 100;
    const int batches = 20, per_batch = 250;
    const int total = serial + batches * per_batch;
    crew::SharedArray<int> runs(static_cast<std::size_t>(total));
    std::atomic<int> wrong{0};
    std::thread batcher([&] {
        for (int b = 0; b < batches; ++b) {
            std::vector<crew::Future<int>> fs;
            for (int i = 0; i < per_batch; ++i) fs.push_back(ex.submit(count_run, runs, serial + b * per_batch + i));
            for (int i = 0; i < per_batch; ++i)
                if (fs[static_cast<std::size_t>(i)].get() != serial + b * per_batch + i) ++wrong;
        }
    });
    for (int i = 0; i < serial; ++i)
        if (ex.submit(count_run, runs, i).get() != i) ++wrong;
    batcher.join();
    CHECK(wrong.load() == 0);
    int not_once = 0;
    for (int i = 0; i < total; ++i) not_once += std::atomic_ref<int>(runs[static_cast<std::size_t>(i)]).load() != 1;
    CHECK(not_once == 0);
}
