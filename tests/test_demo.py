"""The README's demo command works, and shows what it claims."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_demo_runs_and_shows_dispatch_after_commit():
    result = subprocess.run(
        [sys.executable, "-m", "demo"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert result.stderr == ""
    assert "worker: send_confirmation: found order 1 for ada" in out
    assert "MISSING" not in out
    assert "order 2" not in out.split("2. Django")[1].split("trace ")[0].replace("order 2 for", "")
    lines = out.splitlines()

    def offset(label: str) -> float:
        line = next(line for line in lines if label in line and "ms" in line)
        return float(re.match(r"\s*([\d.]+) ms", line).group(1))

    assert offset("COMMIT") < offset("send send_confirmation") < offset("process send_confirmation")
    assert offset("◆ enqueue send_confirmation") < offset("COMMIT")
