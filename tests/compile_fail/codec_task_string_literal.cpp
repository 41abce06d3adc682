// expect: crew::Codec: a pointer \(const char\*\) cannot be sent to another process; for text pass std::string
// Issue 15: a string literal passed where a process task takes std::string
// decays to const char*; the error tells the user to pass std::string.
#include <crew/crew.hpp>

#include <string>

std::size_t length(std::string s) { return s.size(); }

int main() {
    crew::ProcessExecutor<crew::ipc::Pipe> ex(1);
    return static_cast<int>(ex.submit(&length, "hello").get());
}
