// crew/detail/imap.hpp — the executor-independent core of imap(): a lazy,
// bounded, ordered, single-pass range over the results of chunks of inputs.
//
// An executor supplies only how one chunk runs: a callable
// `submit(std::vector<In>&&) -> crew::Future<std::vector<R>>` (ThreadExecutor:
// a task owning the chunk and a copy of f; ProcessExecutor: its map
// trampoline). ImapRange draws the inputs, forms the chunks, keeps the window
// of chunks in flight and yields the results in input order.
//
// Semantics (Python's Executor.map with `buffersize`, as a C++20 input range):
// - Lazy: nothing is drawn or submitted before begin(). Inputs are drawn from
//   any std::ranges::input_range (a container, std::views::iota, an istream
//   view, a view over lines of a file), one chunk at a time.
// - Bounded: at most `in_flight` chunks are submitted and not yet fully
//   yielded (the chunk being yielded counts), so at most in_flight * chunk
//   inputs have been drawn and not yet yielded.
// - Ordered: each result is yielded as soon as it and every result before it
//   are ready; begin() and ++ wait for the next chunk when needed.
// - Failure: a chunk that failed (its task threw, was cancelled, or forming or
//   submitting it threw) throws its exception from begin()/++ at its turn,
//   after every result of the chunks before it was yielded; the chunks still
//   outstanding are cancelled (cancel(): those not started never run) and the
//   range ends (== end()). The results that shared a chunk with the failing
//   input are not yielded: use chunk = 1 for per-input failures.
// - Early destruction cancels the outstanding chunks and does not wait for
//   running ones (their futures own their state; results are dropped).
// - Not thread-safe: one consumer at a time. An lvalue range given as input
//   (a container, a view) is referred to, so it must outlive the range; an
//   rvalue one is kept inside the range. With clang 14 and libstdc++ 12
//   containers work; views do not (that pair cannot use libstdc++'s views).
#pragma once

#include <algorithm>
#include <cstddef>
#include <deque>
#include <exception>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <ranges>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <crew/detail/shared_state.hpp>
#include <crew/errors.hpp>
#include <crew/future.hpp>
#include <crew/options.hpp>

namespace crew::detail {

/// Inputs per chunk when MapOptions::chunk is 0. With a known length, about
/// four chunks per worker (as map() picks), at most 64 so that the first
/// results come early and the window stays small; with an unknown length
/// (an unbounded iota, a stream), one input per chunk: any fixed guess could
/// hold results back for a long time on a slow input.
template <class Inputs>
std::size_t imap_chunk(Inputs& inputs, std::size_t workers, std::size_t requested) {
    if (requested != 0) return requested;
    if constexpr (std::ranges::sized_range<Inputs>) {
        const auto n = static_cast<std::size_t>(std::ranges::size(inputs));
        return std::clamp<std::size_t>(n / (std::max<std::size_t>(workers, 1) * 4), 1, 64);
    } else {
        return 1;
    }
}

/// Chunks in flight when MapOptions::in_flight is 0: two per worker, so each
/// worker has its next chunk queued while it runs one.
inline std::size_t imap_in_flight(std::size_t workers, std::size_t requested) noexcept {
    if (requested != 0) return requested;
    return 2 * std::max<std::size_t>(workers, 1);
}

/// The body of one imap task: `f` over a chunk, results in order.
template <class R, class F, class In>
std::vector<R> imap_run_chunk(F& f, std::vector<In>& chunk) {
    std::vector<R> out;
    out.reserve(chunk.size());
    for (auto& x : chunk) out.push_back(std::invoke(f, x));
    return out;
}

/// The range imap() returns; see the top of this file. `In` is what one input
/// is stored as in a chunk (constructed from the input range's reference),
/// `Inputs` what the user gave: `T&` for an lvalue range (referred to), `T`
/// for an rvalue one (kept). Not std::views::all: clang 14 cannot use
/// libstdc++ 12's ref_view, and this way a container works there too.
template <class R, class In, class Inputs, class SubmitChunk>
class ImapRange {
    static_assert(!std::is_void_v<R> && !std::is_reference_v<R>,
                  "crew::imap: the function's result must be a value (not void, not a reference)");
    static_assert(std::ranges::input_range<std::remove_reference_t<Inputs>&>, "crew::imap: the inputs must be an input range");
    static_assert(std::is_invocable_r_v<Future<std::vector<R>>, SubmitChunk&, std::vector<In>&&>,
                  "crew::detail::ImapRange: SubmitChunk must be callable as "
                  "submit(std::vector<In>&&) -> crew::Future<std::vector<R>>");

    struct State;

public:
    using value_type = R;
    using reference = std::ranges::range_reference_t<std::vector<R>>;

    /// A single-pass iterator; `*it` refers into the chunk being yielded and
    /// stays valid until the next `++it`.
    class iterator {
    public:
        using value_type = R;
        using reference = ImapRange::reference;
        using difference_type = std::ptrdiff_t;
        using iterator_concept = std::input_iterator_tag;
        using iterator_category = std::input_iterator_tag;

        iterator() = default;

        reference operator*() const { return state_->current[state_->index]; }
        /// Moves to the next result; waits for its chunk when it is the first
        /// of one, and throws that chunk's exception when it failed.
        iterator& operator++() {
            state_->advance();
            return *this;
        }
        void operator++(int) { ++*this; }

        friend bool operator==(const iterator& it, std::default_sentinel_t) noexcept {
            return it.state_ == nullptr || it.state_->finished;
        }

