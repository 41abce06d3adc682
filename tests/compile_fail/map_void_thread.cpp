// expect: crew::map: the function must return a value; use post\(\) or submit\(\) for functions that return void
// map() with a function that returns void: the static_assert is the first
// error, not the last of a page of "forming reference to void".
#include <crew/thread_executor.hpp>

#include <vector>

void touch(int) {}

int main() {
    crew::ThreadExecutor<> ex(1);
    std::vector<int> inputs{1, 2, 3};
    auto out = ex.map(&touch, inputs);
    return static_cast<int>(out.size());
}
