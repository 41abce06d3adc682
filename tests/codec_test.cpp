// crew::Codec: round trips of every supported type, the customisation point,
// malformed and hostile input, and the encodable concept.
#include <crew/codec.hpp>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <variant>
#include <vector>

#include "catch.hpp"

namespace {

enum class Colour : std::uint8_t { red = 1, green = 2 };
struct Pod {
    int a;
    double b;
    char c;
    bool operator==(const Pod&) const = default;
};
struct Empty {
    bool operator==(const Empty&) const = default;
};
struct NoDefault {  // trivially copyable, no default constructor
    explicit NoDefault(int v) : v(v) {}
    int v;
    bool operator==(const NoDefault&) const = default;
};
struct HoldsUnique {
    std::unique_ptr<int> p;
};

// A user type through the customisation point.
struct Point {
    std::string name;
    std::vector<double> xs;
    bool operator==(const Point&) const = default;
};

// A recursive user type: its codec uses the codec of std::vector<Tree>.
struct Tree {
    int value = 0;
    std::vector<Tree> kids;
    bool operator==(const Tree&) const = default;
};

// Trivially copyable, but its Codec overrides the raw bytes (4 bytes, not 8).
struct Celsius {
    double degrees;
    bool operator==(const Celsius&) const = default;
};

// Throws while being constructed from an int: leaves a variant valueless.
// (Not trivially copyable, or libstdc++ builds a temporary and stays valid.)
struct Bomb {
    Bomb() = default;
    explicit Bomb(int) { throw 1; }
    Bomb(const Bomb&) {}
};

// Has a Codec specialisation, but a wrong one.
struct Broken {};

// Aggregates with no Codec: encoded member by member.
struct Inner {
    int id = 0;
    std::string label;
    bool operator==(const Inner&) const = default;
};
struct Outer {
    Inner first;
    std::vector<Inner> many;
    std::optional<Inner> maybe;
    std::map<std::string, std::vector<double>> table;
    std::variant<int, std::string, Inner> either;
    Pod pod;  // trivially copyable: its raw bytes, inside the member-wise encoding
    bool flag = false;
    bool operator==(const Outer&) const = default;
};
struct WithConst {
    const std::string name;
    const int n;
    bool operator==(const WithConst&) const = default;
};
struct NoMembers {
    ~NoMembers() {}  // an aggregate, but not trivially copyable
    bool operator==(const NoMembers&) const = default;
};
// An aggregate with its own Codec: the specialisation wins (1 byte, not 8 + n).
struct Tagged {
    std::string text;
    bool operator==(const Tagged&) const = default;
};
struct HoldsText {
    std::string s;
    const char* p;
};
struct HoldsRef {
    const int& r;
    std::string s;
};
struct SelfNode {  // holds itself, no Codec
    int v;
    std::vector<SelfNode> kids;
};
struct Deep {
    std::vector<std::vector<HoldsUnique>> inner;
};

// A zero-size type whose decodes are counted: a hostile message must not
// make the decoder run many of them.
inline std::size_t counted_decodes = 0;
struct Counted {
    bool operator==(const Counted&) const = default;
};

}  // namespace

template <>
struct crew::Codec<Tagged> {
    static void encode(crew::Writer& w, const Tagged& t) { w.write_value(static_cast<std::uint8_t>(t.text.size())); }
    static Tagged decode(crew::Reader& r) { return Tagged{std::string(r.read_value<std::uint8_t>(), 'x')}; }
};

template <>
struct crew::Codec<Counted> {
    static void encode(crew::Writer&, const Counted&) {}
    static Counted decode(crew::Reader&) {
        ++counted_decodes;
        return Counted{};
    }
};

template <>
struct crew::Codec<Point> {
    static void encode(crew::Writer& w, const Point& p) {
        w.write_value(p.name);
        w.write_value(p.xs);
    }
    static Point decode(crew::Reader& r) {
        auto name = r.read_value<std::string>();
        return Point{std::move(name), r.read_value<std::vector<double>>()};
    }
};

template <>
struct crew::Codec<Tree> {
    static constexpr std::size_t min_encoded_size = 12;
    static void encode(crew::Writer& w, const Tree& t) {
        w.write_value(t.value);
        w.write_value(t.kids);
    }
    static Tree decode(crew::Reader& r) {
        Tree t;
        t.value = r.read_value<int>();
        t.kids = r.read_value<std::vector<Tree>>();
        return t;
    }
};

