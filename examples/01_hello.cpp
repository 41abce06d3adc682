// 01_hello: the same code on threads and on processes.
//
// What it teaches: crew's two executors share one interface (the
// crew::executor concept), so a function written once runs on a pool of
// threads or on a pool of worker processes; only a template argument changes.
//
// What to look for in the output: the greetings are identical on both, but
// the process id the tasks report is this program's own on threads and a
// different one (a worker process) on processes.
#include <cstdio>
#include <string>
#include <vector>

#include <unistd.h>

#include <crew/crew.hpp>

namespace {

// Tasks for a ProcessExecutor must be plain functions (or lambdas that capture
// nothing): the worker is another program, it can only be told *which*
// function to call and with which (encoded) arguments.
std::string greet(int id) { return "hello from task " + std::to_string(id); }

int where_am_i() { return static_cast<int>(::getpid()); }

// Written once, against the concept: any crew::executor will do.
template <crew::executor Ex>
std::vector<std::string> say_hello(Ex& ex, const char* label) {
    std::vector<crew::Future<std::string>> futures;
    for (int id = 0; id < 4; ++id) futures.push_back(ex.submit(greet, id));

    std::vector<std::string> greetings;
    for (auto& f : futures) greetings.push_back(f.get());  // get() waits for the result

    std::printf("%s (main is pid %d, a task ran in pid %d):\n", label, static_cast<int>(::getpid()),
                ex.submit(where_am_i).get());
    for (const auto& g : greetings) std::printf("  %s\n", g.c_str());
    return greetings;
}

}  // namespace

int main(int argc, char** argv) {
    crew::Session session(argc, argv);  // first: spawned workers serve from here
    std::vector<std::string> on_threads, on_processes;
    {
        crew::ThreadExecutor<> threads(2);  // two worker threads in this process
        on_threads = say_hello(threads, "threads");
    }  // the destructor finishes queued work and joins the threads
    {
        // Two worker processes: fresh copies of this program, started now.
        crew::ProcessExecutor<> processes(2);
        on_processes = say_hello(processes, "processes");
    }  // the destructor stops and reaps the workers

    if (on_threads != on_processes) {
        std::fprintf(stderr, "FAIL: threads and processes gave different results\n");
        return 1;
    }
    std::printf("threads and processes agree: %zu identical greetings\n", on_threads.size());
    return 0;
}
