"""Each rule of `tether.analysis.findings` at and around its threshold, on hand-made rows.

Numbers are binary fractions (0.25, 0.75, …) where a rule compares a difference with its
threshold, so "at the threshold" is exact and not a rounding accident.
"""

import inspect

import pytest

from tether.analysis.findings import (EXTRAPOLATION_FACTOR, FILLER_RISE, NEAR_REFERENCE_KL, OPTIMUM_LIMIT_SHARE,
                                      MIN_FIT_POINTS, MIN_FIT_R2, REFUSAL_THRESHOLD, REPETITION_RISE, decide_findings, is_hacked, peak_status,
                                      reward_delta, safe_but_useless_beta, sweep_findings)
from tether.analysis.frontier import Fit
from tether.analysis.plots import plot_detectors

SFT = {"proxy_reward": 0.0, "gold_reward": 0.0, "benign_refusal_rate": 0.0, "filler_per_response": 0.25,
       "repetition_rate": 0.0, "mean_length": 10.0}


def ppo(beta, **fields) -> dict:
    return {"kind": "ppo", "label": f"β={beta:g}", "beta": beta, "kl": 1.0, **fields}


def decide(*rows, sft=SFT, **blocks):
    return decide_findings({"rows": list(rows), "sft_baseline": dict(sft), **blocks})


def test_the_thresholds_keep_their_values_and_are_the_defaults():
    assert (REFUSAL_THRESHOLD, FILLER_RISE, REPETITION_RISE, NEAR_REFERENCE_KL, EXTRAPOLATION_FACTOR,
            OPTIMUM_LIMIT_SHARE) == (0.2, 0.5, 0.1, 0.1, 10.0, 0.9)
    assert inspect.signature(safe_but_useless_beta).parameters["threshold"].default is REFUSAL_THRESHOLD
    assert inspect.signature(sweep_findings).parameters["refusal_threshold"].default is REFUSAL_THRESHOLD
    assert inspect.signature(plot_detectors).parameters["refusal_threshold"].default is REFUSAL_THRESHOLD
    assert decide(ppo(1.0)).refusals.threshold == REFUSAL_THRESHOLD


@pytest.mark.parametrize("rate, hack", [(0.1875, False), (0.2, False), (0.25, True)])
def test_safe_but_useless_is_strictly_above_the_threshold(rate, hack):
    f = decide(ppo(0.1, benign_refusal_rate=rate), ppo(1.0, benign_refusal_rate=0.0))
    assert f.refusals.hack is hack and (f.refusals.onset is not None) is hack
    assert f.refusals.worst["beta"] == 0.1 and ("refusal" in f.readable_hacks) is hack


def test_safe_but_useless_begins_at_the_largest_beta_over_the_threshold_the_sweep_used():
    rows = [ppo(0.01, benign_refusal_rate=0.75), ppo(0.1, benign_refusal_rate=0.375), ppo(1.0, benign_refusal_rate=0.0)]
    assert decide(*rows).refusals.onset["beta"] == 0.1
    assert decide(*rows).refusals.worst["beta"] == 0.01
    assert decide(*rows, findings={"refusal_threshold": 0.5}).refusals.onset["beta"] == 0.01
    assert decide(*rows, findings={"refusal_threshold": 0.75}).refusals.onset is None
    assert decide(ppo(1.0)).refusals.worst is None  # not measured


@pytest.mark.parametrize("sft_rate, above", [(0.1875, False), (0.2, False), (0.25, True), (None, False)])
def test_an_sft_policy_that_already_refuses_is_flagged(sft_rate, above):
    refusals = decide(ppo(1.0, benign_refusal_rate=0.5), sft={**SFT, "benign_refusal_rate": sft_rate}).refusals
    assert refusals.sft_above is above and refusals.sft_rate == sft_rate


@pytest.mark.parametrize("filler, rose", [(0.5, False), (0.75, True), (1.0, True)])  # SFT 0.25, rise 0.5
def test_verbosity_is_a_filler_rise_of_at_least_filler_rise(filler, rose):
    f = decide(ppo(0.1, filler_per_response=filler), ppo(1.0, filler_per_response=0.25))
    assert f.filler.rose is rose and f.filler.worst["beta"] == 0.1 and f.filler.sft_value == 0.25
    assert ("filler" in f.readable_hacks) is rose


@pytest.mark.parametrize("repetition, rose", [(0.09375, False), (0.1, True), (0.125, True)])  # SFT 0, rise 0.1
def test_degenerate_repetition_is_a_rise_of_at_least_repetition_rise(repetition, rose):
    f = decide(ppo(0.1, repetition_rate=repetition))
    assert f.repetition.rose is rose and ("repetition" in f.readable_hacks) is rose