template <>
struct crew::Codec<Celsius> {
    static constexpr std::size_t min_encoded_size = 4;
    static void encode(crew::Writer& w, const Celsius& c) { w.write_value(static_cast<float>(c.degrees)); }
    static Celsius decode(crew::Reader& r) { return Celsius{r.read_value<float>()}; }
};

template <>
struct crew::Codec<Bomb> {
    static void encode(crew::Writer&, const Bomb&) {}
    static Bomb decode(crew::Reader&) { return Bomb{}; }
};

template <>
struct crew::Codec<Broken> {
    static int decode(crew::Reader&) { return 0; }  // wrong type, and no encode
};

namespace {

using Bytes = std::vector<std::byte>;

Bytes u64(std::uint64_t v) {
    Bytes b(8);
    std::memcpy(b.data(), &v, 8);
    return b;
}
Bytes cat(Bytes a, const Bytes& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
}

// Encode, decode, compare; and every strict prefix of the encoding must throw
// CodecError (the decoder never reads past the end, never succeeds short).
template <class T>
void round_trip(const T& v) {
    const Bytes bytes = crew::encode(v);
    CHECK(crew::decode<T>(bytes) == v);
    if (bytes.size() <= 4096) {
        for (std::size_t n = 0; n < bytes.size(); ++n) {
            INFO("prefix of " << n << " of " << bytes.size() << " bytes");
            CHECK_THROWS_AS(crew::decode<T>(std::span(bytes.data(), n)), crew::CodecError);
        }
    }
    // One extra byte is never accepted either.
    Bytes longer = bytes;
    longer.push_back(std::byte{0});
    CHECK_THROWS_AS(crew::decode<T>(longer), crew::CodecError);
}

}  // namespace

TEMPLATE_TEST_CASE("trivially copyable scalars round-trip as their bytes", "[codec]", char, signed char,
                   unsigned char, std::int16_t, std::uint16_t, int, unsigned, std::int64_t, std::uint64_t,
                   float, double, long double, std::byte, char8_t, char32_t) {
    round_trip(TestType{});
    round_trip(static_cast<TestType>(std::numeric_limits<unsigned char>::max()));
    round_trip(std::numeric_limits<TestType>::max());
    round_trip(std::numeric_limits<TestType>::lowest());
    CHECK(crew::encode(TestType{}).size() == sizeof(TestType));
}

TEST_CASE("trivially copyable aggregates, enums and empties round-trip", "[codec]") {
    round_trip(Colour::green);
    round_trip(Pod{-7, 2.5, 'x'});
    round_trip(std::array<Pod, 3>{{{1, 1.0, 'a'}, {2, 2.0, 'b'}, {3, 3.0, 'c'}}});
    round_trip(NoDefault{42});
    round_trip(std::vector<NoDefault>{NoDefault{1}, NoDefault{2}});
    round_trip(std::array<NoDefault, 2>{NoDefault{1}, NoDefault{2}});
    round_trip(std::chrono::nanoseconds{123456789});
    round_trip(Empty{});
    round_trip(std::monostate{});
    CHECK(crew::encode(Empty{}).empty());
    CHECK(crew::encode(std::monostate{}).empty());
    CHECK(crew::encode(std::tuple<>{}).empty());
}

TEST_CASE("bool round-trips and only 0 or 1 decodes", "[codec]") {
    round_trip(true);
    round_trip(false);
    CHECK(crew::encode(true) == Bytes{std::byte{1}});
    for (int b = 2; b < 256; ++b)
        CHECK_THROWS_AS(crew::decode<bool>(Bytes{std::byte(b)}), crew::CodecError);
}

TEST_CASE("strings round-trip", "[codec]") {
    round_trip(std::string{});
    round_trip(std::string("hello"));
    round_trip(std::string("embedded\0nul", 12));
    round_trip(std::string(10000, 'z'));
    round_trip(std::u32string(U"w\U0001F600de"));
    CHECK(crew::encode(std::string("ab")).size() == 8 + 2);
}

