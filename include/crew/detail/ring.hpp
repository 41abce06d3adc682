// crew/detail/ring.hpp — a fixed-capacity FIFO with no synchronisation; the
// Mutex and Semaphore policies guard it, each in its own way.
#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <utility>

#include <crew/detail/assert.hpp>

namespace crew::detail {

template <class T>
class Ring {
public:
    explicit Ring(std::size_t capacity) : slots_(std::make_unique<std::optional<T>[]>(capacity)), capacity_(capacity) {}

    [[nodiscard]] bool empty() const noexcept { return size_ == 0; }
    [[nodiscard]] bool full() const noexcept { return size_ == capacity_; }
    [[nodiscard]] std::size_t capacity() const noexcept { return capacity_; }

    /// Precondition: !full().
    void push(T&& item) {
        CREW_DEBUG_ASSERT(!full(), "Ring::push on a full ring: the policy must check for room first");
        slots_[(head_ + size_) % capacity_].emplace(std::move(item));
        ++size_;
    }
    /// Precondition: !empty().
    T pop() {
        CREW_DEBUG_ASSERT(!empty(), "Ring::pop on an empty ring: the policy must check for an item first");
        T item = std::move(*slots_[head_]);
        slots_[head_].reset();
        head_ = (head_ + 1) % capacity_;
        --size_;
        return item;
    }

private:
    std::unique_ptr<std::optional<T>[]> slots_;
    std::size_t capacity_;
    std::size_t head_ = 0;
    std::size_t size_ = 0;
};

}  // namespace crew::detail
