// crew/codec.hpp — crew::Codec, the bytes that carry task arguments and
// results between processes.
//
// What: encode(v) turns a value into a std::vector<std::byte>; decode<T>(bytes)
// turns it back. Supported out of the box, nested arbitrarily:
//   - trivially copyable types (ints, floats, enums, PODs): their raw bytes;
//   - bool (decodes only 0 or 1), std::string, std::vector (std::vector<bool>
//     packed 8 to a byte), std::array, std::deque, std::pair, std::tuple,
//     std::optional, std::variant, std::monostate, std::map, std::set,
//     std::unordered_map, std::unordered_set;
//   - aggregates (plain structs) that are not trivially copyable and whose
//     members are all encodable: member by member, in declaration order, with
//     no user code (nested structs, strings, vectors, optionals... inside).
//     Limits: at most 32 members, no base class, no C array member, no
//     member that holds the struct itself (struct Node { std::vector<Node>
//     kids; }): such a type needs a Codec (see detail/aggregate_fields.hpp).
// Rejected at compile time: pointers, member pointers, std::nullptr_t, C arrays,
// std::string_view, std::span, std::reference_wrapper (an address means nothing
// in another process, a view owns nothing) and any type without a Codec. The
// message contains "cannot be encoded by crew::Codec" and the instantiation
// names the type; a const char* or string literal is told to pass std::string,
// a struct is told which member is the problem. crew::encodable<T> tells the
// same without failing.
//
// Other user types (classes with private members or constructors, or beyond
// the aggregate limits): specialise crew::Codec, the one customisation point.
// A specialisation always wins, also over the member-wise and raw-bytes codecs.
//     template <> struct crew::Codec<Point> {
//         static void encode(crew::Writer& w, const Point& p) {
//             w.write_value(p.name()); w.write_value(p.xs()); }
//         static Point decode(crew::Reader& r) {
//             auto name = r.read_value<std::string>();
//             return Point(std::move(name), r.read_value<std::vector<double>>()); }
//     };
// Optionally add `static constexpr std::size_t min_encoded_size = N;` (the
// fewest bytes any value encodes to) so containers of your type reject a
// hostile length before allocating. A user specialisation also overrides the
// raw-bytes codec of a trivially copyable type.
//
// When: on every process task, so it is built for speed: no virtual calls,
// one memcpy for a run of trivially copyable values (std::vector<double> of a
// million elements is one 8 MB copy), Writer appends amortised like push_back.
//
// Format: not portable. Raw bytes are in the host's layout and byte order, so
// both sides must be the same build (as crew's workers are). Lengths are
// uint64, a variant's index uint32, bool and optional's flag one byte.
//
// Safety: the Reader never reads past its buffer; bytes that do not decode as
// the requested type throw crew::CodecError. Every length is checked against
// the bytes left before anything is allocated, so a hostile length throws
// instead of allocating, and every container's element count is charged to
// the Reader's element budget (64 Ki + 16 per byte of the message), so work
// and memory stay proportional to the message even for nested containers of
// empty elements; a breach throws crew::CodecError. The raw bytes of a
// trivially copyable type are trusted (a struct with a bool member or an enum is not range-checked), and
// a trivially copyable struct that holds a pointer cannot be spotted: give it
// a Codec, or do not send it.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

#include "crew/detail/aggregate_fields.hpp"
#include "crew/detail/huge_pages.hpp"
#include "crew/errors.hpp"

namespace crew {

class Writer;
class Reader;
template <class T> void encode_into(Writer& w, const T& v);
template <class T> T decode_from(Reader& r);

/// Appends to a byte vector it references (and does not own).
class Writer {
public:
    explicit Writer(std::vector<std::byte>& out) noexcept : out_(&out) {}

    /// Append n raw bytes; amortised O(n), like push_back.
    void write(const void* data, std::size_t n) {
        if (n == 0) return;
        const auto* p = static_cast<const std::byte*>(data);
        if (n > small_write) {
            reserve_for(n);
            out_->insert(out_->end(), p, p + n);
            return;
        }
        // Scalars go through resize + memcpy: GCC 12 at -O3 misreads an
        // insert() of a few constant bytes as an overflow
        // (-Wstringop-overflow), which breaks users' -Werror builds.
        const std::size_t at = out_->size();
        out_->resize(at + n);
        std::memcpy(out_->data() + at, p, n);
    }
    /// Append v's encoding: crew::Codec<T>::encode(*this, v).
    template <class T> void write_value(const T& v) { crew::encode_into(*this, v); }

    [[nodiscard]] std::vector<std::byte>& buffer() noexcept { return *out_; }

private:
    static constexpr std::size_t small_write = 16;

