"""Gao et al. (2022) fits on synthetic curves, and the β a sweep reports, on hand-made rows."""

import math

import numpy as np
import pytest

from tether.analysis.findings import best_gold_beta, safe_but_useless_beta, sweep_findings
from tether.analysis.frontier import Fit, fit_bon, fit_rl, frontier_fits, kl_regularised_optimum, r_squared, row_sqrt_kl


def test_fit_bon_recovers_noiseless_coefficients():
    d = np.array([0.5, 1.0, 1.5, 2.0, 3.0])
    fit = fit_bon(d, d * (0.8 - 0.3 * d))
    assert (fit.kind, fit.n_points) == ("bon", 5)
    assert fit.alpha == pytest.approx(0.8) and fit.beta == pytest.approx(0.3)
    assert fit.r2 == pytest.approx(1.0)
    assert fit.peak_d == pytest.approx(0.8 / (2 * 0.3))
    assert fit.peak_reward == pytest.approx((0.8 / 0.6) * (0.8 - 0.3 * 0.8 / 0.6))


def test_fit_rl_recovers_noiseless_coefficients():
    d = np.array([0.2, 0.7, 1.3, 2.5, 4.0])
    fit = fit_rl(d, d * (0.6 - 0.7 * np.log(d)))
    assert fit.alpha == pytest.approx(0.6) and fit.beta == pytest.approx(0.7)
    assert fit.r2 == pytest.approx(1.0)
    # R'(d) = α − β(log d + 1) = 0 → d* = exp(α/β − 1)
    assert fit.peak_d == pytest.approx(math.exp(0.6 / 0.7 - 1))
    eps = 1e-4
    assert fit.predict(fit.peak_d) > max(fit.predict(fit.peak_d - eps), fit.predict(fit.peak_d + eps))


def test_fits_skip_the_origin_and_predict_zero_there():
    fit = fit_rl([0.0, 1.0, 2.0], [0.0, 0.5, 0.4])
    assert fit.n_points == 2 and fit.r2 == pytest.approx(1.0)  # two points, two parameters: exact
    assert fit.predict(0.0) == 0.0
    assert fit.predict(np.array([0.0, 1.0])).tolist() == pytest.approx([0.0, 0.5])


def test_r_squared_hand_value():
    r, pred = np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 2.0])
    assert r_squared(r, pred) == pytest.approx(1 - 1 / 2)  # SS_res 1, SS_tot 2
    assert r_squared(np.array([1.0, 1.0]), np.array([1.0, 1.0])) is None


def test_peak_d_edge_cases():
    assert Fit("bon", alpha=1.0, beta=-0.1, r2=1.0, n_points=3).peak_d is None  # never turns down
    assert Fit("rl", alpha=1.0, beta=0.0, r2=1.0, n_points=3).peak_d is None
    assert Fit("bon", alpha=-0.5, beta=0.2, r2=1.0, n_points=3).peak_d == 0.0  # only falls: stay at SFT
    # a straight line fitted with round-off: β = 1e-17 puts the peak beyond any float
    assert Fit("rl", alpha=0.5, beta=1e-17, r2=1.0, n_points=3).peak_d is None
    assert Fit("bon", alpha=0.5, beta=1e-320, r2=1.0, n_points=3).peak_d is None


def test_fit_as_dict_round_trip():
    fit = Fit("rl", alpha=0.6, beta=0.7, r2=0.9, n_points=4)
    d = fit.as_dict()
    assert d["peak_kl"] == pytest.approx(d["peak_d"] ** 2)
    assert Fit.from_dict(d) == fit


