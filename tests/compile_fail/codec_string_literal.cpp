// expect: string literal or char array cannot be sent to another process as it is; for text pass std::string
// A string literal given straight to the codec is a char array: the message
// says to pass std::string.
#include <crew/codec.hpp>

int main() {
    auto bytes = crew::encode("hello");
    return static_cast<int>(bytes.size());
}
