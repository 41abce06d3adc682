// crew/detail/aggregate_fields.hpp — the members of a plain struct, found
// with no user code: how many there are, their types, and each one by
// reference. crew::Codec uses it to encode aggregates field by field.
//
// This is the technique of Boost.PFR, in the few lines crew needs (Boost 1.74,
// the oldest Boost crew supports, has no PFR). An aggregate T with N members
// can be brace-initialised from N values of a type that converts to anything,
// and not from N + 1; a structured binding then names the N members.
//
// Limits (Boost.PFR has the same): at most 32 members; no base classes and
// no C array members (brace elision counts an array's elements, so the count
// is wrong and the structured binding below does not compile: give such a
// type a crew::Codec, or use std::array). Reference members are found and
// then refused by the codec.
#pragma once

#include <cstddef>
#include <exception>
#include <type_traits>
#include <utility>

namespace crew::detail {

/// A list of types.
template <class... Ts> struct types {};

/// The most members crew lists without a user Codec.
inline constexpr std::size_t max_aggregate_fields = 32;

/// Converts to any type. Only named in unevaluated checks, so never called;
/// it has a body because a library constructor that a check selects (e.g.
/// std::optional's) may be instantiated, and Clang then wants a definition
/// for types with internal linkage.
struct any_field {
    template <class U>
    operator U() const {  // NOLINT(google-explicit-constructor): implicit on purpose
        std::terminate();
    }
};

/// Whether T{x0, ..., x(N-1)} compiles with each x an any_field.
template <class T, std::size_t N>
inline constexpr bool brace_init_from = []<std::size_t... I>(std::index_sequence<I...>) {
    return requires { T{((void)I, any_field{})...}; };
}(std::make_index_sequence<N>{});

/// Whether T{x0, ..., x(N-1), {}} compiles: true when T has a member after
/// the first N (it is value-initialised), false when T has exactly N.
template <class T, std::size_t N>
inline constexpr bool has_member_after = []<std::size_t... I>(std::index_sequence<I...>) {
    return requires { T{((void)I, any_field{})..., {}}; };
}(std::make_index_sequence<N>{});

/// The largest N in [0, max_aggregate_fields + 1] for which T{x0, ..., x(N-1)}
/// compiles.
template <class T>
inline constexpr std::size_t field_count = []<std::size_t... N>(std::index_sequence<N...>) {
    std::size_t n = 0;
    ((n = brace_init_from<T, N> ? N : n), ...);
    return n;
}(std::make_index_sequence<max_aggregate_fields + 2>{});

/// A struct whose members crew can list: an aggregate class of at most
/// max_aggregate_fields members, each of which can be initialised from a
/// value (a member that cannot, such as std::any, stops the count early; the
/// has_member_after check then refuses the type rather than miscount it).
template <class T>
concept listable_aggregate =
    std::is_class_v<T> && std::is_aggregate_v<T> && field_count<T> <= max_aggregate_fields &&
    brace_init_from<T, field_count<T>> && !has_member_after<T, field_count<T>>;

/// Calls f(types<M0, ..., M(N-1)>{}, m0, ..., m(N-1)) where mi names t's i-th
/// member (as an lvalue of t's constness) and Mi is its declared type, with
/// t's cv added (decltype of a structured binding).
template <std::size_t N, class T, class F>
constexpr decltype(auto) with_fields(T& t, F&& f) {
    // A compile error below means T has a base class or a C array member:
    // crew cannot list its members. Give it a crew::Codec, or use std::array.
    if constexpr (N == 0) {
        return f(types<>{});
    } else if constexpr (N == 1) {
        auto& [m0] = t;
        return f(types<decltype(m0)>{}, m0);
    } else if constexpr (N == 2) {
        auto& [m0, m1] = t;
        return f(types<decltype(m0), decltype(m1)>{}, m0, m1);
    } else if constexpr (N == 3) {
        auto& [m0, m1, m2] = t;
        return f(types<decltype(m0), decltype(m1), decltype(m2)>{}, m0, m1, m2);
    } else if constexpr (N == 4) {
        auto& [m0, m1, m2, m3] = t;
        return f(types<decltype(m0), decltype(m1), decltype(m2), decltype(m3)>{}, m0, m1, m2, m3);
    } else if constexpr (N == 5) {
        auto& [m0, m1, m2, m3, m4] = t;
        return f(types<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4)>{}, m0, m1, m2, m3, m4);
    } else if constexpr (N == 6) {
        auto& [m0, m1, m2, m3, m4, m5] = t;
        return f(types<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4), decltype(m5)>{}, m0, m1, m2, m3, m4, m5);
    } else if constexpr (N == 7) {
        auto& [m0, m1, m2, m3, m4, m5, m6] = t;
        return f(types<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4), decltype(m5), decltype(m6)>{}, m0, m1, m2, m3, m4, m5, m6);
    } else if constexpr (N == 8) {
        auto& [m0, m1, m2, m3, m4, m5, m6, m7] = t;
        return f(types<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4), decltype(m5), decltype(m6), decltype(m7)>{}, m0, m1, m2, m3, m4, m5, m6, m7);
    } else if constexpr (N == 9) {
        auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8] = t;
        return f(types<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4), decltype(m5), decltype(m6), decltype(m7), decltype(m8)>{}, m0, m1, m2, m3, m4, m5, m6, m7, m8);
    } else if constexpr (N == 10) {
        auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9] = t;
        return f(types<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4), decltype(m5), decltype(m6), decltype(m7), decltype(m8), decltype(m9)>{}, m0, m1, m2, m3, m4, m5, m6, m7, m8, m9);
    } else if constexpr (N == 11) {
        auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10] = t;
        return f(types<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4), decltype(m5), decltype(m6), decltype(m7), decltype(m8), decltype(m9), decltype(m10)>{}, m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10);
    } else if constexpr (N == 12) {
        auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11] = t;
        return f(types<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4), decltype(m5), decltype(m6), decltype(m7), decltype(m8), decltype(m9), decltype(m10), decltype(m11)>{}, m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11);
    } else if constexpr (N == 13) {
        auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12] = t;
        return f(types<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4), decltype(m5), decltype(m6), decltype(m7), decltype(m8), decltype(m9), decltype(m10), decltype(m11), decltype(m12)>{}, m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12);
    } else if constexpr (N == 14) {
        auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13] = t;
        return f(types<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4), decltype(m5), decltype(m6), decltype(m7), decltype(m8), decltype(m9), decltype(m10), decltype(m11), decltype(m12), decltype(m13)>{}, m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13);
    } else if constexpr (N == 15) {
        auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14] = t;
        return f(types<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4), decltype(m5), decltype(m6), decltype(m7), decltype(m8), decltype(m9), decltype(m10), decltype(m11), decltype(m12), decltype(m13), decltype(m14)>{}, m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14);
    } else if constexpr (N == 16) {
        auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15] = t;
        return f(types<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4), decltype(m5), decltype(m6), decltype(m7), decltype(m8), decltype(m9), decltype(m10), decltype(m11), decltype(m12), decltype(m13), decltype(m14), decltype(m15)>{}, m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15);
    } else if constexpr (N == 17) {
        auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16] = t;
        return f(types<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4), decltype(m5), decltype(m6), decltype(m7), decltype(m8), decltype(m9), decltype(m10), decltype(m11), decltype(m12), decltype(m13), decltype(m14), decltype(m15), decltype(m16)>{}, m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16);
    } else if constexpr (N == 18) {
        auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17] = t;
        return f(types<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4), decltype(m5), decltype(m6), decltype(m7), decltype(m8), decltype(m9), decltype(m10), decltype(m11), decltype(m12), decltype(m13), decltype(m14), decltype(m15), decltype(m16), decltype(m17)>{}, m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17);
    } else if constexpr (N == 19) {
        auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18] = t;
        return f(types<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4), decltype(m5), decltype(m6), decltype(m7), decltype(m8), decltype(m9), decltype(m10), decltype(m11), decltype(m12), decltype(m13), decltype(m14), decltype(m15), decltype(m16), decltype(m17), decltype(m18)>{}, m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18);
    } else if constexpr (N == 20) {
        auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19] = t;
        return f(types<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4), decltype(m5), decltype(m6), decltype(m7), decltype(m8), decltype(m9), decltype(m10), decltype(m11), decltype(m12), decltype(m13), decltype(m14), decltype(m15), decltype(m16), decltype(m17), decltype(m18), decltype(m19)>{}, m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19);
    } else if constexpr (N == 21) {
        auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19, m20] = t;
        return f(types<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4), decltype(m5), decltype(m6), decltype(m7), decltype(m8), decltype(m9), decltype(m10), decltype(m11), decltype(m12), decltype(m13), decltype(m14), decltype(m15), decltype(m16), decltype(m17), decltype(m18), decltype(m19), decltype(m20)>{}, m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19, m20);
    } else if constexpr (N == 22) {
        auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19, m20, m21] = t;
        return f(types<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4), decltype(m5), decltype(m6), decltype(m7), decltype(m8), decltype(m9), decltype(m10), decltype(m11), decltype(m12), decltype(m13), decltype(m14), decltype(m15), decltype(m16), decltype(m17), decltype(m18), decltype(m19), decltype(m20), decltype(m21)>{}, m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19, m20, m21);
    } else if constexpr (N == 23) {
        auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19, m20, m21, m22] = t;
        return f(types<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4), decltype(m5), decltype(m6), decltype(m7), decltype(m8), decltype(m9), decltype(m10), decltype(m11), decltype(m12), decltype(m13), decltype(m14), decltype(m15), decltype(m16), decltype(m17), decltype(m18), decltype(m19), decltype(m20), decltype(m21), decltype(m22)>{}, m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19, m20, m21, m22);
    } else if constexpr (N == 24) {
        auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19, m20, m21, m22, m23] = t;
        return f(types<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4), decltype(m5), decltype(m6), decltype(m7), decltype(m8), decltype(m9), decltype(m10), decltype(m11), decltype(m12), decltype(m13), decltype(m14), decltype(m15), decltype(m16), decltype(m17), decltype(m18), decltype(m19), decltype(m20), decltype(m21), decltype(m22), decltype(m23)>{}, m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19, m20, m21, m22, m23);
    } else if constexpr (N == 25) {
        auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19, m20, m21, m22, m23, m24] = t;
        return f(types<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4), decltype(m5), decltype(m6), decltype(m7), decltype(m8), decltype(m9), decltype(m10), decltype(m11), decltype(m12), decltype(m13), decltype(m14), decltype(m15), decltype(m16), decltype(m17), decltype(m18), decltype(m19), decltype(m20), decltype(m21), decltype(m22), decltype(m23), decltype(m24)>{}, m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19, m20, m21, m22, m23, m24);
    } else if constexpr (N == 26) {
        auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19, m20, m21, m22, m23, m24, m25] = t;
        return f(types<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4), decltype(m5), decltype(m6), decltype(m7), decltype(m8), decltype(m9), decltype(m10), decltype(m11), decltype(m12), decltype(m13), decltype(m14), decltype(m15), decltype(m16), decltype(m17), decltype(m18), decltype(m19), decltype(m20), decltype(m21), decltype(m22), decltype(m23), decltype(m24), decltype(m25)>{}, m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19, m20, m21, m22, m23, m24, m25);
    } else if constexpr (N == 27) {
        auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19, m20, m21, m22, m23, m24, m25, m26] = t;
        return f(types<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4), decltype(m5), decltype(m6), decltype(m7), decltype(m8), decltype(m9), decltype(m10), decltype(m11), decltype(m12), decltype(m13), decltype(m14), decltype(m15), decltype(m16), decltype(m17), decltype(m18), decltype(m19), decltype(m20), decltype(m21), decltype(m22), decltype(m23), decltype(m24), decltype(m25), decltype(m26)>{}, m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19, m20, m21, m22, m23, m24, m25, m26);
    } else if constexpr (N == 28) {
        auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19, m20, m21, m22, m23, m24, m25, m26, m27] = t;
        return f(types<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4), decltype(m5), decltype(m6), decltype(m7), decltype(m8), decltype(m9), decltype(m10), decltype(m11), decltype(m12), decltype(m13), decltype(m14), decltype(m15), decltype(m16), decltype(m17), decltype(m18), decltype(m19), decltype(m20), decltype(m21), decltype(m22), decltype(m23), decltype(m24), decltype(m25), decltype(m26), decltype(m27)>{}, m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19, m20, m21, m22, m23, m24, m25, m26, m27);
    } else if constexpr (N == 29) {
        auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19, m20, m21, m22, m23, m24, m25, m26, m27, m28] = t;
        return f(types<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4), decltype(m5), decltype(m6), decltype(m7), decltype(m8), decltype(m9), decltype(m10), decltype(m11), decltype(m12), decltype(m13), decltype(m14), decltype(m15), decltype(m16), decltype(m17), decltype(m18), decltype(m19), decltype(m20), decltype(m21), decltype(m22), decltype(m23), decltype(m24), decltype(m25), decltype(m26), decltype(m27), decltype(m28)>{}, m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19, m20, m21, m22, m23, m24, m25, m26, m27, m28);
    } else if constexpr (N == 30) {
        auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19, m20, m21, m22, m23, m24, m25, m26, m27, m28, m29] = t;
        return f(types<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4), decltype(m5), decltype(m6), decltype(m7), decltype(m8), decltype(m9), decltype(m10), decltype(m11), decltype(m12), decltype(m13), decltype(m14), decltype(m15), decltype(m16), decltype(m17), decltype(m18), decltype(m19), decltype(m20), decltype(m21), decltype(m22), decltype(m23), decltype(m24), decltype(m25), decltype(m26), decltype(m27), decltype(m28), decltype(m29)>{}, m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19, m20, m21, m22, m23, m24, m25, m26, m27, m28, m29);
    } else if constexpr (N == 31) {
        auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19, m20, m21, m22, m23, m24, m25, m26, m27, m28, m29, m30] = t;
        return f(types<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4), decltype(m5), decltype(m6), decltype(m7), decltype(m8), decltype(m9), decltype(m10), decltype(m11), decltype(m12), decltype(m13), decltype(m14), decltype(m15), decltype(m16), decltype(m17), decltype(m18), decltype(m19), decltype(m20), decltype(m21), decltype(m22), decltype(m23), decltype(m24), decltype(m25), decltype(m26), decltype(m27), decltype(m28), decltype(m29), decltype(m30)>{}, m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19, m20, m21, m22, m23, m24, m25, m26, m27, m28, m29, m30);
    } else if constexpr (N == 32) {
        auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19, m20, m21, m22, m23, m24, m25, m26, m27, m28, m29, m30, m31] = t;
        return f(types<decltype(m0), decltype(m1), decltype(m2), decltype(m3), decltype(m4), decltype(m5), decltype(m6), decltype(m7), decltype(m8), decltype(m9), decltype(m10), decltype(m11), decltype(m12), decltype(m13), decltype(m14), decltype(m15), decltype(m16), decltype(m17), decltype(m18), decltype(m19), decltype(m20), decltype(m21), decltype(m22), decltype(m23), decltype(m24), decltype(m25), decltype(m26), decltype(m27), decltype(m28), decltype(m29), decltype(m30), decltype(m31)>{}, m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19, m20, m21, m22, m23, m24, m25, m26, m27, m28, m29, m30, m31);
    } else {
        static_assert(N <= max_aggregate_fields, "crew: too many members to list");
    }
}

/// The declared types of T's members, cv-qualifiers removed (references kept).
template <class T>
auto field_types_of(const T& t) {
    return with_fields<field_count<T>>(t, []<class... Ms>(types<Ms...>, const auto&...) {
        return types<std::remove_cv_t<Ms>...>{};
    });
}
template <class T>
using field_types = decltype(field_types_of(std::declval<const T&>()));

}  // namespace crew::detail