    /// Room for n more bytes, growing as push_back would; a large buffer
    /// gets the huge-page hint before its pages are first written.
    void reserve_for(std::size_t n) {
        const std::size_t need = out_->size() + n;
        if (need <= out_->capacity() || need < detail::huge_page_hint_bytes) return;
        out_->reserve(std::max(need, 2 * out_->capacity()));
        detail::advise_huge_pages(out_->data() + out_->size(), out_->capacity() - out_->size());
    }

    std::vector<std::byte>* out_;
};

/// A bounds-checked cursor over bytes it does not own. It never reads past the
/// end: asking for more than remains throws crew::CodecError.
///
/// It also holds an element budget, so that the work and memory of decoding
/// stay proportional to the size of the message whatever its nesting: every
/// container charges its element count before decoding them (zero-size
/// elements too: 72 bytes could otherwise declare a
/// std::vector<std::vector<std::monostate>> of 2^31 elements). The budget is
/// element_budget_base + element_budget_per_byte * bytes.size(); no real
/// encoding comes near it (an element that takes input bytes counts once per
/// byte at most, per level of nesting).
class Reader {
public:
    /// Elements any message may decode, however small (std::vector<std::monostate>(1000) is 8 bytes).
    static constexpr std::uint64_t element_budget_base = std::uint64_t{1} << 16;
    /// Elements each byte of the message adds to the budget.
    static constexpr std::uint64_t element_budget_per_byte = 16;

    explicit Reader(std::span<const std::byte> bytes) noexcept
        : bytes_(bytes),
          element_budget_(element_budget_base + element_budget_per_byte * static_cast<std::uint64_t>(bytes.size())) {}

    /// Copy the next n bytes to out.
    void read(void* out, std::size_t n) {
        check(n);
        if (n != 0) std::memcpy(out, bytes_.data() + pos_, n);
        pos_ += n;
    }
    /// The next n bytes, as a view into the buffer.
    [[nodiscard]] std::span<const std::byte> take(std::size_t n) {
        check(n);
        auto s = bytes_.subspan(pos_, n);
        pos_ += n;
        return s;
    }
    /// Decode the next value: crew::Codec<T>::decode(*this).
    template <class T> [[nodiscard]] T read_value() { return crew::decode_from<T>(*this); }

    [[nodiscard]] std::size_t remaining() const noexcept { return bytes_.size() - pos_; }

    /// Charge n container elements about to be decoded to the element budget
    /// (see the class comment); throws crew::CodecError when it would run
    /// out. A user Codec that decodes a count of elements calls it first.
    void charge_elements(std::uint64_t n) {
        if (n > element_budget_)
            throw CodecError("crew::Codec: the message is malformed: its " + std::to_string(bytes_.size()) +
                             " bytes declare more container elements than a message of that size can hold "
                             "(a hostile or corrupt length at offset " + std::to_string(pos_) +
                             "); the input is corrupt or encodes another type");
        element_budget_ -= n;
    }

    /// Throws crew::CodecError unless every byte has been read.
    void expect_end() const {
        if (remaining() != 0)
            throw CodecError("crew::Codec: " + std::to_string(remaining()) +
                             " bytes left over after decoding a value of " +
                             std::to_string(bytes_.size()) +
                             " bytes; encode and decode must name the same type");
    }

private:
    void check(std::size_t n) const {
        if (n > remaining())
            throw CodecError("crew::Codec: the input ends early: " + std::to_string(n) +
                             " bytes needed at offset " + std::to_string(pos_) + " but " +
                             std::to_string(remaining()) +
                             " remain; the bytes were cut short or encode another type");
    }

