"""Numbers as the report and its summary write them."""

import math


def fmt(x) -> str:
    """A number as shown in the report: 3 significant digits, thousands separated; None → "—"."""
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if not isinstance(x, float):
        return str(x)
    if not math.isfinite(x):
        return str(x)
    if abs(x) >= 1e6 or abs(x) < 100:
        return f"{x:.3g}"
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.1f}"


def pct(x) -> str:
    """A share as a percentage: 0.634 → "63%"; below 10% one decimal: 0.034 → "3.4%"."""
    return "—" if x is None else (f"{x:.0%}" if x == 0 or abs(x) >= 0.1 else f"{x:.1%}")


def signed(x) -> str:
    """A difference with its sign: +0.12, -0.4."""
    return "—" if x is None else ("+" if x >= 0 else "") + fmt(float(x))
