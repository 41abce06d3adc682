# Strict header check: every header under include/crew compiles on its own,
# with each compiler given, under the strictest warning set we hold crew to:
#
#   -std=c++20 -Wall -Wextra -Wpedantic -Wshadow -Wconversion
#   -Wsign-conversion -Wold-style-cast -Werror
#
# and so does every tests/headers_strict/*.cpp, which instantiate the common
# templates (warnings inside a template only appear once it is instantiated).
# Third-party headers (Boost, MPI) are included as system headers, so only
# crew's own code is judged.
#
# Arguments (-D; lists separated by '|' or ';'): COMPILERS, SOURCE_DIR (the
# project root), WORK (scratch dir), BOOST_INCLUDE_DIR, MPI_INCLUDE_DIRS (when
# empty the MPI headers are skipped).
#
# Usage: cmake "-DCOMPILERS=g++|clang++" -DSOURCE_DIR=. -DWORK=/tmp/x -P tests/headers_strict/check.cmake

cmake_minimum_required(VERSION 3.20)

# Headers that still warn, each fixed by its owner; the lead shrinks this list.
# A header listed here is still compiled alone (it must compile), only without
# -Werror, and its warnings are printed.
set(KNOWN_TO_WARN
)

set(FLAGS -std=c++20 -fsyntax-only -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wsign-conversion
          -Wold-style-cast)

foreach(var IN ITEMS COMPILERS BOOST_INCLUDE_DIR MPI_INCLUDE_DIRS)
  string(REPLACE "|" ";" ${var} "${${var}}")
endforeach()

if(NOT SOURCE_DIR OR NOT COMPILERS)
  message(FATAL_ERROR "usage: cmake -DCOMPILERS=<c++;...> -DSOURCE_DIR=<root> [-DWORK=dir] -P check.cmake")
endif()
if(NOT WORK)
  set(WORK ${CMAKE_CURRENT_BINARY_DIR}/headers_strict)
endif()
file(MAKE_DIRECTORY ${WORK})

set(include_args -I${SOURCE_DIR}/include)
foreach(dir IN LISTS BOOST_INCLUDE_DIR MPI_INCLUDE_DIRS)
  # The compiler's default directories stay as they are: -isystem /usr/include
  # would break libstdc++'s #include_next.
  if(dir AND NOT dir MATCHES "^/usr(/local)?/include/?$")
    list(APPEND include_args -isystem ${dir})
  endif()
endforeach()
if(MPI_INCLUDE_DIRS)
  list(APPEND include_args -DOMPI_SKIP_MPICXX=1 -DMPICH_SKIP_MPICXX=1)  # as crew::mpi does
endif()

file(GLOB_RECURSE headers RELATIVE ${SOURCE_DIR}/include ${SOURCE_DIR}/include/crew/*.hpp)
list(SORT headers)
file(GLOB instantiations ${SOURCE_DIR}/tests/headers_strict/*.cpp)

set(failures)
set(checked 0)
foreach(compiler IN LISTS COMPILERS)
  get_filename_component(cname ${compiler} NAME)
  foreach(header IN LISTS headers)
    if(NOT MPI_INCLUDE_DIRS AND header MATCHES "(^crew/mpi\\.hpp$|/mpi_)")
      continue()  # needs <mpi.h>
    endif()
    string(MAKE_C_IDENTIFIER ${header} id)
    set(tu ${WORK}/${id}.cpp)
    file(WRITE ${tu} "#include <${header}>\n#include <${header}>\n")
    set(werror -Werror)
    if(header IN_LIST KNOWN_TO_WARN)
      set(werror)
    endif()
    execute_process(COMMAND ${compiler} ${FLAGS} ${werror} ${include_args} ${tu}
                    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
    math(EXPR checked "${checked} + 1")
    if(NOT rc EQUAL 0)
      list(APPEND failures "${cname}: ${header}")
      message("---- ${cname}: ${header}\n${out}${err}")
    elseif(NOT werror AND err)
      message("---- ${cname}: ${header} (known to warn; its owner fixes it)\n${err}")
    endif()
  endforeach()
  foreach(src IN LISTS instantiations)
    execute_process(COMMAND ${compiler} ${FLAGS} -Werror ${include_args} ${src}
                    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
    math(EXPR checked "${checked} + 1")
    if(NOT rc EQUAL 0)
      get_filename_component(name ${src} NAME)
      list(APPEND failures "${cname}: tests/headers_strict/${name}")
      message("---- ${cname}: tests/headers_strict/${name}\n${out}${err}")
    endif()
  endforeach()
endforeach()

if(failures)
  list(JOIN failures "\n  " text)
  message(FATAL_ERROR "strict header check: these do not compile warning-free:\n  ${text}\n"
                      "Fix the warning (see above), or, for a header you do not own, add it to KNOWN_TO_WARN in "
                      "tests/headers_strict/check.cmake and tell its owner.")
endif()
message(STATUS "strict header check: ${checked} compilations warning-free (${COMPILERS})")