    std::span<const std::byte> bytes_;
    std::size_t pos_ = 0;
    std::uint64_t element_budget_;
};

template <class T, class Enable = void> struct Codec;

namespace detail {
template <class T> constexpr void reject();
// Types that get the primary template. Tested before naming Codec<T> so that
// arrays, void and functions never instantiate it.
template <class T>
concept unsupported = !std::is_object_v<T> || std::is_array_v<T> ||
                      requires { typename Codec<T>::unsupported; };
/// The fewest bytes any T encodes to, when its Codec says; 0 when unknown.
template <class T>
inline constexpr std::size_t min_size = [] {
    if constexpr (unsupported<T>)  // never names Codec<int[3]>: it cannot exist
        return std::size_t{0};
    else if constexpr (requires { { Codec<T>::min_encoded_size } -> std::convertible_to<std::size_t>; })
        return static_cast<std::size_t>(Codec<T>::min_encoded_size);
    else
        return std::size_t{0};
}();
}  // namespace detail

/// The customisation point: how a T becomes bytes and back. Specialise it for
/// your types (see the top of this file). This primary template is what an
/// unsupported type gets; using it fails to compile with a message.
template <class T, class Enable>
struct Codec {
    using unsupported = void;  // read by crew::encodable, so it can say no quietly
    static void encode(Writer&, const T&) { detail::reject<T>(); }
    static T decode(Reader&) { detail::reject<T>(); throw; }  // throw: never reached
};

/// True when crew::Codec can encode and decode T (cv and references ignored).
/// Checking it never triggers crew's own compile errors.
template <class T>
concept encodable =
    !detail::unsupported<std::remove_cvref_t<T>> &&
    requires(Writer& w, Reader& r, const std::remove_cvref_t<T>& v) {
        Codec<std::remove_cvref_t<T>>::encode(w, v);
        { Codec<std::remove_cvref_t<T>>::decode(r) } -> std::same_as<std::remove_cvref_t<T>>;
    };

/// Append v's encoding to w.
template <class T>
void encode_into(Writer& w, const T& v) {
    using U = std::remove_cvref_t<T>;
    if constexpr (!encodable<U>)
        detail::reject<U>();  // one static_assert that says why, not pages of errors
    else
        Codec<U>::encode(w, v);
}

/// v's encoding in a new buffer.
template <class T>
[[nodiscard]] std::vector<std::byte> encode(const T& v) {
    std::vector<std::byte> out;
    // Small messages then take one allocation; big fixed-size ones exactly one.
    out.reserve(std::max(detail::min_size<std::remove_cvref_t<T>>, std::size_t{64}));
    Writer w(out);
    encode_into(w, v);
    return out;
}

/// Decode one T from r, leaving r after it.
template <class T>
[[nodiscard]] T decode_from(Reader& r) {
    using U = std::remove_cvref_t<T>;
    if constexpr (!encodable<U>) {
        detail::reject<U>();
        throw;  // never reached: reject() does not compile
    } else {
        return Codec<U>::decode(r);
    }
}

/// Decode a T that fills bytes exactly; leftover bytes throw crew::CodecError.
template <class T>
[[nodiscard]] T decode(std::span<const std::byte> bytes) {
    Reader r(bytes);
    T v = decode_from<T>(r);
    r.expect_end();
    return v;
}

}  // namespace crew

namespace crew::detail {

template <class T> inline constexpr bool always_false = false;

/// Types that are trivially copyable but hold an address: their bytes would
/// be meaningless (or dangling) in the receiving process.
template <class T> struct is_view : std::false_type {};
template <class C, class Tr> struct is_view<std::basic_string_view<C, Tr>> : std::true_type {};
template <class T, std::size_t N> struct is_view<std::span<T, N>> : std::true_type {};
template <class T> struct is_view<std::reference_wrapper<T>> : std::true_type {};

/// Standard templates crew encodes field by field; they must never take the
/// raw-bytes path even where the library makes them trivially copyable
/// (std::optional<int*> is, and its pointer must still be rejected).
template <class T> struct is_structured : std::false_type {};
template <class T, std::size_t N> struct is_structured<std::array<T, N>> : std::true_type {};
template <class A, class B> struct is_structured<std::pair<A, B>> : std::true_type {};
template <class... Ts> struct is_structured<std::tuple<Ts...>> : std::true_type {};
template <class T> struct is_structured<std::optional<T>> : std::true_type {};
template <class... Ts> struct is_structured<std::variant<Ts...>> : std::true_type {};

/// Encoded as its object representation.
template <class T>
concept bytewise = std::is_trivially_copyable_v<T> && !std::is_same_v<std::remove_cv_t<T>, bool> &&
                   !std::is_pointer_v<T> && !std::is_member_pointer_v<T> &&
                   !std::is_null_pointer_v<T> && !std::is_array_v<T> && !is_view<T>::value &&
                   !is_structured<T>::value;

/// An element of a container or tuple: encodable and not a reference.
template <class T>
concept element = !std::is_reference_v<T> && encodable<T>;

/// The raw-bytes codec. Empty types (std::monostate, tag structs) take no bytes.
template <class T>
struct raw_codec {
    static constexpr std::size_t min_encoded_size = std::is_empty_v<T> ? 0 : sizeof(T);

