// crew/compiled.hpp — the part of crew that can be compiled once: the default
// executors, ThreadExecutor<> and ProcessExecutor<>, explicitly instantiated.
//
// When: a program of several files, or one rebuilt often. Define
// CREW_SEPARATE_COMPILATION in every translation unit (CMake: link
// crew::compiled instead of crew::crew, which does both), and include this
// header in exactly one .cpp of the program. The other files then declare
// these executors `extern template` and stop compiling their code: a file
// that runs a task on ThreadExecutor<> compiles in about 70% of the time, one
// on ProcessExecutor<> in about half (g++ -O2; docs/benchmarks.md, session
// 11). Cost: this file takes about as long as one ProcessExecutor<> user
// (5 s), once per program; calls into the executors' members are not inlined
// into your files; other policies and channels stay header-only. Forgetting
// this file is a link error naming the executors' members. Every file must
// be built with the same compiler and flags, as for any library.
#pragma once

#include <crew/process_executor.hpp>
#include <crew/thread_executor.hpp>

namespace crew {
namespace detail {
template class ExecutorCore<sync::LockFree>;
}  // namespace detail
template class ThreadExecutor<sync::LockFree>;
template class ProcessExecutor<ipc::SharedMemory, sync::LockFree>;
}  // namespace crew
