// expect: cannot be encoded by crew::Codec without user code: it holds itself
// A struct that holds itself through a container cannot be checked member by
// member (its encodability would depend on itself): the message asks for a
// crew::Codec specialisation.
#include <crew/codec.hpp>

#include <vector>

struct Node {
    int value;
    std::vector<Node> kids;
};

int main() {
    auto bytes = crew::encode(Node{});
    return static_cast<int>(bytes.size());
}
