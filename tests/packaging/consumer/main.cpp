// Uses crew as an outside project would: threads and processes, one job.
#include <cstdio>
#include <vector>

#include <crew/crew.hpp>

int square(int x) { return x * x; }

template <crew::executor Ex>
int sum_of_squares(Ex& ex) {
    int total = 0;
    for (int r : ex.map(square, std::vector<int>{1, 2, 3, 4})) total += r;
    // imap over a container: also with clang 14 + libstdc++ 12 (no views there).
    const std::vector<int> more{5, 6};
    for (int r : ex.imap(square, more)) total += r;
    return total;
}

int main(int argc, char** argv) {
    crew::Session session(argc, argv);  // first: spawned workers serve from here
    crew::ThreadExecutor<> threads(2);
    crew::ProcessExecutor<> processes(2);
    const int a = sum_of_squares(threads), b = sum_of_squares(processes);
    std::printf("threads %d, processes %d\n", a, b);
    return a == 91 && b == 91 ? 0 : 1;
}
