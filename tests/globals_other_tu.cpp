// A second translation unit of process_executor_test: its global, with a
// dynamic initialiser, must be constructed in spawned and fork-server
// workers too (they serve from crew::Session in main, after all static
// initialisation).
#include <cstddef>
#include <map>

#include <crew/crew.hpp>

namespace {
std::map<int, int> make_table() {
    std::map<int, int> t;
    for (int i = 0; i < 256; ++i) t[i] = i * i;
    return t;
}
const std::map<int, int> other_tu_table = make_table();
}  // namespace

std::size_t crew_test_other_tu_table_size() { return other_tu_table.size(); }