def test_a_rise_is_not_decided_when_either_side_is_unmeasured():
    rise = decide(ppo(0.1, filler_per_response=9.0), sft={}).filler
    assert rise.worst is None and rise.rose is False
    assert decide(ppo(0.1)).repetition.worst is None and decide(ppo(0.1)).repetition.rose is False


def test_readable_hacks_keep_their_order():
    f = decide(ppo(0.1, benign_refusal_rate=0.5, filler_per_response=2.0, repetition_rate=0.5))
    assert f.readable_hacks == ["refusal", "filler", "repetition"]
    assert decide(ppo(0.1)).readable_hacks == []


@pytest.mark.parametrize("proxy, gold, hacked", [
    (0.25, -0.25, True), (0.0, -0.25, False), (0.25, 0.0, False), (-0.25, -0.25, False), (0.25, None, False)])
def test_a_run_is_hacked_when_proxy_rose_and_gold_fell_below_sft(proxy, gold, hacked):
    row = ppo(0.1, proxy_reward=proxy, gold_reward=gold)
    assert is_hacked(row, SFT) is hacked


def test_reward_delta_prefers_the_stored_delta():
    assert reward_delta({"gold_delta": 0.5, "gold_reward": 9.0}, SFT, "gold") == 0.5
    assert reward_delta({"gold_reward": 0.75}, {"gold_reward": 0.25}, "gold") == 0.5
    assert reward_delta({"gold_reward": 0.75}, {}, "gold") is None


def test_overoptimisation_needs_the_top_proxy_and_gold_below_sft_at_the_smallest_beta():
    rows = [ppo(0.01, proxy_reward=1.0, gold_reward=-0.5), ppo(0.1, proxy_reward=0.5, gold_reward=-0.25),
            ppo(1.0, proxy_reward=0.25, gold_reward=0.25)]
    o = decide(*rows).overoptimisation
    assert o.occurred and o.proxy_is_top and o.gold_fell and [r["beta"] for r in o.hacked] == [0.01, 0.1]
    tie = decide(ppo(0.01, proxy_reward=0.5, gold_reward=-0.5), ppo(1.0, proxy_reward=0.5, gold_reward=0.0))
    assert tie.overoptimisation.proxy_is_top and tie.overoptimisation.occurred  # a tie for the top proxy counts
    level = decide(ppo(0.01, proxy_reward=1.0, gold_reward=0.0)).overoptimisation
    assert not level.gold_fell and not level.occurred  # gold at SFT has not fallen
    beaten = decide(ppo(0.01, proxy_reward=0.5, gold_reward=-0.5), ppo(1.0, proxy_reward=0.75, gold_reward=0.0))
    assert not beaten.overoptimisation.proxy_is_top and beaten.overoptimisation.top_proxy["beta"] == 1.0
    assert decide(ppo(0.01, proxy_reward=1.0)).overoptimisation is None  # no gold


def test_best_gold_beta_and_whether_it_improved_on_sft():
    f = decide(ppo(0.1, gold_reward=0.5), ppo(1.0, gold_reward=0.5), ppo(5.0, gold_reward=0.25))
    assert f.best_gold.run.row["beta"] == 1.0 and f.best_gold.improved is True  # a tie goes to the larger β
    assert decide(ppo(1.0, gold_reward=0.0)).best_gold.improved is False  # equal to SFT is no improvement
    assert decide(ppo(1.0, gold_reward=0.5), sft={}).best_gold.improved is None  # no SFT gold to compare
    assert decide(ppo(1.0)).best_gold is None


@pytest.mark.parametrize("kl, near", [(0.09375, True), (NEAR_REFERENCE_KL, False), (0.125, False)])
def test_the_largest_beta_stays_near_the_reference_strictly_below_the_limit(kl, near):
    reference = decide(ppo(0.1, kl=5.0), ppo(2.0, kl=kl)).reference
    assert reference.row["beta"] == 2.0 and reference.near is near and reference.limit == NEAR_REFERENCE_KL


@pytest.mark.parametrize("d_max, status", [(2.0, "measured"), (1.25, "measured"), (1.0, "extrapolated"),
                                           (0.125, "extrapolated"), (0.0625, "out of reach")])
def test_peak_status_around_the_data_and_the_extrapolation_factor(d_max, status):
    fit = Fit("bon", alpha=2.5, beta=1.0, r2=1.0, n_points=4, d_max=d_max)  # peak d* = α / 2β = 1.25
    assert peak_status(fit) == status
    assert peak_status(Fit("rl", alpha=1.0, beta=-0.5, r2=1.0, n_points=4, d_max=1.0)) == "none"


@pytest.mark.parametrize("r2, status", [(None, "no fit"), (-0.02, "no fit"), (0.17, "no fit"),
                                       (MIN_FIT_R2 - 1e-9, "no fit"), (MIN_FIT_R2, "measured")])
