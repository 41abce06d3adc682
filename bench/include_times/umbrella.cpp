// One task on a ThreadExecutor and one on a ProcessExecutor<>, through the
// umbrella <crew/crew.hpp>.
#include <crew/crew.hpp>

int zero() { return 0; }

int main(int argc, char** argv) {
    crew::Session session(argc, argv);
    crew::ThreadExecutor<> threads(1);
    crew::ProcessExecutor<> processes(1);
    return threads.submit(&zero).get() + processes.submit(&zero).get();
}
