"""Compare two sweep.json files number by number: `python scripts/compare_sweeps.py BEFORE AFTER [--tol 1e-9]`.

Used to check that a change meant to keep behaviour (a refactor) gives the default demo's numbers again.
Timings (`pipeline.timings_s`, `time/*`) and peak memory (`memory/*`) are ignored; keys present on one side only are listed; every number
that differs by more than the tolerance (relative to its size) is printed. Exit 0 when nothing differs.
"""

import argparse
import json
import math
import sys

IGNORED = ("timings_s", "time/", "memory/", "run_dir", "schema_version")


def leaves(value, prefix=""):
    """(dotted path, value) of every scalar in a JSON document."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from leaves(item, f"{prefix}[{i}]")
    else:
        yield prefix, value


def differences(before: dict, after: dict, tol: float) -> list[str]:
    a = {k: v for k, v in leaves(before) if not any(i in k for i in IGNORED)}
    b = {k: v for k, v in leaves(after) if not any(i in k for i in IGNORED)}
    out = [f"only before: {k}" for k in sorted(a.keys() - b.keys())]
    out += [f"only after: {k}" for k in sorted(b.keys() - a.keys())]
    for key in sorted(a.keys() & b.keys()):
        x, y = a[key], b[key]
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (x, y))
        if numbers and not math.isclose(x, y, rel_tol=tol, abs_tol=tol):
            out.append(f"{key}: {x!r} -> {y!r}")
        elif not numbers and x != y:
            out.append(f"{key}: {x!r} -> {y!r}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--tol", type=float, default=1e-9, help="relative and absolute tolerance for numbers")
    args = parser.parse_args()
    try:
        with open(args.before, encoding="utf-8") as f, open(args.after, encoding="utf-8") as g:
            found = differences(json.load(f), json.load(g), args.tol)
    except (OSError, json.JSONDecodeError) as e:
        print(f"compare_sweeps: error: {e}", file=sys.stderr)
        return 2
    print("\n".join(found) if found else "no differences")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
