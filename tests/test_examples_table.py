"""scripts/examples_table.py: README's examples table is produced by training the
examples (here one, for two iterations, into a copy of README)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.cli, pytest.mark.serial]

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "examples_table.py"


def test_table_rows_come_from_runs(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text((ROOT / "README.md").read_text())
    before = readme.read_text()
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--only", "sine", "--set", "training.max_iterations=2",
         "--readme", str(readme), "--no-headers"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    after = readme.read_text()
    block = after.split("<!-- examples-table -->")[1].split("<!-- /examples-table -->")[0]
    sine = next(line for line in block.splitlines() if line.startswith("| `sine.yaml`"))
    assert "| max_iterations (2) | RMSE " in sine
    assert "Measured by `scripts/examples_table.py` (" in block
    # the other rows and everything outside the markers are kept
    ellipses = next(line for line in before.splitlines() if line.startswith("| `ellipses.yaml`"))
    assert ellipses in block
    assert before.split("<!-- examples-table -->")[0] == after.split("<!-- examples-table -->")[0]
    assert before.split("<!-- /examples-table -->")[1] == after.split("<!-- /examples-table -->")[1]
    n = len([e for e in (ROOT / "examples").glob("*.yaml") if not e.stem.startswith("hjb")])
    assert len([line for line in block.splitlines() if line.startswith("| `")]) == n


def test_unknown_example_is_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--only", "nosuch", "--dry-run"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1 and proc.stderr.strip() == "--only: no example 'nosuch'"
