#!/usr/bin/env bash
# Builds and runs crew's whole test suite: a plain build, then under
# ThreadSanitizer, then under AddressSanitizer + UBSan.
#   scripts/test.sh                 all three
#   scripts/test.sh default|tsan|asan ...   only those
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
crew_require_packages g++ cmake make libboost-dev catch2 clang libclang-rt-14-dev valgrind spin gdb \
  openmpi-bin libopenmpi-dev python3-mpi4py

presets=("$@")
[ ${#presets[@]} -gt 0 ] || presets=(default tsan asan)
for preset in "${presets[@]}"; do
  echo "=== crew tests: $preset"
  cmake --preset "$preset" >/dev/null
  cmake --build --preset "$preset" -j "$(crew_jobs)"
  if [ "$preset" = tsan ]; then
    # TSan's shadow memory needs a fixed layout; recent kernels randomise
    # mmap too widely for GCC 12's runtime unless ASLR is off for the run.
    setarch "$(uname -m)" -R ctest --preset "$preset"
  else
    ctest --preset "$preset"
  fi
done
