"""tiny.en and base give the pinned numbers bit for bit (tests/pinned_numbers.py says what)."""

import json
from pathlib import Path

import pytest

from pinned_numbers import compute

PINNED = json.loads((Path(__file__).parent / "fixtures" / "pinned_numbers.json").read_text())


@pytest.mark.parametrize("name", ["tiny.en", "base"])
def test_numbers_bit_identical(name):
    got, want = compute(name), PINNED[name]
    assert sorted(got) == sorted(want)
    changed = [k for k in want if got[k]["sha256"] != want[k]["sha256"]]
    assert not changed, {k: (want[k]["sum"], got[k]["sum"]) for k in changed}
