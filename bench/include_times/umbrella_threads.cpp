// The program issue 15 timed: one task on a ThreadExecutor, through the
// umbrella <crew/crew.hpp>.
#include <crew/crew.hpp>

int main() {
    crew::ThreadExecutor<> ex(1);
    return ex.submit([] { return 0; }).get();
}
