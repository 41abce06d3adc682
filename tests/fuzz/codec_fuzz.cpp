// libFuzzer target: crew::decode<T> over bytes chosen by the fuzzer, for one
// of many supported types (picked by the first byte). Decoding must either
// succeed or throw crew::CodecError: never crash, read past the buffer (ASan),
// or allocate without bound. A value that decodes must survive a round trip.
//
//   clang++ -std=c++20 -fsanitize=fuzzer,address,undefined -Iinclude codec_fuzz.cpp
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include <crew/codec.hpp>
#include <crew/errors.hpp>

namespace {

// Aggregates with no Codec of their own: encoded member by member.
struct Inner {
    int id;
    std::string label;
    bool operator==(const Inner&) const = default;
};
struct Record {
    std::string name;
    std::vector<Inner> items;
    std::optional<Inner> best;
    std::map<int, std::vector<std::monostate>> marks;
    bool operator==(const Record&) const = default;
};

// Integers and strings only: a decoded NaN would not compare equal to itself.
// New types go at the end: a seed's first byte picks its type.
using Types = std::tuple<int, std::string, std::vector<int>, std::vector<std::string>, std::map<std::string, int>,
                         std::unordered_map<int, std::string>, std::set<long>, std::optional<std::string>,
                         std::variant<int, std::string, std::vector<std::uint8_t>>, std::pair<int, std::string>,
                         std::tuple<int, char, std::string>, std::array<int, 4>, std::deque<std::string>,
                         std::vector<std::vector<std::optional<int>>>, std::vector<std::byte>,
                         // Elements of no bytes, nested: only the Reader's element budget bounds them.
                         std::vector<std::vector<std::monostate>>, Record,
                         std::vector<std::vector<std::vector<std::tuple<>>>>>;

template <class T>
void round_trip(std::span<const std::byte> bytes) {
    T value;
    try {
        value = crew::decode<T>(bytes);
    } catch (const crew::CodecError&) {
        return;  // refused, as it should be
    }
    const auto again = crew::encode(value);
    if (!(crew::decode<T>(std::span<const std::byte>(again)) == value)) std::abort();
}

template <std::size_t... I>
void dispatch(std::size_t which, std::span<const std::byte> bytes, std::index_sequence<I...>) {
    ((which == I ? round_trip<std::tuple_element_t<I, Types>>(bytes) : void()), ...);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    constexpr std::size_t count = std::tuple_size_v<Types>;
    const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data + 1), size - 1);
    dispatch(data[0] % count, bytes, std::make_index_sequence<count>{});
    return 0;
}
