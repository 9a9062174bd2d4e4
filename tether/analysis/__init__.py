"""Reward-hacking analysis: detectors over text, frontier fits, plots and the HTML report.

- `detectors`: refusal, filler, length, distinct-n, repetition — pure functions on strings;
- `frontier`: Gao, Schulman & Hilton (2022) fits of reward against √KL, and the β a sweep reports;
- `plots`: matplotlib figures as PNG bytes (imported on demand: matplotlib is slow to load);
- `report`: `write_report(path, data)`, one self-contained report.html from `sweep.json`.
"""

from tether.analysis.detectors import (FILLER_PATTERNS, REFUSAL_PATTERNS, count_filler, detector_summary,
                                       distinct_n, gold_proxy_gap, is_refusal, is_repetitive, repetition_rate,
                                       word_count)
from tether.analysis.frontier import (Fit, best_gold_beta, fit_bon, fit_rl, frontier_fits, safe_but_useless_beta,
                                      sweep_findings)

__all__ = [
    "FILLER_PATTERNS", "REFUSAL_PATTERNS", "count_filler", "detector_summary", "distinct_n", "gold_proxy_gap",
    "is_refusal", "is_repetitive", "repetition_rate", "word_count",
    "Fit", "best_gold_beta", "fit_bon", "fit_rl", "frontier_fits", "safe_but_useless_beta", "sweep_findings",
]