def test_fit_rejects_bad_points():
    with pytest.raises(ValueError, match="two distinct d > 0"):
        fit_rl([0.0, 1.0, 1.0], [0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="must be >= 0"):
        fit_bon([-1.0, 1.0, 2.0], [0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="finite"):
        fit_bon([1.0, 2.0], [float("nan"), 1.0])
    with pytest.raises(ValueError, match="one length"):
        fit_bon([1.0, 2.0], [1.0])


def ppo(beta, gold=None, refusal=None, kl=1.0):
    return {"kind": "ppo", "label": f"β={beta:g}", "beta": beta, "kl": kl, "gold_reward": gold,
            "benign_refusal_rate": refusal}


def test_safe_but_useless_beta_is_the_largest_beta_over_threshold():
    rows = [ppo(0.01, refusal=0.7), ppo(0.03, refusal=0.45), ppo(0.1, refusal=0.1), ppo(1.0, refusal=0.05)]
    assert safe_but_useless_beta(rows) == 0.03
    assert safe_but_useless_beta(rows, threshold=0.5) == 0.01
    assert safe_but_useless_beta(rows, threshold=0.8) is None
    assert safe_but_useless_beta([ppo(0.1, refusal=0.2)]) is None  # strictly above
    assert safe_but_useless_beta([ppo(0.1)]) is None
    # other kinds never count, even with many refusals
    assert safe_but_useless_beta([{"kind": "bon", "label": "n=64", "beta": None, "kl": 3.2,
                                   "benign_refusal_rate": 0.9}]) is None


def test_best_gold_beta():
    rows = [ppo(0.01, gold=-0.4), ppo(0.1, gold=0.6), ppo(1.0, gold=0.3), ppo(5.0, gold=0.6),
            {"kind": "ppo_adaptive", "label": "adaptive", "beta": 0.05, "kl": 1.0, "gold_reward": 9.0}]
    assert best_gold_beta(rows) == 5.0  # tie with 0.1 goes to the larger β; adaptive is not a fixed β
    assert best_gold_beta([ppo(0.1)]) is None


def test_row_sqrt_kl_and_frontier_fits():
    assert row_sqrt_kl({"kl": 4.0}) == 2.0
    assert row_sqrt_kl({"kl": -0.01}) == 0.0  # a sampled KL estimate below zero
    assert row_sqrt_kl({"kl": 4.0, "sqrt_kl": 1.9}) == 1.9
    d = [0.5, 1.0, 2.0]
    rows = [{"kind": "ppo", "label": f"p{i}", "beta": 1.0 / (i + 1), "kl": x * x,
             "gold_delta": x * (0.6 - 0.7 * math.log(x)), "proxy_delta": 2 * x} for i, x in enumerate(d)]
    rows += [{"kind": "bon", "label": f"b{i}", "n": 2 ** i, "kl": x * x, "gold_delta": x * (0.8 - 0.3 * x),
              "proxy_delta": None} for i, x in enumerate(d)]
    fits = frontier_fits(rows)
    assert set(fits) == {"gold_rl", "gold_bon", "proxy_rl"}  # no proxy on the bon rows
    assert fits["gold_rl"].beta == pytest.approx(0.7) and fits["gold_bon"].alpha == pytest.approx(0.8)
    findings = sweep_findings(rows)
    assert findings["refusal_threshold"] == 0.2
    assert findings["predicted_peak_sqrt_kl"]["gold_rl"] == pytest.approx(math.exp(0.6 / 0.7 - 1))


def test_kl_regularised_optimum_by_hand():
    # two samples per prompt with r = 0 and r = β ln 3: weights ¼ and ¾
    beta = 0.5
    scores = np.array([[0.0, beta * math.log(3)]])
    row = kl_regularised_optimum(scores, beta, utilities=np.array([[1.0, -1.0]]))
    assert row["kl"] == pytest.approx(0.25 * math.log(0.5) + 0.75 * math.log(1.5))
    assert row["proxy_reward"] == pytest.approx(0.75 * beta * math.log(3))
    assert row["gold_reward"] == pytest.approx(0.25 - 0.75)
    assert row["kl_limit"] == pytest.approx(math.log(2)) and row["sqrt_kl"] == pytest.approx(math.sqrt(row["kl"]))


def test_kl_regularised_optimum_limits():
    scores = np.random.default_rng(0).normal(size=(16, 64))
    loose, tight = kl_regularised_optimum(scores, 1e-4), kl_regularised_optimum(scores, 1e4)
    # β → 0: best-of-n (all weight on the argmax, KL = log n); β → ∞: the reference itself
    assert loose["kl"] == pytest.approx(math.log(64)) and loose["proxy_reward"] == pytest.approx(scores.max(1).mean())
    assert tight["kl"] == pytest.approx(0.0, abs=1e-6) and tight["proxy_reward"] == pytest.approx(scores.mean(), abs=1e-3)
    assert tight["gold_reward"] is None
    kls = [kl_regularised_optimum(scores, b)["kl"] for b in (0.1, 0.5, 1.0, 5.0)]
    assert kls == sorted(kls, reverse=True)