TEST_CASE("vectors round-trip, trivially copyable ones as one block", "[codec]") {
    round_trip(std::vector<int>{});
    round_trip(std::vector<int>{1, 2, 3});
    round_trip(std::vector<std::string>{"a", "", "ccc"});
    round_trip(std::vector<std::vector<int>>{{}, {1}, {2, 3}});
    round_trip(std::vector<Empty>(5));
    round_trip(std::vector<std::monostate>(1000));
    CHECK(crew::encode(std::vector<std::monostate>(1000)).size() == 8);

    std::vector<double> big(1'000'000);
    for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<double>(i) * 0.5;
    const Bytes bytes = crew::encode(big);
    CHECK(bytes.size() == 8 + big.size() * sizeof(double));
    CHECK(std::memcmp(bytes.data() + 8, big.data(), big.size() * sizeof(double)) == 0);
    CHECK(crew::decode<std::vector<double>>(bytes) == big);
}

TEST_CASE("bulk vectors and strings decode at any offset, and when large", "[codec]") {
    // After a bool the doubles start at an odd offset: the decoder must not
    // read them as aligned doubles (UBSan checks), and must not lose any.
    using Odd = std::tuple<bool, std::vector<double>, std::u16string>;
    round_trip(Odd{true, {0.5, -1.25, 3e300}, u"odd"});
    for (std::size_t offset = 0; offset < 8; ++offset) {
        Bytes bytes(offset, std::byte{7});
        crew::Writer w(bytes);
        w.write_value(std::vector<std::uint32_t>{1, 2, 0xffffffffu});
        crew::Reader r(std::span<const std::byte>(bytes).subspan(offset));
        CHECK(r.read_value<std::vector<std::uint32_t>>() == std::vector<std::uint32_t>{1, 2, 0xffffffffu});
        r.expect_end();
    }
    // Above the huge-page hint's size (the hint only advises the kernel).
    std::vector<float> large((std::size_t{9} << 20) / sizeof(float));
    for (std::size_t i = 0; i < large.size(); ++i) large[i] = static_cast<float>(i % 1000) * 0.25f;
    CHECK(crew::decode<std::vector<float>>(crew::encode(large)) == large);
    const std::string text(std::size_t{5} << 20, 'q');
    CHECK(crew::decode<std::string>(crew::encode(text)) == text);
}

TEST_CASE("std::vector<bool> round-trips packed", "[codec]") {
    for (std::size_t n : {0, 1, 7, 8, 9, 16, 17, 1000}) {
        std::vector<bool> v(n);
        for (std::size_t i = 0; i < n; ++i) v[i] = (i * 7 + 3) % 5 < 2;
        round_trip(v);
        CHECK(crew::encode(v).size() == 8 + (n + 7) / 8);
    }
    // Bits past the length must be zero.
    CHECK_THROWS_AS(crew::decode<std::vector<bool>>(cat(u64(3), Bytes{std::byte{0x0f}})), crew::CodecError);
    CHECK(crew::decode<std::vector<bool>>(cat(u64(3), Bytes{std::byte{0x05}})) ==
          std::vector<bool>{true, false, true});
}

TEST_CASE("arrays, deques, pairs, tuples, optionals round-trip", "[codec]") {
    round_trip(std::array<int, 0>{});
    round_trip(std::array<int, 4>{1, 2, 3, 4});
    round_trip(std::array<std::string, 3>{"x", "", "yz"});
    round_trip(std::array<bool, 3>{true, false, true});
    round_trip(std::deque<int>{});
    round_trip(std::deque<std::string>{"a", "b"});
    round_trip(std::pair<int, std::string>{3, "three"});
    round_trip(std::tuple<>{});
    round_trip(std::tuple<int, std::string, double>{1, "two", 3.0});
    round_trip(std::optional<int>{});
    round_trip(std::optional<int>{5});
    round_trip(std::optional<std::string>{"maybe"});
    round_trip(std::optional<std::optional<int>>{std::optional<int>{}});
    CHECK_THROWS_AS(crew::decode<std::optional<int>>(Bytes{std::byte{2}}), crew::CodecError);
}