    static void encode(Writer& w, const T& v) {
        if constexpr (!std::is_empty_v<T>) w.write(std::addressof(v), sizeof(T));
    }
    static T decode(Reader& r) {
        if constexpr (std::is_trivially_default_constructible_v<T> && !std::is_empty_v<T>) {
            T v;
            r.read(std::addressof(v), sizeof(T));
            return v;
        } else {
            // bit_cast makes a T without needing a constructor.
            std::array<std::byte, sizeof(T)> bytes{};
            if constexpr (!std::is_empty_v<T>) r.read(bytes.data(), sizeof(T));
            return std::bit_cast<T>(bytes);
        }
    }
};

/// Whether a run of Ts can be copied as one block: crew's raw codec applies
/// (not a user override) and each T takes exactly sizeof(T) bytes.
template <class T>
inline constexpr bool bulk = std::is_base_of_v<raw_codec<T>, Codec<T>> && !std::is_empty_v<T>;

// Counts go through write()/read() directly: these helpers are not templates,
// so naming Codec<std::uint64_t> here would instantiate it before its
// specialisation below is declared.
inline void write_count(Writer& w, std::size_t n) {
    const auto n64 = static_cast<std::uint64_t>(n);
    w.write(&n64, sizeof n64);
}

/// Read an element count and prove, before anything is allocated, that the
/// bytes left can hold that many elements of at least `elem_min` bytes each,
/// and that the reader's element budget covers them (elements of no bytes).
inline std::size_t read_count(Reader& r, std::size_t elem_min) {
    std::uint64_t n = 0;
    r.read(&n, sizeof n);
    if (elem_min != 0 && n > r.remaining() / elem_min)
        throw CodecError("crew::Codec: a length of " + std::to_string(n) +
                         " elements does not fit in the " + std::to_string(r.remaining()) +
                         " bytes left; the input is corrupt or encodes another type");
    r.charge_elements(n);
    return static_cast<std::size_t>(n);
}

/// n trivially copyable Ts from the reader into a new contiguous container
/// (std::vector, std::basic_string), copied once: no zero-fill of elements
/// about to be overwritten, and the huge-page hint for a large one. Bytes
/// that are not aligned for T (a user Codec wrote an odd count before them)
/// take the plain resize-and-copy.
template <class Container, class T>
Container read_bulk(Reader& r, std::size_t n) {
    const std::span<const std::byte> bytes = r.take(n * sizeof(T));
    Container c;
    if (reinterpret_cast<std::uintptr_t>(bytes.data()) % alignof(T) == 0) {
        c.reserve(n);
        advise_huge_pages(c.data(), n * sizeof(T));
        // The bytes hold Ts' object representations (memcpy'd into an array
        // of std::byte, which implicitly creates them); copy them as Ts.
        const T* first = reinterpret_cast<const T*>(bytes.data());
        c.insert(c.end(), first, first + n);
    } else {
        c.resize(n);
        if (n != 0) std::memcpy(c.data(), bytes.data(), n * sizeof(T));
    }
    return c;
}

/// A capacity to reserve for n elements: all of them when each is known to
/// take input bytes (so n is already bounded by the input size), none when
/// not (the container then grows as elements actually decode).
template <class E>
std::size_t reserve_for(std::size_t n) {
    return min_size<E> != 0 ? n : 0;
}

/// std::vector (non-bulk elements) and std::deque: count, then each element.
template <class C, class E>
struct sequence_codec {
    static constexpr std::size_t min_encoded_size = 8;

    static void encode(Writer& w, const C& c) {
        write_count(w, c.size());
        for (const auto& e : c) w.write_value(e);
    }
    static C decode(Reader& r) {
        const std::size_t n = read_count(r, min_size<E>);
        C c;
        if constexpr (requires { c.reserve(n); }) c.reserve(reserve_for<E>(n));
        for (std::size_t i = 0; i < n; ++i) c.emplace_back(r.read_value<E>());
        return c;
    }
};

/// std::set / std::unordered_set (E = key) and std::map / std::unordered_map
/// (E = pair of key and mapped value). A repeated key throws: crew never
/// writes one, so the bytes are not an encoding of this container.
template <class C, class K, class V = void>
struct associative_codec {
    static constexpr std::size_t min_encoded_size = 8;
    static constexpr bool is_map = !std::is_void_v<V>;

