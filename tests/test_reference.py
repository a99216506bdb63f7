"""The shipped examples' gradients against the stored reference
(``tests/reference_gradients.py``): refactorings must not change the numbers."""

import json

import pytest
from reference_gradients import EXAMPLES, STORE, fingerprints

REFERENCE = json.loads(STORE.read_text())


@pytest.mark.parametrize("name", EXAMPLES)
def test_gradient_matches_reference(name):
    now, ref = fingerprints(name), REFERENCE[name]
    for point in ("init", "moved"):
        assert now[point]["J"] == pytest.approx(ref[point]["J"], rel=1e-11, abs=0)
        for key, values in ref[point].items():
            if key == "J":
                continue
            scale = values[1]  # the norm of that gradient block
            for a, b in zip(now[point][key], values):
                assert abs(a - b) <= 1e-11 * scale, (name, point, key, now[point][key], values)
