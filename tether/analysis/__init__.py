"""Reward-hacking analysis: detectors over text, frontier fits, findings, plots and the HTML report.

- `detectors`: refusal, filler, length, distinct-n, repetition — pure functions on strings;
- `frontier`: Gao, Schulman & Hilton (2022) fits of reward against √KL, and the KL-regularised optimum;
- `schema`: the versioned layout of `sweep.json` and its validator `check_sweep`;
- `findings`: every rule and threshold that turns a sweep's numbers into findings;
- `summary`: the plain-language summary, worded from the findings;
- `formats`: numbers as the report writes them;
- `plots`: matplotlib figures as PNG bytes (imported on demand: matplotlib is slow to load);
- `report`: `write_report(path, data)`, one self-contained report.html from `sweep.json`.
"""

from tether.analysis.detectors import (FILLER_PATTERNS, REFUSAL_PATTERNS, count_filler, detector_summary,
                                       distinct_n, gold_proxy_gap, is_refusal, is_repetitive, repetition_rate,
                                       word_count)
from tether.analysis.findings import (REFUSAL_THRESHOLD, Findings, best_gold_beta, decide_findings,
                                      safe_but_useless_beta, sweep_findings)
from tether.analysis.frontier import Fit, fit_bon, fit_rl, frontier_fits
from tether.analysis.schema import SCHEMA_VERSION, check_sweep, read_sweep

__all__ = [
    "FILLER_PATTERNS", "REFUSAL_PATTERNS", "count_filler", "detector_summary", "distinct_n", "gold_proxy_gap",
    "is_refusal", "is_repetitive", "repetition_rate", "word_count",
    "REFUSAL_THRESHOLD", "Findings", "best_gold_beta", "decide_findings", "safe_but_useless_beta", "sweep_findings",
    "Fit", "fit_bon", "fit_rl", "frontier_fits",
    "SCHEMA_VERSION", "check_sweep", "read_sweep",
]
