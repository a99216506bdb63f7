#!/usr/bin/env bash
# The main job: set up (if needed), then train a continuum network on the
# built-in concentric-ellipses data set on 2 MPI ranks (about a minute) and say
# where the results are. Extra arguments go to `pontryx train`
# (e.g. scripts/run-example.sh --set training.max_iterations=50).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
venv="${PONTRYX_VENV:-$root/.venv}"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
export PATH="$venv/bin:$PATH"
cd "$root"
run_dir="runs/ellipses"
mpirun -n 2 pontryx train examples/ellipses.yaml --output "$run_dir" --overwrite "$@"
cat <<MSG

Results of the run are in $root/$run_dir:
  summary.json          final loss and accuracy (train/test), time, ranks, versions
  metrics.csv           one row per iteration (also metrics.jsonl)
  plots/*.png           loss/accuracy curves, decision boundary, transported features
  paraview/*.bp         u(t, x) over depth and the learned controls (open in ParaView)
  model.npz             the trained model (NumPy arrays; see README.md, "The model file")
  config.yaml           the resolved configuration; checkpoints/ for --resume
Evaluate it again with:  $venv/bin/pontryx evaluate $root/$run_dir
MSG
