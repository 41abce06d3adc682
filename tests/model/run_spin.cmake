# Model-checks a Promela model with spin, exhaustively: generates the
# verifier (spin -a), compiles pan.c with the C compiler and runs it; an
# assertion violation, an invalid end state (deadlock) or a search cut short
# (depth or memory bound) fails.
#   cmake -DSPIN=spin -DCC=cc -DMODEL=.../lock_free_queue.pml -DWORK=... -P run_spin.cmake
#         [-DVARIANTS=default,TRY_POP_CONSUMERS]
# VARIANTS: the harnesses to check, comma-separated; each but "default" is a
# macro passed to spin's preprocessor (spin -D<name>). The default is the
# two harnesses of tests/model/lock_free_queue.pml. Spin runs its own
# preprocessor (gcc -E), so gcc must be on PATH whatever CC is.
# pan is built with -DSAFETY (assertions and end states only, no cycle
# checks) and -DCOLLAPSE (compressed state storage; still exhaustive, no
# bitstate hashing), and bounded to 2 GiB (-DMEMLIM=2048).
if(NOT DEFINED VARIANTS)
  set(VARIANTS "default,TRY_POP_CONSUMERS")
endif()
string(REPLACE "," ";" variants "${VARIANTS}")
get_filename_component(name ${MODEL} NAME)
file(REMOVE_RECURSE ${WORK})
foreach(variant IN LISTS variants)
  set(dir ${WORK}/${variant})
  # spin works on a copy beside pan, so that pan's trail (<model>.trail)
  # lies next to the model for replay.
  file(COPY ${MODEL} DESTINATION ${dir})
  set(defines)
  if(NOT variant STREQUAL "default")
    set(defines -D${variant})
  endif()
  execute_process(
    COMMAND ${SPIN} ${defines} -a ${name}
    WORKING_DIRECTORY ${dir}
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0 OR NOT EXISTS ${dir}/pan.c)
    message(FATAL_ERROR "spin -a ${MODEL} (${variant}) failed:\n${out}")
  endif()
  execute_process(
    COMMAND ${CC} -O2 -w -DSAFETY -DCOLLAPSE -DMEMLIM=2048 -o pan pan.c
    WORKING_DIRECTORY ${dir}
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "compiling spin's verifier (${variant}) failed:\n${out}")
  endif()
  execute_process(
    COMMAND ${dir}/pan -m100000
    WORKING_DIRECTORY ${dir}
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  string(REGEX MATCH "errors: ([0-9]+)" errors "${out}")
  if(NOT rc EQUAL 0 OR NOT errors OR NOT CMAKE_MATCH_1 EQUAL 0
     OR out MATCHES "pan:[0-9]+:|assertion violated|invalid end state[^s]|too small|not completed|out of memory|reached -DMEMLIM")
    message(FATAL_ERROR "spin found an error in ${MODEL} (${variant}); "
      "replay the trail with: cd ${dir} && ${SPIN} ${defines} -t -p ${name}\n${out}")
  endif()
  string(REGEX MATCH "[0-9]+ states, stored" stored "${out}")
  string(REGEX MATCH "elapsed time [0-9.e+-]+ seconds" elapsed "${out}")
  message(STATUS "${variant}: errors: 0, ${stored}, ${elapsed}")
endforeach()
