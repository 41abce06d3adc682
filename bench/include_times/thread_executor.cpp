// One task on a ThreadExecutor, through <crew/thread_executor.hpp> alone.
#include <crew/thread_executor.hpp>

int main() {
    crew::ThreadExecutor<> ex(1);
    return ex.submit([] { return 0; }).get();
}
