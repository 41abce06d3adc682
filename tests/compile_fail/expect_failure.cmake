# Compiles SOURCE and succeeds only when the compiler rejects it and its first
# error matches the regex on the file's first line: `// expect: <regex>`
# (the message a user reads first must be the clear one).
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
string(REGEX MATCH "[^\n]*error:[^\n]*" first_error "${out}${err}")
if(NOT first_error MATCHES "${expected}")
  message(FATAL_ERROR "${SOURCE} was rejected, but its first error is not '${expected}':\n${first_error}\n\n${err}")
endif()
message(STATUS "rejected as expected: ${expected}")