TEST_CASE("variants round-trip by index; a bad index throws", "[codec]") {
    using V = std::variant<std::monostate, int, std::string>;
    round_trip(V{});
    round_trip(V{7});
    round_trip(V{std::string("str")});
    using Dup = std::variant<int, int>;  // same type twice: the index is kept
    round_trip(Dup{std::in_place_index<1>, 4});
    CHECK(crew::decode<Dup>(crew::encode(Dup{std::in_place_index<1>, 4})).index() == 1);

    Bytes bad(4);
    const std::uint32_t idx = 3;
    std::memcpy(bad.data(), &idx, 4);
    bad.resize(16);
    CHECK_THROWS_AS(crew::decode<V>(bad), crew::CodecError);
    std::memset(bad.data(), 0xff, 4);
    CHECK_THROWS_AS(crew::decode<V>(bad), crew::CodecError);
}

TEST_CASE("sets and maps round-trip; a repeated key throws", "[codec]") {
    round_trip(std::set<int>{});
    round_trip(std::set<std::string>{"b", "a", "c"});
    round_trip(std::unordered_set<int>{3, 1, 2});
    round_trip(std::map<int, std::string>{});
    round_trip(std::map<int, std::string>{{1, "one"}, {2, "two"}});
    round_trip(std::unordered_map<std::string, int>{{"x", 1}, {"y", 2}});

    const Bytes dup_set = cat(cat(u64(2), crew::encode(7)), crew::encode(7));
    CHECK_THROWS_AS(crew::decode<std::set<int>>(dup_set), crew::CodecError);
    CHECK_THROWS_AS(crew::decode<std::unordered_set<int>>(dup_set), crew::CodecError);
    const Bytes dup_map = cat(cat(u64(2), crew::encode(std::pair{1, 2})), crew::encode(std::pair{1, 3}));
    CHECK_THROWS_AS((crew::decode<std::map<int, int>>(dup_map)), crew::CodecError);
    CHECK_THROWS_AS((crew::decode<std::unordered_map<int, int>>(dup_map)), crew::CodecError);
}

TEST_CASE("nested containers round-trip", "[codec]") {
    using Inner = std::vector<std::optional<std::variant<int, std::string>>>;
    std::map<std::string, Inner> m{
        {"", {}},
        {"a", {std::nullopt, 1, std::string("one")}},
        {"b", {std::string(""), std::nullopt}},
    };
    round_trip(m);
    round_trip(std::vector<std::map<int, std::set<std::string>>>{{{1, {"x", "y"}}}, {}});
    round_trip(std::tuple<std::deque<std::pair<int, bool>>, std::array<std::optional<int>, 2>>{
        {{1, true}, {2, false}}, {std::nullopt, 9}});
}

TEST_CASE("user types go through the Codec specialisation", "[codec]") {
    round_trip(Point{"p", {1.0, 2.0}});
    round_trip(std::vector<Point>{{"a", {}}, {"b", {3.0}}});
    round_trip(std::map<std::string, Point>{{"k", Point{"v", {4.0}}}});

    Tree t{1, {Tree{2, {}}, Tree{3, {Tree{4, {}}}}}};
    round_trip(t);

    // The user's Codec wins over raw bytes, also inside containers.
    CHECK(crew::encode(Celsius{21.5}).size() == 4);
    CHECK(crew::encode(std::vector<Celsius>(10)).size() == 8 + 10 * 4);
    CHECK(crew::encode(std::array<Celsius, 3>{}).size() == 3 * 4);
    round_trip(std::vector<Celsius>{{1.5}, {-2.25}});
}

TEST_CASE("hostile lengths throw CodecError before allocating", "[codec]") {
    for (std::uint64_t n : {std::uint64_t{1} << 63, std::uint64_t{1} << 40, ~std::uint64_t{0}}) {
        INFO("length " << n);
        const Bytes b = cat(u64(n), Bytes(16));
        CHECK_THROWS_AS(crew::decode<std::string>(b), crew::CodecError);
        CHECK_THROWS_AS(crew::decode<std::vector<int>>(b), crew::CodecError);
        CHECK_THROWS_AS(crew::decode<std::vector<std::string>>(b), crew::CodecError);
        CHECK_THROWS_AS(crew::decode<std::vector<bool>>(b), crew::CodecError);
        CHECK_THROWS_AS(crew::decode<std::vector<Empty>>(b), crew::CodecError);
        CHECK_THROWS_AS(crew::decode<std::vector<std::monostate>>(b), crew::CodecError);
        CHECK_THROWS_AS(crew::decode<std::vector<Point>>(b), crew::CodecError);
        CHECK_THROWS_AS(crew::decode<std::vector<Tree>>(b), crew::CodecError);
        CHECK_THROWS_AS(crew::decode<std::deque<double>>(b), crew::CodecError);
        CHECK_THROWS_AS(crew::decode<std::set<int>>(b), crew::CodecError);
        CHECK_THROWS_AS((crew::decode<std::map<std::string, int>>(b)), crew::CodecError);
        CHECK_THROWS_AS((crew::decode<std::unordered_map<int, int>>(b)), crew::CodecError);
        CHECK_THROWS_AS(crew::decode<std::unordered_set<std::monostate>>(b), crew::CodecError);
        // Nested: the inner length is hostile.
        CHECK_THROWS_AS(crew::decode<std::vector<std::vector<int>>>(cat(u64(1), b)), crew::CodecError);
    }
    // A count that only just does not fit.
    CHECK_THROWS_AS(crew::decode<std::vector<int>>(cat(u64(5), Bytes(16))), crew::CodecError);
    CHECK_THROWS_AS(crew::decode<std::vector<bool>>(cat(u64(17), Bytes(2))), crew::CodecError);
}

