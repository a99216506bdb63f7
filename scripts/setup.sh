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
    if [ -n "${PONTRYX_PYTHON:-}" ]; then  # an explicit choice: that one or an error
        if command -v "$PONTRYX_PYTHON" >/dev/null 2>&1 &&
            "$PONTRYX_PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; then
            command -v "$PONTRYX_PYTHON"; return 0
        fi
        echo "setup: PONTRYX_PYTHON=$PONTRYX_PYTHON is not a Python >= 3.12" >&2
        return 2
    fi
    for c in python3.12 python3.13 python3; do
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
    status=0
    py="$(find_python)" || status=$?
    if [ "$status" -ne 0 ]; then
        [ "$status" -eq 2 ] || echo "setup: no Python >= 3.12 found (set PONTRYX_PYTHON)" >&2
        exit 1
    fi
    echo "setup: creating $venv with $py" >&2
    "$py" -m venv "$venv" || {
        echo "setup: '$py -m venv' failed (on Debian/Ubuntu: apt install python3.12-venv);" \
            "remove $venv and run again" >&2
        exit 1
    }
fi
if ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
    echo "setup: $venv has no pip (a half-created environment?): remove it and run again" \
        "(on Debian/Ubuntu first: apt install python3.12-venv)" >&2
    exit 1
fi
stamp="$venv/.pontryx-installed"
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ] ||
    [ "$root/setup.py" -nt "$stamp" ] || [ "$root/docker/constraints.txt" -nt "$stamp" ]; then
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    # the pure dependencies at the versions of docker/constraints.txt (the image's)
    "$venv/bin/python" -m pip install --quiet --constraint "$root/docker/constraints.txt" \
        -e "$root[wheels,test]"
    touch "$stamp"
fi
