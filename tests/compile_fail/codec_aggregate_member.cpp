// expect: this aggregate \(plain struct\) cannot be encoded by crew::Codec because a member is not encodable
// A plain struct is encoded member by member; one member that cannot be
// (here a raw pointer) fails with a message that says so, naming the struct
// and the member's type in the instantiation.
#include <crew/codec.hpp>

#include <string>
#include <vector>

struct Job {
    std::string name;
    std::vector<int> data;
    int* scratch;
};

int main() {
    auto bytes = crew::encode(Job{});
    return static_cast<int>(bytes.size());
}
