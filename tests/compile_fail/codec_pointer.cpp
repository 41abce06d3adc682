// expect: a pointer cannot be encoded by crew::Codec
// An address means nothing in another process: encoding an int* must not compile.
#include <crew/codec.hpp>

int main() {
    int x = 0;
    auto bytes = crew::encode(&x);
    return static_cast<int>(bytes.size());
}
