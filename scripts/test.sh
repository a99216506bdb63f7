#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite: on 1 MPI rank (in one pytest-xdist
# worker per core), then on 2 MPI ranks,
# then the installed package (scripts/check-install.sh).
# Extra arguments go to pytest (e.g. scripts/test.sh -k forward).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
venv="${PONTRYX_VENV:-$root/.venv}"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
export PATH="$venv/bin:$PATH"
cd "$root"
# The one-rank suite runs in pytest-xdist workers, one per core (at most 4;
# PONTRYX_TEST_WORKERS overrides, 0 = in this process): each worker is one MPI rank.
# worksteal: an idle worker takes queued tests from a busy one (a few long tests
# otherwise end the run on one worker while the other waits).
workers="${PONTRYX_TEST_WORKERS:-$(python -c 'import os; print(min(4, len(os.sched_getaffinity(0))))')}"
echo "== pytest, 1 rank ($workers workers)"
python -m pytest -q -n "$workers" --dist worksteal "$@"
echo "== pytest, 2 ranks (rank 0 reports; rank 1's log is shown if it fails)"
log="$(mktemp)"
status=0
timeout 1200 mpirun -n 2 bash -c '
    if [ "${PMI_RANK:-0}" = 0 ]; then exec python -m pytest -q -p no:cacheprovider "$@"
    else exec python -m pytest -q -p no:cacheprovider "$@" >"'"$log"'" 2>&1; fi' _ "$@" || status=$?
if [ "$status" != 0 ]; then echo "== rank 1 log"; tail -n 60 "$log"; fi
rm -f "$log"
[ "$status" = 0 ] || exit "$status"
echo "== the installed package (wheel in a fresh venv)"
bash "$root/scripts/check-install.sh"
