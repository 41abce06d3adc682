// expect: crew::Codec: a pointer \(const char\*\) cannot be sent to another process; for text pass std::string
// Issue 15: a const char* (what a string literal becomes as an argument) must
// say to pass std::string, not just that pointers cannot be encoded.
#include <crew/codec.hpp>

int main() {
    const char* text = "hello";
    auto bytes = crew::encode(text);
    return static_cast<int>(bytes.size());
}