    static void encode(Writer& w, const C& c) {
        write_count(w, c.size());
        for (const auto& e : c) {
            if constexpr (is_map) {
                w.write_value(e.first);
                w.write_value(e.second);
            } else {
                w.write_value(e);
            }
        }
    }
    static C decode(Reader& r) {
        std::size_t elem_min = min_size<K>;
        if constexpr (is_map) elem_min += min_size<V>;
        const std::size_t n = read_count(r, elem_min);
        C c;
        if constexpr (requires { c.reserve(n); })
            c.reserve(elem_min != 0 ? n : 0);
        for (std::size_t i = 0; i < n; ++i) {
            // Separate statements: the key must be read before the value.
            auto key = r.read_value<K>();
            const auto before = c.size();
            if constexpr (is_map) {
                auto value = r.read_value<V>();
                c.emplace_hint(c.end(), std::move(key), std::move(value));
            } else {
                c.emplace_hint(c.end(), std::move(key));  // O(1) for sorted input
            }
            if (c.size() == before)
                throw CodecError("crew::Codec: a key appears twice in an encoded set or map; "
                                 "the input is corrupt or encodes another type");
        }
        return c;
    }
};

inline void check_flag(std::uint8_t b, const char* what) {
    if (b > 1)
        throw CodecError(std::string("crew::Codec: ") + what + " byte is " + std::to_string(b) +
                         ", not 0 or 1; the input is corrupt or encodes another type");
}

/// The types inside a standard template crew knows, so that reject() can point
/// at the element that is the real problem (int* inside std::vector<int*>).
template <class T> struct parts { using type = types<>; };
template <template <class...> class Tmpl, class... Ts>
    requires is_structured<Tmpl<Ts...>>::value
struct parts<Tmpl<Ts...>> { using type = types<Ts...>; };
template <class T, std::size_t N> struct parts<std::array<T, N>> { using type = types<T>; };
template <class C, class Tr, class A> struct parts<std::basic_string<C, Tr, A>> { using type = types<C>; };
template <class T, class A> struct parts<std::vector<T, A>> { using type = types<T>; };
template <class T, class A> struct parts<std::deque<T, A>> { using type = types<T>; };
template <class K, class C, class A> struct parts<std::set<K, C, A>> { using type = types<K>; };
template <class K, class H, class E, class A>
struct parts<std::unordered_set<K, H, E, A>> { using type = types<K>; };
template <class K, class V, class C, class A>
struct parts<std::map<K, V, C, A>> { using type = types<K, V>; };
template <class K, class V, class H, class E, class A>
struct parts<std::unordered_map<K, V, H, E, A>> { using type = types<K, V>; };

/// The first of Ts that is not an element, or void.
template <class... Ts> struct first_bad { using type = void; };
template <class T, class... Rest>
struct first_bad<T, Rest...>
    : std::conditional_t<element<T>, first_bad<Rest...>, std::type_identity<T>> {};
template <class... Ts> std::type_identity<typename first_bad<Ts...>::type> first_bad_of(types<Ts...>);

/// Character types: a pointer to one is text, which goes as std::string.
template <class T>
concept character = std::is_same_v<T, char> || std::is_same_v<T, signed char> ||
                    std::is_same_v<T, unsigned char> || std::is_same_v<T, wchar_t> ||
                    std::is_same_v<T, char8_t> || std::is_same_v<T, char16_t> || std::is_same_v<T, char32_t>;

/// A class aggregate that crew::Codec encodes member by member: one whose
/// members crew can list, and which is not encoded as raw bytes already
/// (trivially copyable aggregates keep their byte encoding) nor a standard
/// template crew handles itself (std::array).
template <class T>
concept reflected = listable_aggregate<T> && !bytewise<T> && !is_structured<T>::value;

template <class... Ms> constexpr bool all_elements(types<Ms...>) { return (element<Ms> && ...); }
template <class... Ms> constexpr std::size_t min_size_sum(types<Ms...>) {
    return (std::size_t{0} + ... + min_size<Ms>);
}

/// Whether M is T, or a standard template crew knows (std::vector, std::map,
/// std::optional...) with T somewhere inside.
template <class M, class T> struct mentions;
template <class T, class... Ms>
constexpr bool any_mentions(types<Ms...>) { return (mentions<std::remove_cv_t<Ms>, T>::value || ...); }
template <class M, class T>
struct mentions : std::bool_constant<std::is_same_v<M, T> || any_mentions<T>(typename parts<M>::type{})> {};

/// An aggregate that holds itself (struct Node { std::vector<Node> kids; }).
/// Its encodability would depend on itself, which a concept cannot express:
/// such a type needs a Codec of its own.
template <class T>
constexpr bool self_referential(types<>) { return false; }
template <class T, class... Ms>
constexpr bool self_referential(types<Ms...>) { return (mentions<std::remove_cvref_t<Ms>, T>::value || ...); }

/// An aggregate whose members are all encodable.
template <class T>
concept aggregate_of_elements =
    reflected<T> && !self_referential<T>(field_types<T>{}) && all_elements(field_types<T>{});

template <class Aggregate, class Member> constexpr void reject_member();

/// Fails compilation with the reason T cannot be encoded. Only instantiated
/// when T is being encoded or decoded, never by crew::encodable. For a std
/// container it blames the first element type that is the problem; for an
/// aggregate, the first member type.
template <class T>
constexpr void reject() {
    using Bad = typename decltype(first_bad_of(typename parts<T>::type{}))::type;
    if constexpr (!unsupported<T>) {
        static_assert(always_false<T>,
                      "crew::Codec<T> is specialised for this type but cannot be used: it needs "
                      "static void encode(crew::Writer&, const T&) and static T decode(crew::Reader&)");
    } else if constexpr (std::is_pointer_v<T> && character<std::remove_cv_t<std::remove_pointer_t<T>>>) {
        static_assert(always_false<T>,
                      "crew::Codec: a pointer (const char*) cannot be sent to another process; for text "
                      "pass std::string(...) (a string literal is a const char*; a pointer cannot be "
                      "encoded by crew::Codec)");
    } else if constexpr (std::is_pointer_v<T> || std::is_member_pointer_v<T> || std::is_null_pointer_v<T>) {
        static_assert(always_false<T>,
                      "crew::Codec: a pointer cannot be encoded by crew::Codec: an address means nothing in "
                      "another process; pass the value it points at instead");
    } else if constexpr (is_view<T>::value) {
        static_assert(always_false<T>,
                      "a view (std::string_view, std::span, std::reference_wrapper) cannot be "
                      "encoded by crew::Codec: it does not own what it refers to; pass "
                      "std::string or std::vector instead");
    } else if constexpr (std::is_array_v<T> && character<std::remove_cv_t<std::remove_all_extents_t<T>>>) {
        static_assert(always_false<T>,
                      "crew::Codec: a string literal or char array cannot be sent to another process as it "
                      "is; for text pass std::string(...) (a C array cannot be encoded by crew::Codec)");
    } else if constexpr (std::is_array_v<T> || !std::is_object_v<T>) {
        static_assert(always_false<T>,
                      "a C array, reference, function or void cannot be encoded by crew::Codec; "
                      "use std::array or pass the value");
    } else if constexpr (!std::is_void_v<Bad>) {
        reject<std::remove_cv_t<Bad>>();  // a std container whose element is the problem
    } else if constexpr (reflected<T>) {
        using BadMember = typename decltype(first_bad_of(field_types<T>{}))::type;
        if constexpr (!self_referential<T>(field_types<T>{}))
            reject_member<T, BadMember>();
        else
            static_assert(always_false<T>,
                          "this aggregate cannot be encoded by crew::Codec without user code: it holds "
                          "itself (e.g. struct Node { std::vector<Node> kids; }); specialise crew::Codec<T> "
                          "for it (see crew/codec.hpp)");
    } else if constexpr (std::is_class_v<T> && std::is_aggregate_v<T> && !listable_aggregate<T>) {
        static_assert(always_false<T>,
                      "this aggregate cannot be encoded by crew::Codec: crew cannot list its members (more "
                      "than 32, or a member such as std::any that converts from anything); specialise "
                      "crew::Codec<T> for it (see crew/codec.hpp)");
    } else {
        static_assert(always_false<T>,
                      "this type cannot be encoded by crew::Codec: specialise crew::Codec<T> with "
                      "static void encode(crew::Writer&, const T&) and static T decode(crew::Reader&) "
                      "(see crew/codec.hpp)");
    }
}

/// An aggregate with a member that cannot be encoded: names both types in
/// the instantiation ("with Aggregate = ...; Member = ..."), then says why
/// the member cannot be.
template <class Aggregate, class Member>
constexpr void reject_member() {
    static_assert(always_false<Aggregate>,
                  "this aggregate (plain struct) cannot be encoded by crew::Codec because a member is not "
                  "encodable: Member, named above, cannot be encoded (the reason follows); change that "
                  "member or specialise crew::Codec<T> for the struct");
    reject<std::remove_cv_t<Member>>();
}

/// True when T is encodable; otherwise fails compilation with crew::Codec's
/// message saying why (a pointer, a string literal, a struct member...).
/// Call it in a constant expression (`static_assert(assert_encodable<T>())`)
/// so the message comes out before any other: the instantiation happens there
/// and then, not at the end of the translation unit.
template <class T>
constexpr bool assert_encodable() {
    using U = std::remove_cvref_t<T>;
    if constexpr (!encodable<U>) {
        reject<U>();
        return false;
    } else {
        return true;
    }
}

}  // namespace crew::detail

