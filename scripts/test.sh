#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite: serially, then on 2 MPI ranks,
# then the installed package (scripts/check-install.sh).
# Extra arguments go to pytest (e.g. scripts/test.sh -k forward).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
venv="${PONTRYX_VENV:-$root/.venv}"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
export PATH="$venv/bin:$PATH"
cd "$root"
echo "== pytest, 1 rank"
python -m pytest -q "$@"
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
