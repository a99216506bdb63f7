#!/usr/bin/env python3
"""Train every shipped example and write README's examples table from the results.

    .venv/bin/python scripts/examples_table.py [--ranks P] [--only NAME …] [--dry-run]

Each ``examples/NAME.yaml`` (but those with an ``hjb:`` section, run by
``pontryx hjb``) is trained by ``pontryx train`` exactly as a user runs it
(default outputs, into a temporary directory); the table between the
``<!-- examples-table -->`` markers of README.md gets the run's status and
iterations, the test accuracy (or RMSE, or an inverse run's relative L² error of
κ) from its ``summary.json`` and the wall time of the whole command, with the CPU
model and the date below it; the
"what it shows" column is kept. The usage line at the top of each example
(``#   pontryx train examples/NAME.yaml   # …``) gets the same numbers.
``--dry-run`` prints the table and writes nothing; ``--readme`` and
``--no-headers`` redirect or skip the writes (the tests use them); ``--set``
passes overrides to every run (e.g. ``training.max_iterations=2``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- examples-table -->", "<!-- /examples-table -->"
HEADER = ["file", "what it shows", "status (iterations)", "test accuracy / RMSE / κ error", "time"]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def train(example: Path, ranks: int, overrides: list[str], out: Path) -> dict:
    """Run ``pontryx train`` on ``example``; its summary plus the wall time."""
    cmd = [sys.executable, "-m", "pontryx.solver", "train", str(example), "--output", str(out)]
    cmd += ["--quiet", *(a for kv in overrides for a in ("--set", kv))]
    if ranks > 1:
        launcher = Path(sys.executable).absolute().parent / "mpirun"
        cmd = [str(launcher) if launcher.exists() else "mpirun", "-n", str(ranks), *cmd]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    summary_file = out / "summary.json"
    if not summary_file.exists():
        raise SystemExit(
            f"{example.name}: no summary (exit {proc.returncode}): {proc.stderr.strip()}"
        )
    summary = json.loads(summary_file.read_text())
    return {**summary, "wall": wall}


def cells(summary: dict) -> tuple[str, str, str]:
    """(status (iterations), test metric, time) for the table."""
    status = f"{summary['status']} ({summary['iterations']})"
    metric = summary["metric"]
    if "kappa_error" in summary:  # an inverse run: the relative L² error of κ
        shown = f"κ error {summary['kappa_error']:.3f}"
    else:
        value = summary["test"][metric]
        shown = f"RMSE {value:.2g}" if metric == "rmse" else f"{value:.3f}"
    wall = summary["wall"]
    time_ = f"{wall:.0f} s" if wall < 120 else f"{wall / 60:.1f} min"
    return status, shown, time_


def trained_examples() -> list[Path]:
    """The examples run by ``pontryx train`` (not those with an ``hjb:`` section,
    which ``pontryx hjb`` runs: README's HJB section has their numbers)."""
    return [
        e
        for e in sorted((ROOT / "examples").glob("*.yaml"))
        if not re.search(r"^hjb:", e.read_text(), re.M)
    ]


def descriptions(readme: str) -> dict[str, str]:
    """The "what it shows" column of the current table, by file name."""
    out = {}
    body = readme.split(BEGIN, 1)[1].split(END, 1)[0] if BEGIN in readme else ""
    for line in body.splitlines():
        parts = [p.strip() for p in line.strip().strip("|").split("|")]
        if len(parts) >= 2 and parts[0].startswith("`"):
            out[parts[0].strip("`")] = parts[1]
    return out


def first_sentence(example: Path) -> str:
    """The first sentence of an example's header comment (for a new example)."""
    text = []
    for line in example.read_text().splitlines():
        if not line.startswith("#"):
            break
        text.append(line.lstrip("# ").strip())
    joined = " ".join(t for t in text if t)
    return joined.split(". ")[0].rstrip(".") if joined else example.stem


def table(rows: list[list[str]], ranks: int) -> str:
    head = [*HEADER[:-1], f"time ({ranks} rank{'s' if ranks > 1 else ''})"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def update_header(example: Path, ranks: int, metric: str, time_: str) -> None:
    """The usage line at the top of an example: ``# ~T on P rank(s), test … ≈ …``."""
    text = example.read_text()
    where = "one rank" if ranks == 1 else f"{ranks} ranks"
    if metric.startswith("RMSE"):
        what = metric.replace("RMSE ", "RMSE ≈ ")
    elif metric.startswith("κ error"):
        what = metric.replace("κ error ", "κ error ≈ ")
    else:
        what = f"accuracy ≈ {metric}"
    note = f"# {time_} on {where}, test {what} (README's table)"
    name = re.escape(example.name)  # blanks, not \s: the usage line ends at its line break
    pattern = re.compile(rf"^(#[ \t]+pontryx train examples/{name}[ \t]+)#.*$", re.M)
    new, n = pattern.subn(lambda m: m.group(1) + note, text, count=1)
    if n:
        example.write_text(new)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, default=1)
    ap.add_argument("--only", nargs="*", default=None, help="example names (default: all)")
    ap.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md")
    ap.add_argument("--no-headers", action="store_true", help="leave the examples' files alone")
    ap.add_argument("--dry-run", action="store_true", help="print the table, write nothing")
    args = ap.parse_args(argv)
    readme = args.readme.read_text()
    if BEGIN not in readme or END not in readme:
        raise SystemExit(f"{args.readme}: no {BEGIN} … {END} markers")
    known = descriptions(readme)
    order = list(known)  # the table's order; new examples after it, by name
    examples = sorted(
        trained_examples(),
        key=lambda e: (order.index(e.name) if e.name in order else len(order), e.name),
    )
    chosen = set(args.only) if args.only is not None else {e.stem for e in examples}
    unknown = chosen - {e.stem for e in examples}
    if unknown:
        raise SystemExit(f"--only: no example {sorted(unknown)[0]!r}")
    old_rows = {}
    body = readme.split(BEGIN, 1)[1].split(END, 1)[0]
    for line in body.splitlines():
        parts = [p.strip() for p in line.strip().strip("|").split("|")]
        if len(parts) == len(HEADER) and parts[0].startswith("`"):
            old_rows[parts[0].strip("`")] = parts
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="pontryx-examples-"))
    try:
        for example in examples:
            name = example.name
            if example.stem not in chosen:
                if name in old_rows:
                    rows.append(old_rows[name])
                continue
            summary = train(example, args.ranks, args.overrides, tmp / example.stem)
            status, metric, time_ = cells(summary)
            what = known.get(name) or first_sentence(example)
            rows.append([f"`{name}`", what, status, metric, time_])
            print(f"{name:18s} {status:24s} {metric:12s} {time_}", flush=True)
            if not args.dry_run and not args.no_headers:
                update_header(example, args.ranks, metric, time_)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    stamp = f"{cpu_model()}, {datetime.date.today().isoformat()}"
    block = (
        f"{BEGIN}\n{table(rows, args.ranks)}\n\n"
        f"Measured by `scripts/examples_table.py` ({stamp}).\n{END}"
    )
    if args.dry_run:
        print(block)
        return 0
    head, rest = readme.split(BEGIN, 1)
    args.readme.write_text(head + block + rest.split(END, 1)[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
