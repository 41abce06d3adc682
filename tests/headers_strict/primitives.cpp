// Strict check (see check.cmake): instantiates the templates of the queue,
// the sync policies and the process-shared primitives, whose warnings a
// header compiled alone hides.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>

#include <crew/detail/event_count.hpp>
#include <crew/detail/ring.hpp>
#include <crew/detail/spin.hpp>
#include <crew/ipc/mutex.hpp>
#include <crew/ipc/semaphore.hpp>
#include <crew/lock_free_queue.hpp>
#include <crew/sync/lock_free.hpp>
#include <crew/sync/mutex.hpp>
#include <crew/sync/semaphore.hpp>

namespace strict {

template <class Policy>
std::size_t use_policy() {
    typename Policy::template queue<int> q(8);
    int out = 0;
    bool ok = q.try_push(1) && q.try_pop(out);
    return static_cast<std::size_t>(out) + (ok ? 1u : 0u);
}

inline std::size_t use_primitives() {
    using namespace std::chrono;
    crew::LockFreeQueue<std::uint64_t> q(16);
    q.try_push(std::uint64_t{1});
    q.push(std::uint64_t{2});
    std::uint64_t v = 0;
    q.try_pop(v);
    std::optional<std::uint64_t> w = q.try_pop();
    q.pop(v);
    q.close();
    crew::LockFreeQueue<std::string> strings(4);
    strings.try_emplace("x");

    crew::detail::Ring<std::string> ring(4);
    ring.push(std::string("a"));
    std::string s = ring.pop();

    crew::detail::EventCount event;
    auto key = event.prepare_wait();
    event.cancel_wait();
    event.notify_all();
    const auto deadline = steady_clock::now();
    bool awaited = event.await([] { return true; }, &deadline);
    bool spun = crew::detail::spin_until([] { return true; });

    crew::ipc::Mutex m;
    bool locked = m.try_lock_for(milliseconds(1)) && m.try_lock_until(system_clock::now());
    {
        std::unique_lock lock(m);
        crew::ipc::ConditionVariable cv;
        cv.wait_for(lock, milliseconds(1));
        cv.wait_for(lock, hours::max(), [] { return true; });
        cv.wait_until(lock, steady_clock::now() + milliseconds(1), [] { return true; });
    }
    crew::ipc::Semaphore sem(1);
    bool acquired = sem.try_acquire_for(milliseconds(1)) || sem.try_acquire_until(system_clock::now());
    sem.release();

    return use_policy<crew::sync::LockFree>() + use_policy<crew::sync::Mutex>() +
           use_policy<crew::sync::Semaphore>() + static_cast<std::size_t>(v + w.value_or(0)) + s.size() + key.epoch + (awaited ? 1u : 0u) +
           (spun ? 1u : 0u) + (locked ? 1u : 0u) + (acquired ? 1u : 0u);
}

}  // namespace strict
