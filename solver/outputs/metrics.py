"""The per-iteration log: ``metrics.jsonl`` (one JSON object a line) and ``metrics.csv``.

Written by world rank 0 only, one line per iteration, flushed at once, so the
files can be followed while a run is going (``tail -f``). Columns: the fields
of :class:`~pontryx.solver.training.base.Record` (iteration, loss, misfit,
train_metric, grad_norm, stationarity, time, test_metric) followed by the
method-specific extras. Per-layer values (lists: ``stationarity_layers``
‖∂_θ Hⁿ‖ for every method, ``gap_layers`` the maximum-principle gap for
msa/emsa) are in ``metrics.jsonl`` only. On ``--resume`` the lines after the checkpoint's
iteration are dropped, so a resumed run's log equals an uninterrupted one's.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from pontryx.meshes.errors import InputError
from pontryx.solver.outputs.atomic import write_text

__all__ = ["BASE_COLUMNS", "MetricsLog", "read_metrics"]

BASE_COLUMNS = (
    "iteration",
    "loss",
    "misfit",
    "train_metric",
    "test_metric",
    "grad_norm",
    "stationarity",
    "time",
)


def _clean(v):
    """JSON has no NaN/Inf: write them as strings, like CSV does."""
    if isinstance(v, list | tuple):
        return [_clean(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if hasattr(v, "item"):
        return _clean(v.item())
    return v


def _is_record(row) -> bool:
    it = row.get("iteration") if isinstance(row, dict) else None
    return isinstance(it, int) and not isinstance(it, bool)


def read_metrics(directory: str | Path) -> list[dict]:
    """The complete lines of ``metrics.jsonl`` ([] if there is none; a torn last
    line, unfinished JSON without its newline, of a killed run is left out). A
    file that is not UTF-8 text or cannot be read, or any other line that is not
    an iteration's record (a JSON object with an integer ``iteration``), is an
    InputError naming it and the line."""
    path = Path(directory) / "metrics.jsonl"
    if not path.is_file():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path} is not UTF-8 text (not a log pontryx wrote)") from None
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}") from None
    rows, lines = [], text.splitlines()
    for i, line in enumerate(lines):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1 and not text.endswith("\n"):
                break  # torn
            raise InputError(f"{path}: line {i + 1} is not a JSON line") from None
        except RecursionError:  # nested too deep to be a record
            raise InputError(f"{path}: line {i + 1} is not a record pontryx wrote") from None
        if not _is_record(row):
            raise InputError(f"{path}: line {i + 1} is not an iteration's record")
        rows.append(row)
    return rows


class MetricsLog:
    """Append-only metrics files of a run directory (active on ``active`` ranks)."""

    def __init__(self, directory: str | Path, active: bool):
        self.directory = Path(directory)
        self.active = active
        self.rows: list[dict] = []
        self.columns: list[str] = list(BASE_COLUMNS)
        self._jsonl = self._csv = None

    def open(self, keep_until: int | None = None, rows: list[dict] | None = None) -> MetricsLog:
        """Start the files; with ``keep_until`` keep the rows up to that iteration
        (resume: ``rows``, read before anything was written, or the file's),
        otherwise start empty."""
        if not self.active:
            return self
        if keep_until is not None:
            rows = read_metrics(self.directory) if rows is None else rows
            self.rows = [r for r in rows if r["iteration"] <= keep_until]
        for row in self.rows:
            self._add_columns(row)
        write_text(
            self.directory / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in self.rows)
        )
        write_text(self.directory / "metrics.csv", self._csv_text(self.rows))
        self._jsonl = open(self.directory / "metrics.jsonl", "a", encoding="utf-8")
        self._csv = open(self.directory / "metrics.csv", "a", encoding="utf-8", newline="")
        return self

    def _add_columns(self, row: dict) -> bool:
        new = [k for k, v in row.items() if k not in self.columns and not isinstance(v, list)]
        self.columns += new
        return bool(new)

    def _csv_text(self, rows) -> str:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, self.columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in self.columns})
        return buf.getvalue()

    def append(self, record: dict) -> None:
        if not self.active:
            return
        row = {k: _clean(v) for k, v in record.items()}
        self.rows.append(row)
        self._jsonl.write(json.dumps(row) + "\n")
        self._jsonl.flush()
        if self._add_columns(row):  # a new extra column: rewrite the CSV with it
            self._csv.close()
            write_text(self.directory / "metrics.csv", self._csv_text(self.rows))
            self._csv = open(self.directory / "metrics.csv", "a", encoding="utf-8", newline="")
        else:
            text = self._csv_text([row]).split("\n", 1)[1]
            self._csv.write(text)
        self._csv.flush()

    def close(self) -> None:
        for f in (self._jsonl, self._csv):
            if f is not None:
                f.close()
        self._jsonl = self._csv = None