    private:
        friend class ImapRange;
        explicit iterator(State* state) noexcept : state_(state) {}
        State* state_ = nullptr;
    };

    /// `workers` is the executor's size(): it picks the defaults of `options`.
    ImapRange(Inputs inputs, SubmitChunk submit, MapOptions options, std::size_t workers)
        : state_(std::make_unique<State>(static_cast<Inputs&&>(inputs), std::move(submit), options, workers)) {}

    ImapRange(ImapRange&&) noexcept = default;
    ImapRange& operator=(ImapRange&&) noexcept = default;
    ImapRange(const ImapRange&) = delete;
    ImapRange& operator=(const ImapRange&) = delete;
    /// Cancels the chunks not yet yielded; does not wait for running ones.
    ~ImapRange() = default;

    /// The first call draws and submits the first chunks and waits for the
    /// first result (throwing the first chunk's exception if it failed);
    /// later calls return an iterator at the current position.
    iterator begin() {
        if (!state_) return iterator();
        if (!state_->began) {
            state_->began = true;
            state_->next_chunk();
        }
        return iterator(state_.get());
    }
    std::default_sentinel_t end() const noexcept { return {}; }

    /// Inputs per chunk and chunks in flight, after the defaults were picked.
    [[nodiscard]] std::size_t chunk_size() const noexcept { return state_ ? state_->chunk : 0; }
    [[nodiscard]] std::size_t in_flight() const noexcept { return state_ ? state_->in_flight : 0; }

private:
    struct Chunk {
        Future<std::vector<R>> future;
        std::size_t count;  // inputs in it; the results must match
    };

    // On the heap so that the range can move while iterators point here.
    struct State {
        State(Inputs in, SubmitChunk sub, MapOptions options, std::size_t workers)
            : inputs(static_cast<Inputs&&>(in)),
              submit(std::move(sub)),
              chunk(imap_chunk(inputs, workers, options.chunk)),
              in_flight(imap_in_flight(workers, options.in_flight)) {}
        State(const State&) = delete;
        State& operator=(const State&) = delete;
        ~State() { cancel_pending(); }

        Inputs inputs;
        SubmitChunk submit;
        std::size_t chunk;
        std::size_t in_flight;
        std::optional<std::ranges::iterator_t<std::remove_reference_t<Inputs>&>> next;  // set when the first input is drawn
        bool began = false;
        bool inputs_done = false;
        bool finished = false;
        std::deque<Chunk> pending;  // submitted, in input order
        std::vector<R> current;     // the chunk being yielded
        std::size_t index = 0;

        void advance() {
            if (++index < current.size()) return;
            next_chunk();
        }

        // The current chunk is used up: top the window up, then wait for the
        // oldest chunk. Before the pop the window holds at most in_flight
        // chunks; after it, in_flight - 1 plus the one being yielded.
        void next_chunk() {
            for (;;) {
                current.clear();
                index = 0;
                while (!inputs_done && pending.size() < in_flight) submit_one();
                if (pending.empty()) {
                    finished = true;
                    return;
                }
                Chunk c = std::move(pending.front());
                pending.pop_front();
                std::exception_ptr error = capture_exception([&] {
                    current = c.future.get();
                    if (current.size() != c.count)
                        throw Error("crew::imap: a chunk of " + std::to_string(c.count) + " inputs came back with " +
                                    std::to_string(current.size()) + " results; the executor's chunk runner is broken");
                });
                if (error) {
                    finished = true;
                    current.clear();
                    cancel_pending();
                    std::rethrow_exception(error);
                }
                if (!current.empty()) return;
            }
        }

        // Draws up to `chunk` inputs and submits them. A failure to draw or to
        // submit takes the chunk's place, to be thrown at its turn; no input
        // is drawn after it.
        void submit_one() {
            std::size_t count = 0;
            std::exception_ptr error = capture_exception([&] {
                if (!next) next.emplace(std::ranges::begin(inputs));
                auto& it = *next;
                const auto last = std::ranges::end(inputs);
                std::vector<In> batch;
                batch.reserve(std::min<std::size_t>(chunk, 1024));
                while (batch.size() < chunk && it != last) {
                    batch.emplace_back(*it);
                    ++it;
                }
                if (it == last) inputs_done = true;
                count = batch.size();
                if (count == 0) return;
                Future<std::vector<R>> future = std::invoke(submit, std::move(batch));
                pending.push_back(Chunk{std::move(future), count});
            });
            if (!error) return;
            inputs_done = true;
            Promise<std::vector<R>> failed;
            failed.set_exception(std::move(error));
            pending.push_back(Chunk{failed.get_future(), 0});
        }

        void cancel_pending() noexcept {
            for (auto& c : pending) c.future.cancel();
            pending.clear();
        }
    };

    std::unique_ptr<State> state_;
};

/// Builds an ImapRange over `inputs` (an lvalue referred to, an rvalue
/// kept), with `In` the input range's value type and `R` the function's
/// result type.
template <class R, class Inputs, class SubmitChunk>
auto make_imap(Inputs&& inputs, SubmitChunk submit, MapOptions options, std::size_t workers) {
    using In = std::ranges::range_value_t<std::remove_cvref_t<Inputs>>;
    return ImapRange<R, In, Inputs, SubmitChunk>(std::forward<Inputs>(inputs), std::move(submit), options, workers);
}

}  // namespace crew::detail
