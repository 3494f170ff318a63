"""Run every benchmark module and print one table: `python -m bench [--quick] [area ...]`."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from pathlib import Path

from bench._harness import Figure


def _areas() -> list[str]:
    here = Path(__file__).parent
    return sorted(m.name[len("bench_") :] for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("areas", nargs="*", help=f"which benchmarks (default all: {', '.join(_areas())})")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, for a smoke run")
    args = parser.parse_args(argv)
    failed = 0
    for area in args.areas or _areas():
        module = importlib.import_module(f"bench.bench_{area}")
        print(f"\n== {area} ==", flush=True)
        try:
            figures: list[Figure] = module.run(quick=args.quick)
        except Exception as error:  # a missing broker should not hide the other figures
            print(f"  could not run: {type(error).__name__}: {error}")
            failed += 1
            continue
        for figure in figures:
            mark = "" if figure.met is None else ("ok  " if figure.met else "MISS")
            value = f"{figure.value:8.2f}{figure.unit}"
            print(f"  {mark:4} {figure.name:<58} {value}  goal {figure.goal:<10} {figure.detail}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
