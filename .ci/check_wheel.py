"""Run in a clean venv where only the built wheel is installed: its metadata, then the first example.

Usage: python check_wheel.py PAGE.md [PAGE.md ...]  (each page's first ```python block is run)
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

import airlock

here = Path(airlock.__file__).resolve()
assert "site-packages" in here.parts, f"airlock was imported from {here}, not from the installed wheel"
dist = metadata.distribution("airlock-dispatch")
assert dist.metadata["License-Expression"] == "MIT", dist.metadata["License-Expression"]
assert any(name.endswith("LICENSE") for name in map(str, dist.files or ())), "LICENSE is not in the wheel"
entry_points = {(ep.group, ep.name) for ep in dist.entry_points}
assert {("pytest11", "airlock"), ("flake8.extension", "AIR")} <= entry_points, entry_points
print(f"airlock-dispatch {dist.version} installed at {here.parent}")

for page in sys.argv[1:]:
    blocks = re.findall(r"^```python\n(.*?)^```", Path(page).read_text(), flags=re.S | re.M)
    assert blocks, f"{page} has no python example"
    print(f"--- the first example of {Path(page).name}")
    exec(compile(blocks[0], f"{page}, first python example", "exec"), {"__name__": "__example__"})
