#!/usr/bin/env bash
# Create (or reuse) the virtual environment .venv with Python >= 3.12 and install
# pontryx with the binary FEniCSx stack (extra "wheels") and the test tools.
# Idempotent: a second call only re-checks the install. Override the interpreter
# with PONTRYX_PYTHON=/path/to/python3.12, the location with PONTRYX_VENV=DIR.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${PONTRYX_VENV:-$root/.venv}"

find_python() {
    local c
    for c in "${PONTRYX_PYTHON:-}" python3.12 python3.13 python3; do
        [ -n "$c" ] || continue
        if command -v "$c" >/dev/null 2>&1 &&
            "$c" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; then
            command -v "$c"; return 0
        fi
    done
    # pyenv keeps interpreters that its shims do not expose by default.
    for c in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[2-9]*/bin/python3; do
        [ -x "$c" ] && { echo "$c"; return 0; }
    done
    return 1
}

if [ ! -x "$venv/bin/python" ]; then
    py="$(find_python)" || { echo "setup: no Python >= 3.12 found (set PONTRYX_PYTHON)" >&2; exit 1; }
    echo "setup: creating $venv with $py" >&2
    "$py" -m venv "$venv"
fi
stamp="$venv/.pontryx-installed"
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    # the pure dependencies at the versions of docker/constraints.txt (the image's)
    "$venv/bin/python" -m pip install --quiet --constraint "$root/docker/constraints.txt" \
        -e "$root[wheels,test]"
    touch "$stamp"
fi
