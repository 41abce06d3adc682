#!/usr/bin/env bash
# Builds and runs crew-compare, the threads-vs-processes showcase, on this machine.
#   scripts/compare.sh [crew-compare options, e.g. --quick]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
crew_require_packages g++ cmake make libboost-dev catch2
cmake --preset default -DCREW_BUILD_TESTS=OFF >/dev/null
cmake --build --preset default -j "$(crew_jobs)" --target crew-compare
exec build/default/examples/crew-compare "$@"
