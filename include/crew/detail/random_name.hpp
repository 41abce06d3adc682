// crew/detail/random_name.hpp — unguessable names and nonces: bytes from
// getrandom(), as hex. Used for the names of MessageQueue's and SharedRegion's
// objects in /dev/shm and for the spawn bootstrap's nonce, where a name a
// stranger could predict would let them open (or pre-create) the object.
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <string>
#include <string_view>

#include <sys/random.h>
#include <unistd.h>

#include <crew/errors.hpp>

namespace crew::detail {

/// Fills `out` with `n` bytes from getrandom(); throws `E` (a crew::Error),
/// saying what the bytes were for, when the system has no random source.
template <class E = Error>
void random_bytes(unsigned char* out, std::size_t n, std::string_view purpose = "random bytes") {
    std::size_t got = 0;
    while (got < n) {
        const ssize_t r = ::getrandom(out + got, n - got, 0);
        if (r < 0) {
            if (errno == EINTR) continue;
            throw E("crew: cannot make " + std::string(purpose) + ": getrandom() failed: " + std::strerror(errno) +
                    "; the system has no random source available");
        }
        got += static_cast<std::size_t>(r);
    }
}

/// `n` bytes as 2n lower-case hex digits.
inline std::string to_hex(const unsigned char* bytes, std::size_t n) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string text;
    text.reserve(2 * n);
    for (std::size_t i = 0; i < n; ++i) {
        text += digits[bytes[i] >> 4];
        text += digits[bytes[i] & 0xf];
    }
    return text;
}

/// "<prefix><pid>-<32 hex digits>": unique on this machine (the pid) and
/// unguessable (128 random bits).
template <class E = Error>
std::string unique_name(std::string_view prefix, std::string_view purpose) {
    unsigned char random[16];
    random_bytes<E>(random, sizeof random, purpose);
    return std::string(prefix) + std::to_string(::getpid()) + "-" + to_hex(random, sizeof random);
}

}  // namespace crew::detail
