"""Run every benchmark in ``bench/`` and write ``bench/results.json`` (DESIGN §8).

Each ``bench/bench_*.py`` module exposes ``run(quick: bool) -> dict[str, dict]`` returning figures keyed by name,
each ``{"value", "baseline", "ratio", "unit", "target", "lower_is_better"}``; the ratio is measured against a
baseline timed in the same run (these machines are shared and noisy, absolute numbers alone mean little).

Usage: ``python bench/run.py [--only loader,metrics] [--quick]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from birads_calc.io import write_json  # noqa: E402


def load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def passed(entry: dict) -> bool | None:
    target = entry.get("target")
    if target is None:
        return None
    measured = entry["ratio"] if entry.get("ratio") is not None else entry["value"]
    if measured is None:
        return None
    return measured <= target if entry.get("lower_is_better") else measured >= target


def print_table(results: dict[str, dict]) -> None:
    header = f"{'figure':38} {'value':>12} {'baseline':>12} {'ratio':>9} {'target':>8}  unit"
    print(header)
    print("-" * len(header))
    for name, e in results.items():

        def fmt(x):
            return "-" if x is None else (f"{x:.4g}" if isinstance(x, float) else str(x))

        ok = {True: "ok", False: "MISSED", None: ""}[passed(e)]
        print(
            f"{name:38} {fmt(e.get('value')):>12} {fmt(e.get('baseline')):>12} {fmt(e.get('ratio')):>9} "
            f"{fmt(e.get('target')):>8}  {e.get('unit', '')} {ok}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated benchmark names (e.g. loader,metrics)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    args = parser.parse_args()
    wanted = {w.strip() for w in args.only.split(",") if w.strip()}
    results: dict[str, dict] = {}
    failures = 0
    for path in sorted(HERE.glob("bench_*.py")):
        name = path.stem.removeprefix("bench_")
        if wanted and name not in wanted:
            continue
        print(f"== {name}", flush=True)
        try:
            results.update(load(path).run(quick=args.quick))
        except Exception:  # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            failures += 1
    write_json(args.out, results)
    print()
    print_table(results)
    print(f"\nwrote {args.out}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
