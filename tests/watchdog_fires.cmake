# Runs the hidden case of watchdog_test that hangs, with a 1 s watchdog, and
# succeeds only when the watchdog aborted it naming the case. (CTest counts a
# test killed by a signal as failed whatever its output, so the check is here.)
#   cmake -DBINARY=<watchdog_test> -P watchdog_fires.cmake
set(ENV{CREW_TEST_CASE_TIMEOUT} 1)
execute_process(COMMAND ${BINARY} "[.watchdog]" RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out
                TIMEOUT 100)
set(expected "crew test watchdog: test case \"a case that hangs\" still runs after 1 s")
if(rc EQUAL 0 OR NOT out MATCHES "${expected}")
  message(FATAL_ERROR "the watchdog did not stop the hanging case (exit: ${rc}):\n${out}")
endif()
message(STATUS "the watchdog stopped the hanging case (exit: ${rc})")