namespace crew {

/// Trivially copyable types: raw bytes.
template <class T>
    requires detail::bytewise<T>
struct Codec<T> : detail::raw_codec<T> {};

/// bool: one byte, and only 0 or 1 decodes (any other value would be UB).
template <>
struct Codec<bool> {
    static constexpr std::size_t min_encoded_size = 1;
    static void encode(Writer& w, bool b) { w.write_value(static_cast<std::uint8_t>(b)); }
    static bool decode(Reader& r) {
        const auto b = r.read_value<std::uint8_t>();
        detail::check_flag(b, "a bool");
        return b == 1;
    }
};

/// std::basic_string: length, then the characters in one copy.
template <class C, class Tr, class A>
    requires detail::bytewise<C> && detail::bulk<C>
struct Codec<std::basic_string<C, Tr, A>> {
    using S = std::basic_string<C, Tr, A>;
    static constexpr std::size_t min_encoded_size = 8;
    static void encode(Writer& w, const S& s) {
        detail::write_count(w, s.size());
        w.write(s.data(), s.size() * sizeof(C));
    }
    static S decode(Reader& r) {
        return detail::read_bulk<S, C>(r, detail::read_count(r, sizeof(C)));
    }
};

/// std::vector: length, then one copy for trivially copyable elements, else
/// element by element.
template <class T, class A>
    requires detail::element<T>
struct Codec<std::vector<T, A>> : detail::sequence_codec<std::vector<T, A>, T> {
    using V = std::vector<T, A>;
    static void encode(Writer& w, const V& v) {
        if constexpr (detail::bulk<T>) {
            detail::write_count(w, v.size());
            w.write(v.data(), v.size() * sizeof(T));
        } else {
            detail::sequence_codec<V, T>::encode(w, v);
        }
    }
    static V decode(Reader& r) {
        if constexpr (detail::bulk<T> && std::is_default_constructible_v<T>) {
            return detail::read_bulk<V, T>(r, detail::read_count(r, sizeof(T)));
        } else {
            return detail::sequence_codec<V, T>::decode(r);
        }
    }
};

/// std::vector<bool>: length, then the bits packed 8 to a byte (LSB first).
/// Unused bits of the last byte must be 0.
template <class A>
struct Codec<std::vector<bool, A>> {
    using V = std::vector<bool, A>;
    static constexpr std::size_t min_encoded_size = 8;
    static void encode(Writer& w, const V& v) {
        detail::write_count(w, v.size());
        std::uint8_t byte = 0;
        for (std::size_t i = 0; i < v.size(); ++i) {
            byte |= static_cast<std::uint8_t>(v[i] ? 1u << (i % 8) : 0u);
            if (i % 8 == 7 || i + 1 == v.size()) {
                w.write(&byte, 1);
                byte = 0;
            }
        }
    }
    static V decode(Reader& r) {
        const auto n = r.read_value<std::uint64_t>();
        const std::uint64_t nbytes = n / 8 + (n % 8 != 0);  // no overflow for any n
        if (nbytes > r.remaining())
            throw CodecError("crew::Codec: a std::vector<bool> of " + std::to_string(n) +
                             " elements does not fit in the " + std::to_string(r.remaining()) +
                             " bytes left; the input is corrupt or encodes another type");
        r.charge_elements(n);
        auto bytes = r.take(static_cast<std::size_t>(nbytes));
        V v(static_cast<std::size_t>(n));
        for (std::size_t i = 0; i < v.size(); ++i)
            v[i] = (std::to_integer<unsigned>(bytes[i / 8]) >> (i % 8)) & 1u;
        if (n % 8 != 0 && (std::to_integer<unsigned>(bytes.back()) >> (n % 8)) != 0)
            throw CodecError("crew::Codec: unused bits set at the end of a std::vector<bool>; "
                             "the input is corrupt or encodes another type");
        return v;
    }
};

/// std::deque: length, then element by element.
template <class T, class A>
    requires detail::element<T>
struct Codec<std::deque<T, A>> : detail::sequence_codec<std::deque<T, A>, T> {};

/// std::array: its N elements, no length; one copy when trivially copyable.
template <class T, std::size_t N>
    requires detail::element<T>
struct Codec<std::array<T, N>> {
    using Arr = std::array<T, N>;
    static constexpr std::size_t min_encoded_size = N * detail::min_size<T>;
    static void encode(Writer& w, const Arr& a) {
        if constexpr (detail::bulk<T>) {
            w.write(a.data(), N * sizeof(T));
        } else {
            for (const auto& e : a) w.write_value(e);
        }
    }
    static Arr decode(Reader& r) {
        if constexpr (detail::bulk<T> && std::is_trivially_default_constructible_v<T>) {
            Arr a;
            r.read(a.data(), N * sizeof(T));
            return a;
        } else if constexpr (std::is_default_constructible_v<T>) {
            Arr a;
            for (auto& e : a) e = r.read_value<T>();
            return a;
        } else {
            // Braced initialisation reads the elements in order.
            return [&]<std::size_t... I>(std::index_sequence<I...>) {
                return Arr{{((void)I, r.read_value<T>())...}};
            }(std::make_index_sequence<N>{});
        }
    }
};

/// std::pair: first, then second.
template <class A, class B>
    requires detail::element<A> && detail::element<B>
struct Codec<std::pair<A, B>> {
    static constexpr std::size_t min_encoded_size = detail::min_size<A> + detail::min_size<B>;
    static void encode(Writer& w, const std::pair<A, B>& p) {
        w.write_value(p.first);
        w.write_value(p.second);
    }
    static std::pair<A, B> decode(Reader& r) {
        return std::pair<A, B>{r.read_value<A>(), r.read_value<B>()};  // braces: in order
    }
};

/// std::tuple: each element in order; std::tuple<> takes no bytes.
template <class... Ts>
    requires(detail::element<Ts> && ...)
struct Codec<std::tuple<Ts...>> {
    static constexpr std::size_t min_encoded_size = (std::size_t{0} + ... + detail::min_size<Ts>);
    static void encode(Writer& w, const std::tuple<Ts...>& t) {
        std::apply([&](const auto&... xs) { (w.write_value(xs), ...); }, t);
    }
    static std::tuple<Ts...> decode([[maybe_unused]] Reader& r) {
        return std::tuple<Ts...>{r.read_value<Ts>()...};  // braces: in order
    }
};

/// std::optional: a 0/1 flag, then the value if there is one.
template <class T>
    requires detail::element<T>
struct Codec<std::optional<T>> {
    static constexpr std::size_t min_encoded_size = 1;
    static void encode(Writer& w, const std::optional<T>& o) {
        w.write_value(static_cast<std::uint8_t>(o.has_value()));
        if (o) w.write_value(*o);
    }
    static std::optional<T> decode(Reader& r) {
        const auto flag = r.read_value<std::uint8_t>();
        detail::check_flag(flag, "an optional's flag");
        if (flag == 0) return std::nullopt;
        return std::optional<T>(std::in_place, r.read_value<T>());
    }
};

/// std::variant: the index (uint32), then the active alternative.
template <class... Ts>
    requires(detail::element<Ts> && ...)
struct Codec<std::variant<Ts...>> {
    using V = std::variant<Ts...>;
    static constexpr std::size_t min_encoded_size = 4 + std::min({detail::min_size<Ts>...});

