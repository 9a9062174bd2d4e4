"""The reward–KL frontier: overoptimisation fits and the KL-regularised optimum.

Gao, Schulman & Hilton (2022), "Scaling Laws for Reward Model Overoptimization",
eq. 1–2: with d = √KL(π ‖ π_init) and R the gold reward *relative to the initial
(SFT) policy*,

    best-of-n:  R_bon(d) = d (α_bon − β_bon d)
    RL:         R_rl(d)  = d (α_rl  − β_rl log d)

Both are linear in (α, β), so each fit is one exact least-squares solve. A row of
`sweep.json` is a dict (`tether.analysis.schema.Row`); PPO rows with
a fixed β have `kind == "ppo"`, best-of-n rows `kind == "bon"`; RLOO, GRPO and DPO rows
`"rloo"`, `"grpo"`, `"dpo"`, each fitted with the RL form (Rafailov et al. 2024 fit the
same form to direct alignment).
"""

import math
import sys
from dataclasses import asdict, dataclass

import numpy as np

FIT_KINDS = {"rl": "ppo", "bon": "bon", "rloo": "rloo", "grpo": "grpo", "dpo": "dpo"}
"""Fit name → the row kind whose points it is fitted to; the "bon" fit has the best-of-n form, every other the RL form."""


def _features(kind: str, d: np.ndarray) -> np.ndarray:
    """Design matrix (N, 2) with R = X @ (α, β): bon [d, −d²]; rl [d, −d log d] (d log d → 0 at d = 0)."""
    if kind == "bon":
        return np.stack([d, -d * d], axis=1)
    if kind == "rl":
        d_log_d = np.where(d > 0, d * np.log(np.where(d > 0, d, 1.0)), 0.0)
        return np.stack([d, -d_log_d], axis=1)
    raise ValueError(f"fit kind must be 'rl' or 'bon', got {kind!r}")


@dataclass(frozen=True)
class Fit:
    """A fitted overoptimisation curve R(d), d = √KL; `kind` is "bon" or "rl" (see module docstring)."""

    kind: str
    alpha: float
    beta: float
    """The curvature coefficient; the report calls it κ, apart from the KL coefficient β."""
    r2: float | None
    """1 − SS_res / SS_tot over the fitted points; None when the rewards are all equal."""
    n_points: int
    d_max: float | None = None
    """The largest fitted d: beyond it the curve is an extrapolation."""

    def predict(self, d):
        """R(d) for a float or an array of d ≥ 0."""
        d_arr = np.asarray(d, dtype=float)
        r = _features(self.kind, d_arr.reshape(-1)) @ np.array([self.alpha, self.beta])
        return float(r[0]) if d_arr.ndim == 0 else r.reshape(d_arr.shape)

    @property
    def peak_d(self) -> float | None:
        """argmax over d ≥ 0 of R(d), from R′(d) = 0.

        bon: α − 2βd = 0 → d* = α / (2β), or 0 when α ≤ 0 (the curve only falls);
        rl: α − β(log d + 1) = 0 → d* = exp(α/β − 1). None when β ≤ 0 (no maximum) or when
        d* is beyond a float (β ≈ 0⁺: no peak within reach).
        """
        if self.beta <= 0:
            return None
        if self.kind == "bon":
            peak = max(self.alpha / (2 * self.beta), 0.0)
        else:
            exponent = self.alpha / self.beta - 1
            peak = math.exp(exponent) if exponent < math.log(sys.float_info.max) else math.inf
        return peak if math.isfinite(peak) else None

    @property
    def peak_reward(self) -> float | None:
        """R(peak_d): the largest gain over the SFT policy the fit predicts."""
        return None if self.peak_d is None else self.predict(self.peak_d)

    def as_dict(self) -> dict:
        """The fields plus `peak_d`, `peak_kl` (= peak_d²) and `peak_reward`, as stored in `sweep.json`."""
        peak = self.peak_d
        return {**asdict(self), "peak_d": peak, "peak_kl": None if peak is None else peak ** 2,
                "peak_reward": self.peak_reward}

    @classmethod
    def from_dict(cls, d: dict) -> "Fit":
        return cls(kind=d["kind"], alpha=float(d["alpha"]), beta=float(d["beta"]),
                   r2=None if d.get("r2") is None else float(d["r2"]), n_points=int(d.get("n_points", 0)),
                   d_max=None if d.get("d_max") is None else float(d["d_max"]))


def r_squared(r: np.ndarray, predicted: np.ndarray) -> float | None:
    """Coefficient of determination 1 − Σ(r − r̂)² / Σ(r − r̄)²; None when r is constant."""
    ss_tot = float(np.sum((r - r.mean()) ** 2))
    if ss_tot == 0.0:
        return None
    return 1.0 - float(np.sum((r - predicted) ** 2)) / ss_tot


