#!/bin/sh
# Runs one MPI test under mpirun, on loopback only, and checks what a job
# must never do: hang, leave processes behind, or leave files in Open MPI's
# session directory.
#
#   run_mpi.sh --expect ok|fail [--match REGEX] [--within SECONDS] -- mpirun ARGS...
#
# --expect fail: mpirun must exit non-zero (a rank killed, binaries
# mismatched) and its output must match REGEX; --within: it must end within
# SECONDS (a hang fails the test before CTest's TIMEOUT).
set -u
expect=ok match= within=120
while [ $# -gt 0 ]; do
  case "$1" in
    --expect) expect=$2; shift 2 ;;
    --match) match=$2; shift 2 ;;
    --within) within=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "run_mpi.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

# Keep every byte of MPI traffic on this host: shared memory between ranks,
# loopback for Open MPI's own control channel; never another interface.
export OMPI_MCA_btl=self,vader OMPI_MCA_btl_tcp_if_include=lo OMPI_MCA_oob_tcp_if_include=lo
export OMPI_MCA_pml=ob1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# A private session directory, checked empty afterwards.
session=$(mktemp -d "${TMPDIR:-/tmp}/crew-mpi-test.XXXXXX") || exit 2
export TMPDIR=$session
log=$session.log

start=$(date +%s)
timeout -k 5 "$within" "$@" >"$log" 2>&1
status=$?
elapsed=$(( $(date +%s) - start ))
cat "$log"
fail=0
if [ $elapsed -ge "$within" ] && { [ $status -eq 124 ] || [ $status -eq 137 ]; }; then
  echo "run_mpi.sh: FAIL: the job did not end within ${within} s (a hang)"; fail=1
elif [ "$expect" = ok ] && [ $status -ne 0 ]; then
  echo "run_mpi.sh: FAIL: mpirun exited with $status"; fail=1
elif [ "$expect" = fail ] && [ $status -eq 0 ]; then
  echo "run_mpi.sh: FAIL: mpirun succeeded; this job had to fail"; fail=1
fi
if [ -n "$match" ] && ! grep -Eq "$match" "$log"; then
  echo "run_mpi.sh: FAIL: the output does not match: $match"; fail=1
fi
sleep 1  # let the killed ranks' worker processes go
left=$(find "$session" -mindepth 1 | head -5)
if [ -n "$left" ]; then
  echo "run_mpi.sh: FAIL: files left in Open MPI's session directory:"; echo "$left"; fail=1
fi
# No rank, worker or orted of this job left: they would still have our
# private TMPDIR in their environment.
for p in /proc/[0-9]*; do
  if grep -qsz "^TMPDIR=$session\$" "$p/environ" 2>/dev/null; then
    echo "run_mpi.sh: FAIL: process ${p#/proc/} of this job is still running: $(tr '\0' ' ' <"$p/cmdline")"; fail=1
  fi
done
echo "run_mpi.sh: mpirun exited with $status after ${elapsed} s"
rm -rf "$session" "$log"
exit $fail
