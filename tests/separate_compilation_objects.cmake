# With CREW_SEPARATE_COMPILATION, a file that uses the default executors must
# not compile their members (that is the time it saves), and crew::compiled's
# library must define them (or programs would not link).
#   cmake -DNM=nm -DOBJECTS=a.o;b.o -DLIBRARY=libcrew_compiled.a -P separate_compilation_objects.cmake
set(members
  "crew::ThreadExecutor<crew::sync::LockFree>::work("
  "crew::detail::ExecutorCore<crew::sync::LockFree>::close("
  "crew::ProcessExecutor<crew::ipc::BasicSharedMemory<crew::sync::LockFree>, crew::sync::LockFree>::dispatch(")

# Whether nm's output defines the function that `member` opens: its line reads
# "<address> <type> <member>...", where another symbol only names it later on.
function(defines symbols member out)
  set(found FALSE)
  foreach(type IN ITEMS T t W w)
    string(FIND "${symbols}" " ${type} ${member}" at)
    if(NOT at EQUAL -1)
      set(found TRUE)
    endif()
  endforeach()
  set(${out} ${found} PARENT_SCOPE)
endfunction()

function(defined_symbols file out)
  execute_process(COMMAND ${NM} -C --defined-only ${file} RESULT_VARIABLE rc OUTPUT_VARIABLE symbols ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${NM} failed on ${file}: ${err}")
  endif()
  set(${out} "${symbols}" PARENT_SCOPE)
endfunction()

defined_symbols(${LIBRARY} library_symbols)
foreach(member IN LISTS members)
  defines("${library_symbols}" "${member}" found)
  if(NOT found)
    message(FATAL_ERROR "crew::compiled does not define ${member}...")
  endif()
endforeach()

set(checked 0)
foreach(object IN LISTS OBJECTS)
  if(NOT object MATCHES "separate_compilation_test")
    continue()
  endif()
  defined_symbols(${object} object_symbols)
  foreach(member IN LISTS members)
    defines("${object_symbols}" "${member}" found)
    if(found)
      message(FATAL_ERROR "${object} compiled ${member}...: CREW_SEPARATE_COMPILATION did not keep it out")
    endif()
  endforeach()
  math(EXPR checked "${checked} + 1")
endforeach()
if(checked EQUAL 0)
  message(FATAL_ERROR "no object of separate_compilation_test among: ${OBJECTS}")
endif()
message(STATUS "the default executors are compiled once, in ${LIBRARY}")