def test_a_fit_with_poor_r2_is_no_fit(r2, status):
    assert peak_status(Fit("bon", alpha=2.5, beta=1.0, r2=r2, n_points=4, d_max=2.0)) == status


@pytest.mark.parametrize("n_points, status", [(2, "no fit"), (MIN_FIT_POINTS, "measured")])
def test_a_fit_through_two_points_is_no_fit_though_exact(n_points, status):
    """Two coefficients pass through any two points: R² = 1 there says nothing, and the summary says why."""
    from tether.analysis.findings import FitPeak
    from tether.analysis.summary import _fits_paragraph
    fit = Fit("rl", alpha=0.6, beta=0.7, r2=1.0, n_points=n_points, d_max=3.0)
    assert peak_status(fit) == status
    text = _fits_paragraph([FitPeak("gold_rl", fit, status, EXTRAPOLATION_FACTOR)])
    assert (f"has 2 points, fewer than the {MIN_FIT_POINTS} a fit needs: it predicts nothing" in text) == (n_points == 2)


def test_summary_says_a_poor_fit_predicts_nothing_and_names_its_curvature_kappa():
    from tether.analysis.findings import FitPeak
    from tether.analysis.summary import _fits_paragraph
    text = _fits_paragraph([FitPeak("gold_rl", Fit("rl", alpha=1.0, beta=0.5, r2=0.17, n_points=5, d_max=2.0),
                                    "no fit", EXTRAPOLATION_FACTOR)])
    assert "κ = 0.5" in text and "β =" not in text
    assert f"does not fit (R² under {MIN_FIT_R2:g}): it predicts nothing" in text and "peaks" not in text


def test_fit_peaks_are_the_gold_fits_in_order():
    fits = {name: Fit(kind, alpha=2.5, beta=1.0, r2=1.0, n_points=4, d_max=0.0625).as_dict()
            for name, kind in (("proxy_rl", "rl"), ("gold_bon", "bon"), ("gold_rl", "rl"))}
    peaks = decide(ppo(1.0), fits=fits).fit_peaks
    assert [p.name for p in peaks] == ["gold_rl", "gold_bon"]
    assert peaks[1].status == "out of reach" and peaks[1].reach_factor == EXTRAPOLATION_FACTOR


@pytest.mark.parametrize("kl, at_limit", [(0.875, False), (0.9, True), (1.0, True)])
def test_the_optimum_is_at_its_limit_from_a_share_of_log_n(kl, at_limit):
    optimum = [{"beta": 0.1, "kl": kl, "kl_limit": 1.0}, {"beta": 1.0, "kl": 0.25, "kl_limit": 1.0}]
    shown = decide(ppo(0.1), ppo(1.0), ppo(5.0), optimum=optimum).optimum
    assert [(c.row["beta"], c.at_limit) for c in shown] == [(1.0, False), (0.1, at_limit)]  # largest β first
    assert [c.row["beta"] for c in decide(ppo(0.1), optimum=optimum).optimum] == [0.1]
    assert decide(ppo(5.0), optimum=optimum).optimum == []


def test_best_of_n_peak_in_gold_when_measured_else_proxy():
    bon = [{"kind": "bon", "label": f"n={n}", "n": n, "kl": 1.0, "gold_delta": g, "proxy_delta": p}
           for n, g, p in ((2, 0.25, 0.25), (4, 0.5, 0.5), (8, 0.25, 0.75))]
    b = decide(ppo(1.0, gold_reward=0.125), *bon).best_of_n
    assert (b.reward, b.peak["n"], b.peak_gain, b.largest["n"], b.largest_gain) == ("gold", 4, 0.5, 8, 0.25)
    assert b.best_ppo["beta"] == 1.0 and b.best_ppo_gain == 0.125
    for row in bon:
        row["gold_delta"] = None
    b = decide(*bon, sft={}).best_of_n
    assert (b.reward, b.peak["n"], b.largest, b.best_ppo) == ("proxy", 8, None, None)  # the peak is the largest n


def test_other_runs_against_plain_ppo_at_their_beta():
    early = {"kind": "ppo_early_stop", "label": "early stop", "beta": 0.1, "kl": 0.5, "gold_reward": 0.5}
    f = decide(ppo(0.1, gold_reward=0.125), early)
    assert f.others == [early] and f.other_runs[0].gold_vs_plain == 0.375 and f.other_runs[0].run.gold_delta == 0.5
    assert decide(ppo(1.0, gold_reward=0.125), early).other_runs[0].gold_vs_plain is None  # no PPO run at β = 0.1


