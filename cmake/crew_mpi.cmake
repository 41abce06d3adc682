# crew::mpi — crew plus MPI's C API, for <crew/mpi.hpp> (crew::MpiExecutor).
# Defined when an MPI installation is found (Debian: openmpi-bin and
# libopenmpi-dev); <crew/crew.hpp> never needs it. MPI is found through the
# C++ compiler (crew's project enables no C compiler), with the old MPI-2 C++
# bindings switched off: crew uses the C API, and those headers do not build
# with -Wextra -Werror.
if(NOT DEFINED MPI_CXX_SKIP_MPICXX)
  set(MPI_CXX_SKIP_MPICXX TRUE)
endif()
find_package(MPI QUIET COMPONENTS CXX)
if(MPI_CXX_FOUND AND NOT TARGET crew_mpi)
  add_library(crew_mpi INTERFACE)
  add_library(crew::mpi ALIAS crew_mpi)
  target_link_libraries(crew_mpi INTERFACE crew::crew MPI::MPI_CXX)
  target_compile_definitions(crew_mpi INTERFACE OMPI_SKIP_MPICXX=1 MPICH_SKIP_MPICXX=1)
endif()
