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
