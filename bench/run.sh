#!/usr/bin/env bash
# Configures a Release build of crew's benchmarks in build-bench/, builds them,
# prints the machine, then runs them all. Arguments (--reps=N, --scale=X) go
# to every benchmark; WORKERS=N sets the thread-pool size (default 2);
# BENCH=thread_pool|queue|process|shared_array runs one; PYTHON names the python3 that
# runs the Python multiprocessing peers (default: python3 from PATH; the blur
# rows need numpy).
#
#   bench/run.sh                 # the full run documented in docs/benchmarks.md
#   bench/run.sh --reps=3 --scale=0.1   # a quick look
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$root/build-bench"

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DCREW_BUILD_BENCHMARKS=ON \
      -DCREW_BUILD_TESTS=OFF -DCREW_BUILD_EXAMPLES=OFF >/dev/null
cmake --build "$build" --target bench_thread_pool bench_queue bench_process bench_shared_array -j "$(nproc)" >/dev/null

echo "# crew benchmarks, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo
echo "- CPUs (nproc): $(nproc)"
echo "- CPU model: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "- compiler: $(${CXX:-g++} --version | head -n1), -O2 -DNDEBUG"
echo "- kernel: $(uname -sr)"
echo "- load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- python: $(${PYTHON:-python3} --version 2>&1)"
echo
for bench in ${BENCH:-thread_pool queue process shared_array}; do
  case "$bench" in
    thread_pool) "$build/bench/bench_thread_pool" --workers="${WORKERS:-2}" "$@" ;;
    process|shared_array) "$build/bench/bench_$bench" --python="${PYTHON:-python3}" "$@" ;;
    *) "$build/bench/bench_$bench" "$@" ;;
  esac
  echo
done