TEST_CASE("aggregates encode member by member with no user code", "[codec][aggregate]") {
    round_trip(Inner{7, "seven"});
    round_trip(Inner{});
    CHECK(crew::encode(Inner{7, "ab"}).size() == 4 + 8 + 2);
    CHECK(crew::Codec<Inner>::min_encoded_size == 4 + 8);

    Outer o{Inner{1, "one"},
            {Inner{2, "two"}, Inner{3, ""}},
            Inner{4, "four"},
            {{"t", {1.5, 2.5}}, {"", {}}},
            Inner{5, "five"},
            Pod{-1, 0.25, 'p'},
            true};
    round_trip(o);
    o.maybe.reset();
    o.either = std::string("s");
    round_trip(o);
    round_trip(Outer{});

    // Inside containers, and containers of them.
    round_trip(std::vector<Outer>{o, Outer{}});
    round_trip(std::map<std::string, Inner>{{"k", Inner{9, "v"}}});
    round_trip(std::optional<Inner>{Inner{1, "x"}});
    round_trip(std::pair<Inner, std::vector<Inner>>{Inner{1, "a"}, {Inner{2, "b"}}});

    // const members, and an aggregate with none.
    round_trip(WithConst{"c", 3});
    round_trip(NoMembers{});
    CHECK(crew::encode(NoMembers{}).empty());
}

TEST_CASE("trivially copyable aggregates keep their bytes; a user Codec wins", "[codec][aggregate]") {
    // The wire format of trivially copyable types is unchanged: raw bytes.
    const Pod p{1, 2.0, 'c'};
    const Bytes raw = crew::encode(p);
    REQUIRE(raw.size() == sizeof(Pod));
    CHECK(std::memcmp(raw.data(), &p, sizeof(Pod)) == 0);
    CHECK(crew::encode(std::vector<Pod>(3)).size() == 8 + 3 * sizeof(Pod));

    // An explicit specialisation beats the member-wise codec.
    CHECK(crew::encode(Tagged{"abc"}).size() == 1);
    CHECK(crew::decode<Tagged>(crew::encode(Tagged{"abc"})) == Tagged{"xxx"});
    CHECK(crew::encode(std::vector<Tagged>(2)).size() == 8 + 2);
    round_trip(Point{"p", {1.0}});  // Point's own Codec
}

TEST_CASE("aggregates refuse malformed bytes", "[codec][aggregate]") {
    // round_trip() checked every prefix; a member's own checks still apply.
    Bytes b = crew::encode(Outer{});
    b.back() = std::byte{2};  // flag: a bool must be 0 or 1
    CHECK_THROWS_AS(crew::decode<Outer>(b), crew::CodecError);
    CHECK_THROWS_AS(crew::decode<Inner>(cat(Bytes(4), u64(std::uint64_t{1} << 40))), crew::CodecError);
}

