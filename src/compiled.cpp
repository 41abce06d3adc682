// The one translation unit of crew::compiled (CMake): the default executors,
// compiled once for every file of a program built with
// CREW_SEPARATE_COMPILATION. See <crew/compiled.hpp>.
#include <crew/compiled.hpp>
