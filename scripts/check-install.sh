#!/usr/bin/env bash
# The installed package, as a user gets it: build the sdist and the wheel, check
# that both hold every subpackage of solver/, forms/ and meshes/, install the
# wheel (not editable) with the `wheels` extra into a fresh venv and, from outside
# the checkout, run `pontryx --version`, `pontryx info` and a 3-iteration
# `pontryx train` of a shipped example. Dependency wheels are kept in
# $PONTRYX_VENV/wheelhouse and reused (downloaded only when missing).
# Called by scripts/test.sh; needs the venv of scripts/setup.sh.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${PONTRYX_VENV:-$root/.venv}"
py="$venv/bin/python"
work="$(mktemp -d "${TMPDIR:-/tmp}/pontryx-install.XXXXXX")"
trap 'rm -rf "$work"' EXIT
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1

echo "== build sdist and wheel"
"$py" -m build --sdist --wheel --outdir "$work/dist" "$root" > "$work/build.log" 2>&1 ||
    { tail -n 30 "$work/build.log"; exit 1; }
wheel="$(ls "$work"/dist/pontryx-*.whl)"
sdist="$(ls "$work"/dist/pontryx-*.tar.gz)"

echo "== every subpackage in the wheel and the sdist"
"$py" - "$root" "$wheel" "$sdist" <<'PY'
import sys, tarfile, zipfile
from pathlib import Path

root, wheel, sdist = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
want = sorted(
    str(p.relative_to(root))
    for top in ("solver", "forms", "meshes")
    for p in (root / top).rglob("*.py")
    if "__pycache__" not in p.parts
)
in_wheel = {n.removeprefix("pontryx/") for n in zipfile.ZipFile(wheel).namelist()}
in_sdist = {n.split("/", 1)[1] for n in tarfile.open(sdist).getnames() if "/" in n}
missing = [f"wheel: {w}" for w in want if w not in in_wheel]
missing += [f"sdist: {w}" for w in want if w not in in_sdist]
missing += [f"sdist: {f}" for f in ("LICENSE", "setup.py", "pyproject.toml") if f not in in_sdist]
if missing:
    sys.exit("missing from the distributions:\n  " + "\n  ".join(missing))
print(f"   {len(want)} modules in both")
PY

echo "== install the wheel into a fresh venv (not editable)"
base="$("$py" -c 'import sys; print(sys._base_executable)')"
"$base" -m venv "$work/venv"
house="$venv/wheelhouse"
mkdir -p "$house"
install=("$work/venv/bin/python" -m pip install --quiet --no-index --find-links "$house" "$wheel[wheels]")
if ! "${install[@]}" > /dev/null 2>&1; then
    "$py" -m pip download --quiet --dest "$house" "$wheel[wheels]" > "$work/download.log" 2>&1 ||
        { grep -v "is ignored" "$work/download.log" | tail -n 20; exit 1; }
    "${install[@]}" 2>&1 | grep -v "is ignored" || true
    "$work/venv/bin/python" -c "import pontryx.solver" 2> /dev/null ||
        { echo "check-install: installing $wheel[wheels] failed" >&2; exit 1; }
fi

echo "== run it from outside the checkout"
cd "$work"
"$work/venv/bin/python" - "$root" <<'PY'
import sys
from pathlib import Path

import pontryx.solver

where = Path(pontryx.solver.__file__).resolve()
assert Path(sys.argv[1]) not in where.parents, f"imported from the checkout: {where}"
print(f"   pontryx.solver from {where.parent}")
PY
PATH="$work/venv/bin:$PATH"
pontryx --version
pontryx info > "$work/info.txt" || { cat "$work/info.txt"; exit 1; }
head -n 2 "$work/info.txt"
pontryx train "$root/examples/ellipses.yaml" --output "$work/run" --quiet \
    --set training.max_iterations=3 --set output.checkpoint_every=1
test -f "$work/run/summary.json" && test -f "$work/run/model.npz"
echo "== installed package OK"
