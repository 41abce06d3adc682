// One task on a ProcessExecutor with its default channel, through
// <crew/process_executor.hpp> alone.
#include <crew/process_executor.hpp>

int zero() { return 0; }

int main(int argc, char** argv) {
    crew::Session session(argc, argv);
    crew::ProcessExecutor<> ex(1);
    return ex.submit(&zero).get();
}
