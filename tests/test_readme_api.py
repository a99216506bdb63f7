"""README's "Python API" block, run as printed (a demo that is a test)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_python_api_block_runs(monkeypatch, capsys):
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- python-api -->\s*```python\n(.*?)```", text, re.S)
    assert m, "README.md has no <!-- python-api --> python block"
    monkeypatch.chdir(ROOT)  # it reads examples/ellipses.yaml
    exec(compile(m.group(1), "README.md python-api", "exec"), {"__name__": "readme"})


def test_readme_tables_are_whole():
    """Every Markdown table row of README.md (and docs/) sits in its table: a row
    after a paragraph renders as text (seen: three mesh kinds and a key of the
    hjb section, their defaults missing from the rendered schema)."""
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        lines = path.read_text(encoding="utf-8").splitlines()
        fence = False
        for i, line in enumerate(lines):
            if line.startswith("```"):
                fence = not fence
            if fence or not (line.startswith("| ") and line.rstrip().endswith("|")):
                continue
            header = i + 1 < len(lines) and re.match(r"\|\s*:?-{3,}", lines[i + 1])
            assert lines[i - 1].startswith("|") or header, f"{path.name}:{i + 1}: {line[:60]}"
