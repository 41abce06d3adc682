#!/usr/bin/env bash
# What including crew costs a user: CPU seconds (user + sys) that g++ -O2
# takes to compile each program of bench/include_times/ (a main that runs one
# task), best of REPS (default 3), next to the target of issue 15. Each
# program twice: header-only (crew::crew), and with CREW_SEPARATE_COMPILATION
# (crew::compiled), where the default executors come compiled from
# <crew/compiled.hpp>; that file's own time, paid once per program, is the
# last row. CPU time, not wall time, so a busy machine disturbs it less;
# still compare on a quiet one.
#
#   bench/include_times.sh            # CXX=clang++ bench/include_times.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cxx="${CXX:-g++}"
reps="${REPS:-3}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

# best_of FILE FLAGS...: the least CPU time of $reps compilations of FILE.
best_of() {
  local file="$1" best="" seconds
  shift
  for _ in $(seq "$reps"); do
    TIMEFORMAT="%U %S"
    { time "$cxx" -std=c++20 -O2 -I"$root/include" "$@" -c "$file" -o "$out/program.o"; } 2>"$out/time"
    seconds=$(awk '{printf "%.2f", $1 + $2}' "$out/time")
    if [ -z "$best" ] || awk -v a="$seconds" -v b="$best" 'BEGIN { exit !(a < b) }'; then best=$seconds; fi
  done
  echo "$best"
}

echo "# include times, $($cxx --version | head -n1), -std=c++20 -O2, best of $reps"
echo
echo "| program | includes | header-only CPU s | compiled once CPU s | target s |"
echo "| --- | --- | ---: | ---: | ---: |"
for entry in "thread_executor:<crew/thread_executor.hpp>:1.2" "process_executor:<crew/process_executor.hpp>:3" \
             "umbrella_threads:<crew/crew.hpp>:4" "umbrella:<crew/crew.hpp>:4"; do
  IFS=: read -r name header target <<<"$entry"
  source="$root/bench/include_times/$name.cpp"
  echo "| $name.cpp | \`$header\` | $(best_of "$source") | $(best_of "$source" -DCREW_SEPARATE_COMPILATION) | $target |"
done
echo '#include <crew/compiled.hpp>' >"$out/compiled.cpp"
echo "| compiled.cpp, once per program | \`<crew/compiled.hpp>\` | | $(best_of "$out/compiled.cpp" -DCREW_SEPARATE_COMPILATION) | |"
