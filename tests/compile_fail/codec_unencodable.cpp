// expect: cannot be encoded by crew::Codec
// A struct holding a std::unique_ptr has no Codec: encoding it must not compile,
// and the message must tell the user to specialise crew::Codec.
#include <crew/codec.hpp>

#include <memory>

struct Holder {
    std::unique_ptr<int> p;
};

int main() {
    Holder h;
    auto bytes = crew::encode(h);
    return static_cast<int>(bytes.size());
}
