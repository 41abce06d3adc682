# Builds and runs tests/packaging/consumer against crew, one of two ways:
#   cmake -DMODE=find_package -DCREW_BUILD_DIR=... -DCREW_SOURCE_DIR=... -DWORK=... -P check.cmake
#   cmake -DMODE=add_subdirectory -DCREW_SOURCE_DIR=... -DWORK=... [-DCXX=clang++] -P check.cmake
# find_package installs crew from CREW_BUILD_DIR into WORK/prefix first.
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})

function(run)
  execute_process(COMMAND ${ARGV} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGV}\n${out}")
  endif()
endfunction()

set(consumer ${CMAKE_CURRENT_LIST_DIR}/consumer)
if(MODE STREQUAL "find_package")
  run(${CMAKE_COMMAND} --install ${CREW_BUILD_DIR} --prefix ${WORK}/prefix)
  if(NOT EXISTS ${WORK}/prefix/include/crew/crew.hpp)
    message(FATAL_ERROR "the install did not put include/crew/crew.hpp under the prefix")
  endif()
  run(${CMAKE_COMMAND} -S ${consumer} -B ${WORK}/build -DCREW_USE=find_package
      -DCMAKE_PREFIX_PATH=${WORK}/prefix -DCMAKE_BUILD_TYPE=Release)
else()
  set(compiler)
  if(CXX)
    set(compiler -DCMAKE_CXX_COMPILER=${CXX})
  endif()
  run(${CMAKE_COMMAND} -S ${consumer} -B ${WORK}/build -DCREW_USE=add_subdirectory
      -DCREW_SOURCE_DIR=${CREW_SOURCE_DIR} -DCMAKE_BUILD_TYPE=Release ${compiler})
endif()
run(${CMAKE_COMMAND} --build ${WORK}/build)
run(${WORK}/build/consumer)
run(${WORK}/build/consumer_compiled)
file(REMOVE_RECURSE ${WORK})
message(STATUS "crew used through ${MODE}: built and ran")