def test_reward_model_shortfall_against_the_ceiling():
    rm = decide(pipeline={"reward_model": {"accuracy": 0.75, "n_pairs": 600, "ceiling": 0.875}}).reward_model
    assert (rm.accuracy, rm.n_pairs, rm.ceiling, rm.shortfall_points) == (0.75, 600, 0.875, 12.5)
    assert decide(pipeline={"reward_model": {"accuracy": 0.75}}).reward_model.shortfall_points is None
    assert decide(pipeline={"reward_model": {"loss": 0.5}}).reward_model is None


def test_methods_on_one_frontier_compare_gold_at_a_common_kl_and_name_who_peaks_first():
    """Two methods with three β each (hand-made rows): PPO's gold rises then falls, DPO's falls from the start while
    its margin and proxy rise; each gets its own fit, compared at the smaller of their largest √KL."""
    from tether.analysis.findings import decide_findings
    sft = {"proxy_reward": 0.0, "gold_reward": 0.0}
    row = lambda kind, beta, kl, gold, proxy, **kw: {"kind": kind, "label": f"{kind} {beta}", "beta": beta, "kl": kl,
                                                    "gold_reward": gold, "proxy_reward": proxy, "gold_delta": gold,
                                                    "proxy_delta": proxy, **kw}
    rows = [row("ppo", 1.0, 1.0, 0.5, 0.5), row("ppo", 0.1, 4.0, 0.8, 1.0), row("ppo", 0.01, 16.0, 0.2, 2.0),
            row("dpo", 1.0, 0.25, 0.3, 0.2, dpo_margin=1.0), row("dpo", 0.3, 1.0, 0.1, 0.4, dpo_margin=2.0),
            row("dpo", 0.1, 4.0, -0.5, 0.9, dpo_margin=5.0)]
    m = decide_findings({"rows": rows, "sft_baseline": sft}).methods
    by_kind = {p.kind: p for p in m.points}
    assert set(by_kind) == {"ppo", "dpo"} and m.common_sqrt_kl == 2.0  # DPO measured up to √4
    assert by_kind["ppo"].best.row["beta"] == 0.1 and by_kind["dpo"].best.row["beta"] == 1.0
    assert by_kind["dpo"].smallest_beta_hacked and by_kind["ppo"].smallest_beta_hacked
    assert by_kind["ppo"].gold_at_common == pytest.approx(float(by_kind["ppo"].fit.predict(2.0)))
    assert m.most_gold_at_common == "ppo" and m.first_to_peak == "dpo"
    assert by_kind["dpo"].fit.peak_d < by_kind["ppo"].fit.peak_d


def dpo_row(beta, dpo_accuracy, rm_accuracy=0.25, rm_n_pairs=6, **fields) -> dict:
    return {"kind": "dpo", "label": f"DPO β={beta:g}", "beta": beta, "kl": 1.0, "dpo_margin": beta, "dpo_accuracy": dpo_accuracy,
            "rm_margin": 0.5, "rm_accuracy": rm_accuracy, "rm_n_pairs": rm_n_pairs, **fields}


@pytest.mark.parametrize("n, verdict", [(6, "as many"), (7, "more")])
def test_dpo_ranks_more_held_out_pairs_than_the_reward_model_beyond_two_standard_errors(n, verdict):
    """Best DPO 0.75 against the reward model's 0.25: SE = √((0.75·0.25 + 0.25·0.75)/n), at n = 6 exactly 0.25,
    so the gap 0.5 sits on 2 SE (as many); one pair more and it is beyond (more)."""
    from tether.analysis.findings import RANKING_STANDARD_ERRORS
    assert RANKING_STANDARD_ERRORS == 2.0
    r = decide(dpo_row(1.0, 0.75, rm_n_pairs=n), dpo_row(0.1, 0.5, rm_n_pairs=n), ppo(0.1)).implicit_ranking
    assert [run["beta"] for run in r.runs] == [0.1, 1.0] and r.best["beta"] == 1.0
    assert (r.gap, r.rm_accuracy, r.rm_margin, r.n_pairs) == (0.5, 0.25, 0.5, n)
    assert r.standard_error == pytest.approx((0.375 / n) ** 0.5) and r.verdict == verdict


def test_dpo_ranking_fewer_pairs_and_the_rows_without_the_reward_models_numbers():
    assert decide(dpo_row(1.0, 0.25, rm_accuracy=0.75, rm_n_pairs=7)).implicit_ranking.verdict == "fewer"
    assert decide(dpo_row(1.0, 0.5, rm_accuracy=0.5, rm_n_pairs=None)).implicit_ranking.verdict == "as many"  # no n: equal only
    assert decide(dpo_row(1.0, 0.5, rm_accuracy=0.25, rm_n_pairs=None)).implicit_ranking.standard_error is None
    old = {k: v for k, v in dpo_row(1.0, 0.75).items() if not k.startswith("rm_")}  # a sweep.json from before the fields
    assert decide(old, ppo(0.1)).implicit_ranking is None
