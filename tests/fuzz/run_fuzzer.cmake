# Builds one libFuzzer target with clang and runs it for a bounded time from
# a copy of its committed seed corpus; a crash (or a sanitizer report) fails.
#   cmake -DCXX=clang++ -DSOURCE=... -DCORPUS=... -DINCLUDE_DIR=... -DWORK=... -DSECONDS=30
#         [-DEXTRA_INCLUDE_DIRS="dir;..."] [-DLINK_FLAGS="-pthread -lrt"] -P run_fuzzer.cmake
# EXTRA_INCLUDE_DIRS (e.g. Boost's, for the MessageQueue target) and
# LINK_FLAGS (a space-separated command-line fragment) are optional.
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK}/corpus)
file(GLOB seeds ${CORPUS}/*)
file(COPY ${seeds} DESTINATION ${WORK}/corpus)
set(includes -I${INCLUDE_DIR})
foreach(dir IN LISTS EXTRA_INCLUDE_DIRS)
  list(APPEND includes -I${dir})
endforeach()
separate_arguments(link_flags UNIX_COMMAND "${LINK_FLAGS}")
execute_process(
  COMMAND ${CXX} -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
          ${includes} ${SOURCE} -o ${WORK}/fuzzer ${link_flags}
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "building the fuzzer failed:\n${out}")
endif()
execute_process(
  COMMAND ${WORK}/fuzzer -max_total_time=${SECONDS} -seed=20261122 -rss_limit_mb=2048 -timeout=10
          -artifact_prefix=${WORK}/ ${WORK}/corpus
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the fuzzer found a failure (artifacts in ${WORK}):\n${out}")
endif()
string(REGEX MATCH "Done [0-9]+ runs in [0-9]+ second" done "${out}")
message(STATUS "${done}")
