// expect: crew::map: the function must return a value; use post\(\) or submit\(\) for functions that return void
// The same on processes: the static_assert comes first.
#include <crew/process_executor.hpp>

#include <vector>

void touch(int) {}

int main() {
    crew::ProcessExecutor<> ex(1);
    std::vector<int> inputs{1, 2, 3};
    auto out = ex.map(&touch, inputs);
    return static_cast<int>(out.size());
}