def _fit(kind: str, d, r) -> Fit:
    d, r = np.asarray(d, dtype=float), np.asarray(r, dtype=float)
    if d.shape != r.shape or d.ndim != 1:
        raise ValueError(f"d and r must be 1-D of one length, got shapes {d.shape} and {r.shape}")
    if not (np.all(np.isfinite(d)) and np.all(np.isfinite(r))):
        raise ValueError(f"d and r must be finite, got d={d.tolist()} r={r.tolist()}")
    if np.any(d < 0):
        raise ValueError(f"d = √KL must be >= 0, got {d.tolist()}")
    # Points at d = 0 carry no information: both features vanish there.
    d, r = d[d > 0], r[d > 0]
    if len(np.unique(d)) < 2:
        raise ValueError(f"a {kind} fit needs points at two distinct d > 0, got d={d.tolist()}")
    features = _features(kind, d)
    coef, *_ = np.linalg.lstsq(features, r, rcond=None)
    return Fit(kind=kind, alpha=float(coef[0]), beta=float(coef[1]), r2=r_squared(r, features @ coef),
               n_points=len(d), d_max=float(d.max()))


def fit_bon(d, r) -> Fit:
    """Least squares for R = d(α − βd) (Gao et al. 2022, eq. 1); points at d = 0 are skipped."""
    return _fit("bon", d, r)


def fit_rl(d, r) -> Fit:
    """Least squares for R = d(α − β log d) (Gao et al. 2022, eq. 2); points at d = 0 are skipped."""
    return _fit("rl", d, r)


def row_sqrt_kl(row: dict) -> float:
    """d of a sweep row: its `sqrt_kl`, else √max(kl, 0) (a sampled KL estimate can dip below 0)."""
    if row.get("sqrt_kl") is not None:
        return float(row["sqrt_kl"])
    return math.sqrt(max(float(row["kl"]), 0.0))


def frontier_fits(rows: list[dict]) -> dict[str, Fit]:
    """Fits `{reward}_{name}` of `{reward}_delta` against √KL, reward gold or proxy, name a key of FIT_KINDS:
    `gold_rl` (PPO), `gold_bon`, `gold_rloo`, `gold_grpo`, `gold_dpo`, and the proxy's.

    RL fits use the fixed-β PPO rows, best-of-n fits the "bon" rows, each other method its own rows. A fit is left out
    when its rows have fewer than two distinct √KL > 0 with that reward measured.
    """
    fits = {}
    for reward in ("gold", "proxy"):
        for name, row_kind in FIT_KINDS.items():
            points = [(row_sqrt_kl(row), row[f"{reward}_delta"]) for row in rows
                      if row.get("kind") == row_kind and row.get(f"{reward}_delta") is not None]
            if len({d for d, _ in points if d > 0}) >= 2:
                fits[f"{reward}_{name}"] = _fit("bon" if name == "bon" else "rl", *zip(*points))
    return fits


def kl_regularised_optimum(scores, beta: float, utilities=None) -> dict:
    """The optimum of E[r] − β·KL(π ‖ π_ref), π*(y|x) ∝ π_ref(y|x)·exp(r(x, y)/β) (Korbak et al. 2022;
    Rafailov et al. 2023, eq. 4), estimated from n samples y_i ~ π_ref per prompt by self-normalised weights:

        w_i = exp(r_i/β) / Σ_j exp(r_j/β),   KL* = Σ_i w_i log(n·w_i),   E*[r] = Σ_i w_i r_i

    averaged over prompts. scores, utilities: (prompts, n). KL* ≤ log n: once it nears
    `kl_limit` the n samples are too few and the estimate is a lower bound.
    """
    scores = np.asarray(scores, dtype=np.float64)
    logits = (scores - scores.max(axis=1, keepdims=True)) / beta
    w = np.exp(logits)
    w /= w.sum(axis=1, keepdims=True)
    n = scores.shape[1]
    kl = float(np.mean(np.sum(w * np.log(np.maximum(w * n, 1e-300)), axis=1)))
    row = {"beta": beta, "kl": kl, "sqrt_kl": math.sqrt(max(kl, 0.0)), "kl_limit": math.log(n),
           "proxy_reward": float(np.mean(np.sum(w * scores, axis=1))), "gold_reward": None}
    if utilities is not None:
        row["gold_reward"] = float(np.mean(np.sum(w * np.asarray(utilities, dtype=np.float64), axis=1)))
    return row


def fixed_beta_rows(rows: list[dict]) -> list[dict]:
    """The PPO rows with a fixed β (kind "ppo"), by increasing β."""
    return sorted((r for r in rows if r.get("kind") == "ppo" and r.get("beta") is not None),
                  key=lambda r: r["beta"])