TEST_CASE("nested containers of empty elements are bounded by the message size", "[codec]") {
    // Issue 11 item 10: 72 bytes declaring 8 inner vectors of 2^28 empty
    // elements each (2^31 in all, seconds and 1 GiB before the budget).
    Bytes hostile = u64(8);
    for (int i = 0; i < 8; ++i) hostile = cat(hostile, u64(std::uint64_t{1} << 28));
    REQUIRE(hostile.size() == 72);
    try {
        (void)crew::decode<std::vector<std::vector<std::monostate>>>(hostile);
        FAIL("a hostile nested length decoded");
    } catch (const crew::CodecError& e) {
        CHECK(std::string(e.what()).find("malformed") != std::string::npos);
    }
    CHECK_THROWS_AS(crew::decode<std::vector<std::vector<std::tuple<>>>>(hostile), crew::CodecError);
    CHECK_THROWS_AS(crew::decode<std::vector<std::vector<Empty>>>(hostile), crew::CodecError);

    // Rejected before the work: the decoder ran at most the budget's decodes
    // of a zero-size element, for any split of the counts over the levels.
    const std::uint64_t budget = crew::Reader::element_budget_base + crew::Reader::element_budget_per_byte * 72;
    for (std::uint64_t inner : {std::uint64_t{1} << 28, budget / 8, budget / 8 + 1, budget}) {
        Bytes b = u64(8);
        for (int i = 0; i < 8; ++i) b = cat(b, u64(inner));
        counted_decodes = 0;
        CHECK_THROWS_AS(crew::decode<std::vector<std::vector<Counted>>>(b), crew::CodecError);
        CHECK(counted_decodes <= budget);
    }
    // Three levels: 1 x 1 x 2^40 and 2^20 x ... all refused.
    CHECK_THROWS_AS(crew::decode<std::vector<std::vector<std::vector<std::monostate>>>>(
                        cat(cat(u64(1), u64(1)), u64(std::uint64_t{1} << 40))),
                    crew::CodecError);

    // Real data stays well inside the budget.
    round_trip(std::vector<std::vector<std::monostate>>(100, std::vector<std::monostate>(500)));
    round_trip(std::vector<std::monostate>(60000));
    round_trip(std::vector<std::vector<int>>(100000));
    round_trip(std::vector<std::string>(100000, "s"));
    round_trip(std::vector<std::optional<char>>(100000, 'c'));
    round_trip(std::vector<bool>(100000, true));
}

TEST_CASE("Reader::charge_elements enforces the element budget", "[codec]") {
    const Bytes b(10);
    crew::Reader r(b);
    const std::uint64_t budget = crew::Reader::element_budget_base + crew::Reader::element_budget_per_byte * 10;
    r.charge_elements(budget - 1);
    r.charge_elements(1);
    CHECK_THROWS_AS(r.charge_elements(1), crew::CodecError);
    crew::Reader fresh(b);
    CHECK_THROWS_AS(fresh.charge_elements(~std::uint64_t{0}), crew::CodecError);
}

TEST_CASE("trailing bytes and garbage throw CodecError", "[codec]") {
    CHECK_THROWS_AS(crew::decode<int>(Bytes(6)), crew::CodecError);
    CHECK_THROWS_AS(crew::decode<std::monostate>(Bytes(1)), crew::CodecError);
    CHECK_THROWS_AS(crew::decode<std::string>(cat(crew::encode(std::string("ab")), Bytes(1))),
                    crew::CodecError);

    // Reader's own contract.
    const Bytes b(4);
    crew::Reader r(b);
    CHECK(r.remaining() == 4);
    CHECK(r.take(3).size() == 3);
    CHECK_THROWS_AS(r.expect_end(), crew::CodecError);
    std::byte out[2];
    CHECK_THROWS_AS(r.read(out, 2), crew::CodecError);
    CHECK_THROWS_AS(r.take(2), crew::CodecError);
    CHECK(r.remaining() == 1);  // a failed read consumes nothing
    r.read(out, 1);
    CHECK_NOTHROW(r.expect_end());

    // Deterministic junk never crashes: it decodes or throws CodecError.
    std::uint32_t seed = 12345;
    for (int i = 0; i < 2000; ++i) {
        Bytes junk(static_cast<std::size_t>(seed % 64));
        for (auto& x : junk) {
            seed = seed * 1664525u + 1013904223u;
            x = std::byte(seed >> 24);
        }
        try {
            (void)crew::decode<std::map<std::string, std::vector<std::optional<std::variant<int, bool>>>>>(junk);
        } catch (const crew::CodecError&) {
        }
    }
}

