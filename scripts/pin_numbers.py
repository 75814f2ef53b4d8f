"""Rewrite tests/fixtures/pinned_numbers.json (see tests/pinned_numbers.py): run it only for a
change that is meant to move numbers. ``python scripts/pin_numbers.py [tiny.en base]``"""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from pinned_numbers import compute  # noqa: E402

PINNED = ROOT / "tests" / "fixtures" / "pinned_numbers.json"

if __name__ == "__main__":
    names = sys.argv[1:] or ["tiny.en", "base"]
    pinned = json.loads(PINNED.read_text()) if PINNED.exists() else {}
    for name in names:
        pinned[name] = compute(name)
        print(name, len(pinned[name]), "arrays pinned")
    PINNED.write_text(json.dumps(pinned, indent=1, sort_keys=True) + "\n")
