# Runs a subset of one Catch2 test binary under valgrind memcheck, worker
# processes included, and fails on any memcheck error in any of them.
#   cmake -DVALGRIND=valgrind -DBINARY=... -DFILTER="<Catch2 test spec>" -DWORK=...
#         -DSUPPRESSIONS=... -P run_memcheck.cmake
#
# Spawned workers (fork + exec of the test binary) are traced too
# (--trace-children=yes), each writing its own log; a definite leak or a
# memory error in any process fails the test (--error-exitcode only sees the
# parent, so every log's ERROR SUMMARY is read). Children made by fork()
# alone (Start::fork workers, a fork server's workers) are not reported
# (--child-silent-after-fork): they inherit the parent's heap, and whatever
# only another thread's stack pointed to reads as "definitely lost" there.
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})
string(TIMESTAMP start "%s")
set(ENV{CREW_TEST_CASE_TIMEOUT} 550)  # the test watchdog, for valgrind's pace
execute_process(
  COMMAND ${VALGRIND} --tool=memcheck --error-exitcode=1 --leak-check=full --show-leak-kinds=definite
          --errors-for-leak-kinds=definite --trace-children=yes --child-silent-after-fork=yes
          --suppressions=${SUPPRESSIONS} --log-file=${WORK}/memcheck.%p.log
          ${BINARY} ${FILTER}
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
string(TIMESTAMP end "%s")
math(EXPR seconds "${end} - ${start}")
file(GLOB logs ${WORK}/memcheck.*.log)
list(LENGTH logs processes)
set(reports "")
foreach(log IN LISTS logs)
  file(READ ${log} text)
  if(text MATCHES "ERROR SUMMARY: [1-9]")
    string(APPEND reports "\n--- ${log}\n${text}")
  endif()
endforeach()
if(NOT rc EQUAL 0 OR NOT reports STREQUAL "")
  message(FATAL_ERROR "memcheck failed (exit code ${rc}; logs in ${WORK}):\n${out}${reports}")
endif()
message(STATUS "memcheck: ${processes} processes, no error, ${seconds} s")
