# Compiles SOURCE and succeeds only when the compiler rejects it with an error
# matching the regex on the file's first line: `// expect: <regex>`.
file(STRINGS ${SOURCE} first_line LIMIT_COUNT 1)
string(REGEX REPLACE "^// expect: " "" expected "${first_line}")
set(include_args -I${INCLUDE_DIR})
if(BOOST_INCLUDE_DIR)
  list(APPEND include_args -I${BOOST_INCLUDE_DIR})
endif()
execute_process(
  COMMAND ${COMPILER} -std=c++20 -fsyntax-only ${include_args} ${SOURCE}
  RESULT_VARIABLE result OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(result EQUAL 0)
  message(FATAL_ERROR "${SOURCE} compiled, but it must be rejected with: ${expected}")
endif()
if(NOT "${out}${err}" MATCHES "${expected}")
  message(FATAL_ERROR "${SOURCE} was rejected, but without the message '${expected}':\n${err}")
endif()
message(STATUS "rejected as expected: ${expected}")
