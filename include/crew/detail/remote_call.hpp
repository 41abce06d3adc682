// crew/detail/remote_call.hpp — how a task travels to a worker process and its
// result travels back.
//
// A task is a *trampoline*: a function instantiated for the task's callable
// and argument types, named by CodeRef (so a fresh exec of the binary finds
// it too). It decodes the callable and the arguments, calls, and encodes the
// result. A function pointer travels as a CodeRef; a captureless lambda as
// nothing at all (its type is in the trampoline; it is default-constructed).
//
// A call = CodeRef trampoline, u64 n, n bytes (the callable, then the
// arguments). A worker runs only trampolines this program registered
// (TaskEntries). How calls are framed into batches and replies:
// detail/wire.hpp.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <iterator>
#include <memory>
#include <mutex>
#include <ranges>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <crew/codec.hpp>
#include <crew/detail/code_ref.hpp>
#include <crew/detail/demangle.hpp>
#include <crew/detail/executor_core.hpp>
#include <crew/detail/peer_fd.hpp>
#include <crew/detail/remote_exception.hpp>
#include <crew/errors.hpp>
#include <crew/options.hpp>

namespace crew {

template <>
struct Codec<detail::CodeRef> {
    static constexpr std::size_t min_encoded_size = 16;
    static void encode(Writer& w, const detail::CodeRef& r) {
        w.write_value(r.module);
        w.write_value(r.offset);
    }
    static detail::CodeRef decode(Reader& r) {
        detail::CodeRef ref;
        ref.module = r.read_value<std::uint64_t>();
        ref.offset = r.read_value<std::uint64_t>();
        return ref;
    }
};

namespace detail {

using Trampoline = void (*)(Reader& arguments, Writer& result);

enum class Outcome : std::uint8_t { value = 0, exception = 1, skipped = 2 };

/// A callable a worker process can run: a function pointer, or a stateless
/// class (a lambda that captures nothing).
template <class F>
concept stateless_callable =
    (std::is_pointer_v<F> && std::is_function_v<std::remove_pointer_t<F>>) ||
    (std::is_class_v<F> && std::is_empty_v<F> && std::is_default_constructible_v<F> &&
     std::is_trivially_copyable_v<F>);

template <class F>
void encode_callable(Writer& w, const F& f) {
    if constexpr (std::is_pointer_v<F>) w.write_value(ModuleTable::ref(reinterpret_cast<const void*>(f)));
}

template <class F>
F decode_callable(Reader& r) {
    if constexpr (std::is_pointer_v<F>)
        return reinterpret_cast<F>(const_cast<void*>(ModuleTable::resolve_function(r.read_value<CodeRef>())));
    else
        return F{};
}

/// Compile-time checks of a task for another process (ProcessExecutor,
/// MpiExecutor): a free function or captureless lambda, encodable arguments
/// and result. The codec's own message (which type, what to pass instead)
/// comes first.
template <class Fn, class R, class... Args>
constexpr void check_remote_task() {
    static_assert(!std::is_member_pointer_v<Fn>,
                  "crew: a member function (or member) pointer cannot be sent to another process; pass a free "
                  "function or a captureless lambda that takes the object as an argument");
    static_assert(std::is_member_pointer_v<Fn> || stateless_callable<Fn>,
                  "crew: this task captures state, which cannot be sent to another process. Pass a function "
                  "pointer or a lambda that captures nothing, and pass the state as arguments: "
                  "ex.submit([](int x) { return x * 2; }, x)");
    static_assert((assert_encodable<Args>() && ...),
                  "crew: an argument type of this task cannot be encoded by crew::Codec; see the crew::Codec error "
                  "above for which, and specialise crew::Codec<T> for your types");
    static_assert(
        [] {
            if constexpr (std::is_void_v<R>)
                return true;
            else
                return assert_encodable<R>();
        }(),
        "crew: the task's result type cannot be encoded by crew::Codec; specialise crew::Codec<T> for it");
}

/// `count` inputs of the user's range from `first`, encoded exactly as a
/// std::vector<In> of them would be, so map() encodes each chunk straight
/// from the range instead of copying it into a vector first (a chunk of
/// images is then copied once, into the message, not twice).
template <class In, class It>
struct InputSlice {
    It first;
    std::size_t count;
};

/// Whether a run of It can travel as an InputSlice: its elements are In
/// themselves, and std::vector<In> has crew's own layout (count, then the
/// elements; std::vector<bool> packs bits instead).
template <class In, class It>
inline constexpr bool slice_encodable =
    !std::is_same_v<In, bool> && std::is_same_v<std::remove_cvref_t<std::iter_reference_t<It>>, In> &&
    std::is_lvalue_reference_v<std::iter_reference_t<It>>;

/// map() on an executor that sends each chunk as one encoded task: slices
/// `inputs` into chunks (0: about four per worker), submits each with
/// `submit_chunk(slice) -> Future<std::vector<R>>`, where the slice encodes
/// as a std::vector<In> (an InputSlice of the range where it can, else a
/// copy), then waits and joins (the first failure in input order is
/// rethrown).
template <class R, class In, class Range, class SubmitChunk>
std::vector<R> map_by_slices(const Range& inputs, std::size_t chunk, std::size_t workers, SubmitChunk submit_chunk) {
    using It = std::ranges::iterator_t<const Range>;
    constexpr bool in_place = slice_encodable<In, It>;
    using Slice = std::conditional_t<in_place, InputSlice<In, It>, std::vector<In>>;
    const auto n = static_cast<std::size_t>(std::ranges::distance(inputs));
    chunk = pick_chunk(n, workers, chunk);
    std::vector<decltype(submit_chunk(std::declval<const Slice&>()))> parts;
    parts.reserve((n + chunk - 1) / chunk);
    std::exception_ptr submit_error;
    It it = std::ranges::begin(inputs);
    std::vector<In> copy;
    for (std::size_t done = 0; done < n;) {
        const std::size_t count = std::min(chunk, n - done);
        try {
            if constexpr (in_place) {
                parts.push_back(submit_chunk(Slice{it, count}));
                std::ranges::advance(it, static_cast<std::iter_difference_t<It>>(count));
            } else {
                copy.clear();
                for (std::size_t i = 0; i < count; ++i, ++it) copy.push_back(*it);
                parts.push_back(submit_chunk(copy));
            }
        } catch (...) {
            submit_error = std::current_exception();
            break;
        }
        done += count;
    }
    return join_chunks<R>(parts, n, submit_error);
}

/// Runs the task's own code once its arguments are decoded, with the pin and
/// keep sinks (detail/peer_fd.hpp) off: they hold what the worker decodes as
/// arguments and encodes as the result, not what the task sends or receives
/// on channels of its own, which they would hold until the next batch
/// however many there were.
template <class Fn>
decltype(auto) run_task_code(Fn&& fn) {
    if (current_keeps != nullptr) (void)current_keeps->let_go_of_last();
    const SinkScope<Keepers> no_pins(current_pins, nullptr);
    const SinkScope<KeptMappings> no_keeps(current_keeps, nullptr);
    return std::forward<Fn>(fn)();
}

/// Runs F(Args...) from encoded arguments; the result is encoded into `out`.
template <class F, class... Args>
void call_trampoline(Reader& in, Writer& out) {
    F f = decode_callable<F>(in);
    std::tuple<Args...> args{in.read_value<Args>()...};  // braces: decoded left to right
    in.expect_end();
    using R = std::invoke_result_t<F&, Args...>;
    auto call = [&]() -> R { return std::apply(f, std::move(args)); };
    if constexpr (std::is_void_v<R>)
        run_task_code(call);
    else
        out.write_value(run_task_code(call));
}

/// Runs F on every element of an encoded vector (one map() chunk).
template <class F, class In>
void map_trampoline(Reader& in, Writer& out) {
    F f = decode_callable<F>(in);
    auto inputs = in.read_value<std::vector<In>>();
    in.expect_end();
    using R = std::invoke_result_t<F&, const In&>;
    std::vector<R> results;
    results.reserve(inputs.size());
    run_task_code([&] {
        for (const auto& x : inputs) results.push_back(std::invoke(f, x));
    });
    out.write_value(results);
}

/// Every trampoline this program instantiated (registered during static
/// initialisation): a worker runs no other code named by a message, so a
/// forged or corrupt call cannot jump to an arbitrary function.
class TaskEntries {
public:
    static bool add(Trampoline t) {
        auto& e = instance();
        std::lock_guard lock(e.mutex_);
        e.entries_.push_back(t);
        return true;
    }
    static bool contains(Trampoline t) {
        auto& e = instance();
        std::lock_guard lock(e.mutex_);
        return std::find(e.entries_.begin(), e.entries_.end(), t) != e.entries_.end();
    }

private:
    static TaskEntries& instance() {
        static TaskEntries entries;
        return entries;
    }
    std::mutex mutex_;
    std::vector<Trampoline> entries_;
};

template <Trampoline T>
inline const bool task_entry = TaskEntries::add(T);

/// CodeRef of a trampoline, looked up once per instantiation.
template <Trampoline T>
const CodeRef& trampoline_ref() {
    (void)task_entry<T>;  // registers T in every copy of the program, at start-up
    static const CodeRef ref = ModuleTable::ref(reinterpret_cast<const void*>(T));
    return ref;
}

/// Encodes one call: trampoline, callable, arguments, straight into the
/// bytes that are sent (the length is patched in afterwards). `Prefix`
/// bytes are left free at the front for the sender's framing, so a call
/// that travels alone is sent from this very buffer, never copied.
template <Trampoline T, std::size_t Prefix = 0, class F, class... Args>
std::vector<std::byte> encode_call(const F& f, const Args&... args) {
    std::vector<std::byte> bytes(Prefix);
    bytes.reserve(Prefix + 64);
    Writer w(bytes);
    w.write_value(trampoline_ref<T>());
    const std::size_t length_at = bytes.size();
    w.write_value(std::uint64_t{0});
    encode_callable(w, f);
    (w.write_value(args), ...);
    const auto n = static_cast<std::uint64_t>(bytes.size() - length_at - sizeof(std::uint64_t));
    std::memcpy(bytes.data() + length_at, &n, sizeof n);
    return bytes;
}

/// The trampoline `code` names, if it is one this program registered.
inline Trampoline resolve_trampoline(const CodeRef& code) {
    auto trampoline = reinterpret_cast<Trampoline>(const_cast<void*>(ModuleTable::resolve(code)));
    if (!TaskEntries::contains(trampoline))
        throw CodecError("crew: a task names code that is not a crew task entry of this program; the "
                         "message is corrupt or comes from another build");
    return trampoline;
}

/// Worker side: runs one encoded call and appends its result message.
inline void run_call(std::uint64_t slot, Reader& in, std::vector<std::byte>& out) {
    out.clear();
    Writer w(out);
    w.write_value(slot);
    const std::size_t outcome_at = out.size();
    w.write_value(static_cast<std::uint8_t>(Outcome::value));
    // The call's bytes are taken off the batch first, so a call that fails
    // to resolve or decode leaves the next call of the batch where it was.
    const auto code = in.read_value<CodeRef>();
    Reader arguments(in.take(static_cast<std::size_t>(in.read_value<std::uint64_t>())));
    try {
        resolve_trampoline(code)(arguments, w);
    } catch (...) {
        out.resize(outcome_at);
        w.write_value(static_cast<std::uint8_t>(Outcome::exception));
        encode_exception(w, std::current_exception());
    }
}

/// Worker side: runs an encoded call whose result nobody wants (an
/// initializer); its exception propagates.
inline void run_encoded_call(std::span<const std::byte> call) {
    Reader in(call);
    const auto code = in.read_value<CodeRef>();
    Reader arguments(in.take(static_cast<std::size_t>(in.read_value<std::uint64_t>())));
    in.expect_end();
    std::vector<std::byte> ignored;
    Writer w(ignored);
    resolve_trampoline(code)(arguments, w);
}

/// Options::initializer as the call a worker process runs (empty: none). A
/// plain function pointer travels as a call without arguments, checked as a
/// task's function is. A template only so that a program that makes no
/// process executor does not compile (and register at start-up) the
/// initializer's trampoline: <crew/crew.hpp> with threads alone.
template <class I = Initializer>
std::vector<std::byte> encode_initializer(const I& initializer) {
    if (const auto* call = initializer.encoded_call()) return *call;
    if (const auto function = initializer.function()) return encode_call<&call_trampoline<Initializer::Function>>(function);
    return {};
}

/// An initializer received as an encoded call (an MPI rank passes it on to
/// its own worker processes, and can run it here too).
inline Initializer decode_initializer(std::vector<std::byte> call) {
    if (call.empty()) return nullptr;
    auto run = [call] { run_encoded_call(call); };
    return Initializer::bound(std::move(run), std::move(call));
}

}  // namespace detail

/// Encodes a detail::InputSlice as std::vector<In> (it is never decoded as
/// itself: the worker reads the vector).
template <class In, class It>
struct Codec<detail::InputSlice<In, It>> {
    static constexpr std::size_t min_encoded_size = 8;
    static void encode(Writer& w, const detail::InputSlice<In, It>& s) {
        detail::write_count(w, s.count);
        if constexpr (std::contiguous_iterator<It> && detail::bulk<In>) {
            if (s.count != 0) w.write(std::to_address(s.first), s.count * sizeof(In));
        } else {
            It it = s.first;
            for (std::size_t i = 0; i < s.count; ++i, ++it) {
                if constexpr (detail::bulk<In>)
                    w.write(std::addressof(*it), sizeof(In));
                else
                    w.write_value(*it);
            }
        }
    }
    [[noreturn]] static detail::InputSlice<In, It> decode(Reader&) {
        throw CodecError("crew: an input slice is decoded as the std::vector it encodes, never as itself");
    }
};

}  // namespace crew