TEST_CASE("Writer appends and write_value/read_value compose", "[codec]") {
    Bytes buf{std::byte{0xaa}};
    crew::Writer w(buf);
    w.write_value(std::uint16_t{0x1234});
    w.write_value(std::string("hi"));
    w.write(nullptr, 0);
    CHECK(&w.buffer() == &buf);
    CHECK(buf.size() == 1 + 2 + 8 + 2);

    crew::Reader r{std::span(buf).subspan(1)};
    CHECK(r.read_value<std::uint16_t>() == 0x1234);
    CHECK(r.read_value<std::string>() == "hi");
    r.expect_end();
}

TEST_CASE("a valueless variant cannot be encoded", "[codec]") {
    std::variant<int, Bomb> v;
    CHECK_THROWS_AS(v.emplace<1>(0), int);
    REQUIRE(v.valueless_by_exception());
    CHECK_THROWS_AS(crew::encode(v), crew::CodecError);
}

// The concept: true for what crew encodes, false (quietly) for the rest.
static_assert(crew::encodable<int>);
static_assert(crew::encodable<const int&>);
static_assert(crew::encodable<bool>);
static_assert(crew::encodable<Colour>);
static_assert(crew::encodable<Pod>);
static_assert(crew::encodable<Empty>);
static_assert(crew::encodable<NoDefault>);
static_assert(crew::encodable<std::byte>);
static_assert(crew::encodable<std::monostate>);
static_assert(crew::encodable<std::string>);
static_assert(crew::encodable<std::vector<bool>>);
static_assert(crew::encodable<std::array<std::string, 2>>);
static_assert(crew::encodable<std::tuple<>>);
static_assert(crew::encodable<std::map<std::string, std::vector<std::optional<std::variant<int, std::string>>>>>);
static_assert(crew::encodable<Point>);
static_assert(crew::encodable<Tree>);
static_assert(crew::encodable<std::vector<Tree>>);
static_assert(crew::encodable<Celsius>);

static_assert(!crew::encodable<int*>);
static_assert(!crew::encodable<const char*>);
static_assert(!crew::encodable<void*>);
static_assert(!crew::encodable<std::nullptr_t>);
static_assert(!crew::encodable<int Pod::*>);
static_assert(!crew::encodable<void (*)()>);
static_assert(!crew::encodable<int[3]>);
static_assert(!crew::encodable<void>);
static_assert(!crew::encodable<void()>);
static_assert(!crew::encodable<std::string_view>);
static_assert(!crew::encodable<std::span<int>>);
static_assert(!crew::encodable<std::reference_wrapper<int>>);
static_assert(!crew::encodable<std::unique_ptr<int>>);
static_assert(!crew::encodable<std::shared_ptr<int>>);
static_assert(!crew::encodable<std::function<void()>>);
static_assert(!crew::encodable<HoldsUnique>);
static_assert(!crew::encodable<Broken>);
static_assert(!crew::encodable<std::vector<int*>>);
static_assert(!crew::encodable<std::optional<int*>>);  // trivially copyable, still rejected
static_assert(!crew::encodable<std::array<int*, 2>>);
static_assert(!crew::encodable<std::pair<int, std::string_view>>);
static_assert(!crew::encodable<std::tuple<int&>>);
static_assert(!crew::encodable<std::variant<int, HoldsUnique>>);
static_assert(!crew::encodable<std::map<std::string, std::unique_ptr<int>>>);
static_assert(!crew::encodable<std::vector<std::vector<std::string_view>>>);

// Aggregates: encodable exactly when every member is.
static_assert(crew::encodable<Inner>);
static_assert(crew::encodable<Outer>);
static_assert(crew::encodable<WithConst>);
static_assert(crew::encodable<NoMembers>);
static_assert(crew::encodable<std::vector<Outer>>);
static_assert(!crew::encodable<HoldsText>);  // a const char* member
static_assert(!crew::encodable<HoldsRef>);   // a reference member
static_assert(!crew::encodable<SelfNode>);   // holds itself: needs a Codec (as Tree has)
static_assert(!crew::encodable<Deep>);
static_assert(!crew::encodable<std::vector<HoldsText>>);

TEST_CASE("encodable is usable in requires-expressions", "[codec]") {
    STATIC_REQUIRE(crew::encodable<std::deque<std::set<int>>>);
    STATIC_REQUIRE_FALSE(crew::encodable<std::deque<std::set<int*>>>);
}