    static void encode(Writer& w, const V& v) {
        if (v.valueless_by_exception())
            throw CodecError("crew::Codec: cannot encode a std::variant that is valueless "
                             "(an exception interrupted its last assignment)");
        w.write_value(static_cast<std::uint32_t>(v.index()));
        std::visit([&w](const auto& x) { w.write_value(x); }, v);
    }
    static V decode(Reader& r) {
        const auto i = r.read_value<std::uint32_t>();
        if (i >= sizeof...(Ts))
            throw CodecError("crew::Codec: variant index " + std::to_string(i) + " is out of range for " +
                             std::to_string(sizeof...(Ts)) +
                             " alternatives; the input is corrupt or encodes another type");
        // One decoder per alternative, picked by index: in_place_index keeps
        // variants with repeated types (std::variant<int, int>) exact.
        static constexpr auto table = []<std::size_t... I>(std::index_sequence<I...>) {
            return std::array<V (*)(Reader&), sizeof...(Ts)>{&alternative<I>...};
        }(std::index_sequence_for<Ts...>{});
        return table[i](r);
    }

private:
    template <std::size_t I>
    static V alternative(Reader& r) {
        return V(std::in_place_index<I>, r.read_value<std::variant_alternative_t<I, V>>());
    }
};

template <class K, class C, class A>
    requires detail::element<K>
struct Codec<std::set<K, C, A>> : detail::associative_codec<std::set<K, C, A>, K> {};

template <class K, class H, class E, class A>
    requires detail::element<K>
struct Codec<std::unordered_set<K, H, E, A>>
    : detail::associative_codec<std::unordered_set<K, H, E, A>, K> {};

template <class K, class V, class C, class A>
    requires detail::element<K> && detail::element<V>
struct Codec<std::map<K, V, C, A>> : detail::associative_codec<std::map<K, V, C, A>, K, V> {};

template <class K, class V, class H, class E, class A>
    requires detail::element<K> && detail::element<V>
struct Codec<std::unordered_map<K, V, H, E, A>>
    : detail::associative_codec<std::unordered_map<K, V, H, E, A>, K, V> {};

/// Aggregates (plain structs) that are not trivially copyable, whose members
/// are all encodable: each member in declaration order, with no user code.
/// (A trivially copyable struct keeps its raw bytes; a Codec specialisation
/// of your own wins over both.)
template <class T>
    requires detail::aggregate_of_elements<T>
struct Codec<T> {
    static constexpr std::size_t min_encoded_size = detail::min_size_sum(detail::field_types<T>{});

    static void encode(Writer& w, const T& v) {
        detail::with_fields<detail::field_count<T>>(v, [&w](auto, const auto&... m) { (w.write_value(m), ...); });
    }
    static T decode(Reader& r) { return decode_fields(r, detail::field_types<T>{}); }

private:
    template <class... Ms>
    static T decode_fields([[maybe_unused]] Reader& r, detail::types<Ms...>) {
        return T{r.read_value<Ms>()...};  // braces: the members are read in order
    }
};

}  // namespace crew
