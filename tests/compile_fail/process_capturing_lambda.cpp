// expect: captures state, which cannot be sent to another process
#include <crew/crew.hpp>

int main() {
    crew::ProcessExecutor<crew::ipc::Pipe> ex(1);
    int state = 3;
    return ex.submit([state] { return state; }).get();
}
