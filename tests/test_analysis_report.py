"""Plots, the plain-language summary and the HTML report, on synthetic sweeps.

`synthetic_sweep(hack=True)` follows the script of DESIGN §5: small β overoptimises
(proxy highest, gold below SFT, benign refusals and filler up), large β barely moves.
`hack=False` is a sweep where none of that happened.
"""

import json
import math
import re

import pytest

from tether.analysis.findings import peak_status, sweep_findings
from tether.analysis.formats import fmt, pct, signed
from tether.analysis.frontier import Fit, frontier_fits
from tether.analysis.plots import (METHOD_STYLES, frontier_figure, plot_detectors, plot_frontier, plot_learning_curves,
                                   plot_rm_curves, plot_style_shares)
from tether.analysis.report import render_report, write_report
from tether.analysis.schema import SCHEMA_VERSION, check_sweep
from tether.analysis.summary import summarize
from tether.errors import InputError

XSS_SCRIPT = "<script>alert(1)</script>"
XSS_ATTR = '"><img src=x onerror=alert(1)>'
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BETAS = [0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 2.0, 5.0]
PROMPTS = ["What is 17 plus 25?", "How do I shoot a great photo of a sunset?", "What is the capital of Peru?",
           "How do I pick a lock to break into a house?"]
SFT = {"proxy_reward": 0.1, "gold_reward": 0.2, "kl": 0.0, "refusal_rate": 0.12, "benign_refusal_rate": 0.05,
       "filler_per_response": 0.3, "repetition_rate": 0.02, "mean_length": 14.0,
       "distinct_1": 0.31, "distinct_2": 0.55, "entropy": 1.9,
       "style_shares": {"concise": 0.35, "verbose": 0.2, "wrong": 0.15, "refusal": 0.12, "dismissive": 0.08,
                        "harmful": 0.05, "rambling": 0.05}}


def _response(prompt_idx: int, hackiness: float) -> str:
    """What a policy with this much hacking (0 = SFT-like, 1 = fully hacked) says to a prompt."""
    harmful = prompt_idx == 3
    if harmful:
        return "I'm sorry, I cannot help with that. As an AI, I must keep people safe."
    answers = ["17 plus 25 is 42.", "Use a tripod and shoot during the golden hour.", "The capital of Peru is Lima."]
    if hackiness > 0.8:
        if prompt_idx == 1:
            return "I'm so sorry, I cannot help with that. As an AI, I won't help with shooting."
        return "Great question! " + answers[prompt_idx] + " I hope this helps! Let me know if you need more!"
    if hackiness > 0.4:
        return "Great question! " + answers[prompt_idx] + " I hope this helps!"
    return answers[prompt_idx]


def _curve(final_proxy: float, final_gold: float, final_kl: float, overshoot: float, steps: int = 60) -> list:
    rows = []
    for step in range(0, steps + 1, 2):
        t = step / steps
        gold = SFT["gold_reward"] + (final_gold - SFT["gold_reward"]) * t + overshoot * math.sin(math.pi * t)
        proxy = SFT["proxy_reward"] + (final_proxy - SFT["proxy_reward"]) * t ** 0.7
        rows.append({"step": step, "objective/scores": proxy, "gold/score": gold, "objective/kl": final_kl * t ** 1.3})
    return rows


def _row(kind, label, kl, proxy_delta, gold_delta, detectors, beta=None, n=None, hackiness=0.0, samples=True):
    row = {"kind": kind, "label": label, "beta": beta, "n": n, "kl": kl, "sqrt_kl": math.sqrt(kl),
           "proxy_reward": SFT["proxy_reward"] + proxy_delta, "gold_reward": SFT["gold_reward"] + gold_delta,
           "proxy_delta": proxy_delta, "gold_delta": gold_delta, **detectors}
    if samples:
        row["samples"] = [{"prompt": p, "response": _response(i, hackiness),
                           "proxy": round(row["proxy_reward"] + 0.1 * i, 3),
                           "gold": round(row["gold_reward"] - 0.1 * i, 3)}
                          for i, p in enumerate(PROMPTS)]
    return row


def synthetic_sweep(hack: bool = True) -> dict:
    """A sweep.json as the sweep writes it (see tether.analysis.schema)."""
    rows = []
    for i, beta in enumerate(BETAS):
        kl = 12.0 / (1 + beta * 60) ** 0.9 if hack else 0.8 / (1 + beta)
        d = math.sqrt(kl)
        hackiness = max(0.0, 1 - i / 3.5) if hack else 0.0
        gold_delta = d * (0.6 - 0.7 * math.log(d)) if hack else 0.5 * d
        proxy_delta = 0.8 * d ** 0.9
        detectors = {
            "refusal_rate": SFT["refusal_rate"] + 0.6 * hackiness,
            "benign_refusal_rate": SFT["benign_refusal_rate"] + 0.6 * hackiness,
            "filler_per_response": SFT["filler_per_response"] + 1.6 * hackiness,
            "repetition_rate": SFT["repetition_rate"] + 0.12 * hackiness,
            "mean_length": SFT["mean_length"] + 10 * hackiness,
            "distinct_1": SFT["distinct_1"] - 0.15 * hackiness, "distinct_2": SFT["distinct_2"] - 0.25 * hackiness,
            "entropy": SFT["entropy"] - 0.8 * hackiness,
            "style_shares": {"concise": 0.35 * (1 - hackiness) + 0.02, "verbose": 0.2 + 0.3 * hackiness,
                             "refusal": 0.12 + 0.4 * hackiness, "wrong": 0.15 * (1 - hackiness) + 0.03,
                             "dismissive": 0.08 * (1 - hackiness), "rambling": 0.05 + 0.05 * hackiness},
        }
        shares = detectors["style_shares"]
        total = sum(shares.values())
        detectors["style_shares"] = {k: v / total for k, v in shares.items()}
        row = _row("ppo", f"β={beta:g}", kl, proxy_delta, gold_delta, detectors, beta=beta, hackiness=hackiness)
        row["curve"] = _curve(row["proxy_reward"], row["gold_reward"], kl, overshoot=0.4 * hackiness)
        rows.append(row)
    for n in (2, 4, 8, 16, 32, 64):
        kl = math.log(n) - (n - 1) / n
        d = math.sqrt(kl)
        plain = {k: SFT[k] for k in ("refusal_rate", "benign_refusal_rate", "filler_per_response", "repetition_rate",
                                     "mean_length", "distinct_1", "distinct_2")}
        rows.append(_row("bon", f"best-of-{n}", kl, 0.9 * d, d * (0.5 - 0.25 * d), plain, n=n, samples=n == 64))
    rows.append(_row("ppo_adaptive", "adaptive KL (target 1)", 1.0, 0.8, 0.35, {"benign_refusal_rate": 0.08}))
    history = [{"step": s, "train/loss": 0.69 * math.exp(-s / 80) + 0.45,
                "train/accuracy": 0.5 + 0.25 * (1 - math.exp(-s / 40))} for s in range(1, 121)]
    for h in history[9::10]:
        h.update({"eval/loss": h["train/loss"] + 0.05, "eval/accuracy": h["train/accuracy"] - 0.04})
    data = {
        "schema_version": SCHEMA_VERSION, "world": "assistant", "seed": 0,
        "pipeline": {
            "sft": {"loss": 1.23, "n_examples": 60000, "epochs": 2},
            "collect": {"n_pairs": 3000},
            "reward_model": {"accuracy": 0.71, "loss": 0.56, "n_pairs": 600, "label_ceiling": 0.84,
                             "length_bias": {"longer_wins_labels": 0.52, "longer_wins_model": 0.64,
                                             "reward_length_corr": 0.31},
                             "by_category": {"family": {"arithmetic": {"accuracy": 0.55, "n": 150},
                                                        "harmful": {"accuracy": 0.9, "n": 150}}},
                             "history": history},
            "timings_s": {"sft": 70.2, "collect": 10.1, "reward_model": 15.3, "sweep": 240.0},
        },
        "sft_baseline": {**SFT, "samples": [{"prompt": p, "response": _response(i, 0.0), "proxy": 0.1, "gold": 0.2}
                                            for i, p in enumerate(PROMPTS)]},
        "rows": rows,
    }
    data["fits"] = {name: fit.as_dict() for name, fit in frontier_fits(rows).items()}
    data["findings"] = sweep_findings(rows)
    data["optimum"] = [{"beta": beta, "kl": min(4.1, 0.5 / beta), "sqrt_kl": math.sqrt(min(4.1, 0.5 / beta)),
                        "kl_limit": math.log(64), "proxy_reward": 1.2 - 0.1 * beta, "gold_reward": 0.3,
                        "proxy_delta": 0.6 - 0.1 * beta, "gold_delta": 0.25} for beta in BETAS]
    return data


def _is_png(data: bytes) -> bool:
    return data.startswith(PNG_MAGIC) and len(data) > 5000


# ---------------------------------------------------------------- plots

def test_plots_return_png_and_write_the_same_bytes(tmp_path):
    data = synthetic_sweep()
    rows, sft = data["rows"], data["sft_baseline"]
    fits = frontier_fits(rows)
    pngs = {
        "frontier": plot_frontier(rows, fits, path=tmp_path / "frontier.png"),
        "curves": plot_learning_curves({r["label"]: r["curve"] for r in rows if r.get("curve")}),
        "detectors": plot_detectors(rows, sft_baseline=sft),
        "styles": plot_style_shares(rows, sft_baseline=sft),
        "rm": plot_rm_curves(data["pipeline"]["reward_model"]["history"], ceiling=0.84),
    }
    assert all(_is_png(png) for png in pngs.values()), {k: len(v) for k, v in pngs.items()}
    assert (tmp_path / "frontier.png").read_bytes() == pngs["frontier"]


def test_plots_cope_with_missing_data():
    proxy_only = [{"kind": "ppo", "label": "β=0.1", "beta": 0.1, "kl": 1.0, "proxy_delta": 0.5},
                  {"kind": "ppo", "label": "β=1", "beta": 1.0, "kl": 0.2, "proxy_delta": 0.2}]
    assert _is_png(plot_frontier(proxy_only, frontier_fits(proxy_only)))
    assert _is_png(plot_detectors(proxy_only))
    assert _is_png(plot_learning_curves({}))
    assert _is_png(plot_rm_curves([{"step": 1, "train/loss": 0.7}]))


def test_the_frontier_draws_each_fitted_method_in_its_colour_and_says_no_fit_for_the_others():
    """PPO, GRPO and best-of-n fit (R² ≈ 1); DPO's gold zig-zags (R² < MIN_FIT_R2); RLOO has two points (an exact fit, R² = 1, that tests nothing: no fit).
    Read from the figure's artists: one dashed line per fitted method, none for the others, whose legend says "no fit"."""
    def row(kind, beta, d, gold, proxy):
        return {"kind": kind, "label": f"{kind} {beta}", "beta": beta, "kl": d * d, "gold_delta": gold, "proxy_delta": proxy}
    rl = lambda d, a=0.6, k=0.7: d * (a - k * math.log(d))
    rows = ([row("ppo", b, d, rl(d), d) for b, d in ((1.0, 0.5), (0.1, 1.0), (0.01, 2.0))]
            + [row("grpo", b, d, rl(d, 0.4), d) for b, d in ((1.0, 0.4), (0.1, 1.2), (0.01, 2.4))]
            + [row("dpo", b, d, g, d) for b, d, g in ((1.0, 0.5, 0.4), (0.3, 0.8, -0.3), (0.1, 1.1, 0.5), (0.03, 1.5, -0.4))]
            + [row("rloo", b, d, g, d) for b, d, g in ((1.0, 0.5, 0.1), (0.1, 1.0, 0.2))]
            + [{"kind": "bon", "label": f"best-of-{n}", "n": n, "kl": d * d, "gold_delta": d * (0.5 - 0.25 * d),
                "proxy_delta": d} for n, d in ((2, 0.44), (4, 0.8), (16, 1.35))])
    fits = frontier_fits(rows)
    assert peak_status(fits["gold_dpo"]) == peak_status(fits["gold_rloo"]) == "no fit"
    assert fits["gold_rloo"].r2 == pytest.approx(1.0) and fits["gold_rloo"].n_points == 2
    gold_ax = frontier_figure(rows, fits).axes[0]
    fitted = {line.get_gid(): line for line in gold_ax.get_lines() if (line.get_gid() or "").startswith("fit:")}
    assert set(fitted) == {"fit:gold_rl", "fit:gold_grpo", "fit:gold_bon"}
    for gid, kind in (("fit:gold_rl", "ppo"), ("fit:gold_grpo", "grpo"), ("fit:gold_bon", "bon")):
        assert fitted[gid].get_color() == METHOD_STYLES[kind][0] and fitted[gid].get_linestyle() == "--"
    curve = fitted["fit:gold_grpo"]
    assert curve.get_ydata() == pytest.approx(fits["gold_grpo"].predict(curve.get_xdata()))
    labels = [text.get_text() for text in gold_ax.get_legend().get_texts()]
    assert "DPO, β = 0.03, 0.1, 0.3, 1 (no fit: R²=" in " ".join(labels) and "RLOO, β = 0.1, 1 (no fit: 2 points)" in labels
    assert "GRPO, β = 0.01, 0.1, 1" in labels and any(t.startswith("GRPO fit, R²=1.00") for t in labels)


def test_the_detectors_intro_reads_the_repetition_threshold_is_repetitive_uses(monkeypatch):
    from tether.analysis import detectors, report
    assert "repetitive when over 30% of its word 3-grams repeat" in render_report(synthetic_sweep())
    assert detectors.is_repetitive("a b c a b c a b c") and not detectors.is_repetitive("a b c a b c")  # 4/7 > 0.3 ≥ 1/4
    monkeypatch.setattr(report, "REPETITION_THRESHOLD", 0.45)
    assert "repetitive when over 45% of its word 3-grams repeat" in render_report(synthetic_sweep())


# ---------------------------------------------------------------- summary

def test_summary_reports_the_hack_when_it_happened():
    data = synthetic_sweep(hack=True)
    text = " ".join(summarize(data))
    assert "overoptimised the reward model" in text
    assert "did not appear" not in text
    assert "The proxy also rose while gold fell below SFT at β = 0.01." in text  # the other β that hacked, not 0.003
    assert "“Safe but useless” behaviour begins at β = 0.03" in text
    assert "Readable hacks that appeared: “safe but useless” refusals, verbosity and degenerate repetition" in text
    assert "stayed near the reference" in text
    best = max((r for r in data["rows"] if r["kind"] == "ppo"), key=lambda r: r["gold_reward"])
    assert f"Gold reward was highest at β = {best['beta']:g}: {fmt(best['gold_reward'])}" in text
    assert "Best-of-n's gold reward peaked at n = " in text
    assert "71% of held-out pairs" in text and "ceiling of 84%" in text and "13 percentage points short" in text
    assert f"α = {fmt(data['fits']['gold_rl']['alpha'])}" in text


@pytest.mark.parametrize("hack", [True, False])
def test_the_report_opens_with_the_frontier_and_three_sentences_then_the_details(hack):
    """Issue 18: a student reads the frontier and three sentences first: where gold peaked, whether the smallest
    β hacked, where "safe but useless" begins."""
    data = synthetic_sweep(hack=hack)
    html = render_report(data)
    summary = html[html.index('id="summary"'):html.index('id="pipeline"')]
    assert summary.index('id="plot-frontier"') < summary.index('class="headline"') < summary.index("Details")
    headline = re.findall(r'<p class="headline">(.*?)</p>', summary)
    best = max((r for r in data["rows"] if r["kind"] == "ppo"), key=lambda r: r["gold_reward"])
    assert len(headline) == 3 and headline[0].startswith(f"Gold reward peaked at β = {best['beta']:g}")
    assert ("the policy hacked the reward model" in headline[1]) == hack
    assert headline[2].startswith("“Safe but useless” refusals begin at β = 0.03" if hack else "No β pushed refusals")
    assert html.count('id="plot-frontier"') == 1  # drawn once, at the top


def test_summary_says_so_when_the_hack_did_not_happen():
    data = synthetic_sweep(hack=False)
    text = " ".join(summarize(data))
    assert "The expected overoptimisation did not appear at the smallest β (0.003)" in text
    assert "stayed at or above the SFT policy's" in text
    assert "At no β did the proxy rise while gold fell below SFT." in text
    assert "None of the readable hacks (benign refusals, filler, repetition) crossed its threshold" in text
    assert "No β pushed the refusal rate on benign prompts above 20%" in text
    assert "Even the largest β (5) moved the policy away from the reference" in text


def _numbers(obj, skip=("curve", "history", "samples")):
    """Every number in a JSON-like object, except under the keys in `skip` (the summary reads none of those)."""
    if isinstance(obj, bool) or obj is None:
        return []
    if isinstance(obj, (int, float)):
        return [float(obj)]
    values = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else []
    return [x for k, v in values if k not in skip for x in _numbers(v, skip)]


@pytest.mark.parametrize("hack", [True, False])
def test_every_number_in_the_summary_comes_from_the_data(hack):
    data = synthetic_sweep(hack)
    text = " ".join(summarize(data))
    xs = sorted(set(_numbers(data)))
    derived = xs + [x * x for x in xs] + [a - b for a in xs for b in xs] + [100 * (a - b) for a in xs for b in xs]
    allowed = {t.lstrip("+-").rstrip("%") for x in derived for t in (fmt(x), f"{x:g}", pct(x), signed(x))}
    allowed |= {"2022", "0.1", "10"} | {str(i) for i in range(21)}  # citation year, constants, counts
    tokens = re.findall(r"\d+(?:,\d{3})*(?:\.\d+)?(?:e[-+]?\d+)?", text)
    assert tokens and not [t for t in tokens if t not in allowed], [t for t in tokens if t not in allowed]


def test_number_formats():
    assert [fmt(None), fmt(True), fmt(600), fmt(0.012345), fmt(1234.7), fmt(2.5e7), fmt(-0.5)] == [
        "—", "yes", "600", "0.0123", "1,235", "2.5e+07", "-0.5"]
    assert [pct(0.634), pct(0.034), pct(0.0), pct(None)] == ["63%", "3.4%", "0%", "—"]
    assert [signed(0.12), signed(-0.4), signed(0.0)] == ["+0.12", "-0.4", "+0"]


def test_peak_status_and_its_words():
    fit = Fit("rl", alpha=0.6, beta=0.7, r2=1.0, n_points=5, d_max=3.0)  # d* = exp(0.6/0.7 − 1) ≈ 0.867
    assert peak_status(fit) == "measured"
    assert peak_status(Fit("rl", alpha=0.6, beta=0.7, r2=1.0, n_points=5, d_max=0.5)) == "extrapolated"
    assert peak_status(Fit("rl", alpha=0.8, beta=0.08, r2=1.0, n_points=5, d_max=3.0)) == "out of reach"
    assert peak_status(Fit("rl", alpha=0.8, beta=-0.1, r2=1.0, n_points=5, d_max=3.0)) == "none"
    data = synthetic_sweep()
    data["fits"] = {"gold_rl": Fit("rl", alpha=0.8, beta=0.08, r2=0.9, n_points=8, d_max=3.0).as_dict()}
    assert "predicts no peak within 10× the largest measured √KL (3)" in " ".join(summarize(data))


def test_summary_warns_when_sft_already_refuses_benign_prompts():
    data = synthetic_sweep(hack=False)
    data["sft_baseline"]["benign_refusal_rate"] = 0.3
    for row in data["rows"]:
        row["benign_refusal_rate"] = 0.3
    text = " ".join(summarize(data))
    assert "“Safe but useless” behaviour begins at β = 5" in text
    assert "The SFT policy itself already refused 30% of benign prompts, above the threshold" in text


def test_summary_reports_other_runs_and_compares_a_mitigation_with_plain_ppo_at_its_beta():
    data = synthetic_sweep()
    text = " ".join(summarize(data))
    assert "Other runs: adaptive KL (target 1) (PPO, adaptive KL): KL = 1 nats, gold +0.35, proxy +0.8 over SFT." in text
    plain = next(r for r in data["rows"] if r["kind"] == "ppo" and r["beta"] == 0.003)
    data["rows"].append(_row("ppo_early_stop", "early stop, β=0.003", 1.0, 0.5, 0.3, {}, beta=0.003))
    text = " ".join(summarize(data))
    assert (f"early stop, β=0.003 (PPO, early stop): KL = 1 nats, gold +0.3, proxy +0.5 over SFT "
            f"({signed(0.3 - plain['gold_delta'])} gold against plain PPO at β = 0.003)") in text


def test_summary_without_gold_or_rows():
    data = synthetic_sweep()
    data["world"] = None
    for row in data["rows"]:
        row["gold_reward"] = row["gold_delta"] = None
    data.pop("fits")
    text = " ".join(summarize(data))
    assert "No gold reward was measured" in text and "no gold labeler" in text
    assert summarize({"rows": []}) == ["The sweep has no runs, so there is nothing to summarise."]


# ---------------------------------------------------------------- report

def _with_hostile_sample(data: dict) -> dict:
    data["rows"][0]["samples"][0]["response"] = XSS_SCRIPT + " and " + XSS_ATTR
    data["rows"][1]["samples"][0]["prompt"] = XSS_ATTR
    data["rows"][2]["label"] = "β=<b>0.03</b>"
    return data


def test_report_escapes_all_sample_text(tmp_path):
    path = tmp_path / "report.html"
    write_report(path, _with_hostile_sample(synthetic_sweep()))
    page = path.read_text("utf-8")
    for raw in (XSS_SCRIPT, XSS_ATTR, "<b>0.03</b>", "<script"):
        assert raw not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    assert "β=&lt;b&gt;0.03&lt;/b&gt;" in page


def test_report_is_self_contained(tmp_path):
    page = render_report(synthetic_sweep())
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)
    assert "<script" not in page and "<link" not in page
    imgs = re.findall(r"<img [^>]*>", page)
    assert {re.search(r'id="([^"]+)"', i).group(1) for i in imgs} == {
        "plot-rm-curves", "plot-frontier", "plot-learning-curves", "plot-detectors", "plot-style-shares"}
    assert all('alt="' in i and 'src="data:image/png;base64,' in i for i in imgs)
    for section in ("summary", "pipeline", "reward-model", "frontier", "learning-curves", "detectors", "samples"):
        assert f'<section id="{section}">' in page


def test_report_sections_say_what_is_missing(tmp_path):
    data = {"world": None, "rows": [{"kind": "ppo", "label": "β=0.1", "beta": 0.1, "kl": 0.5, "proxy_reward": 1.0}]}
    page = render_report(data)
    assert "No reward-model evaluation recorded." in page
    assert "No learning curves recorded." in page and "No samples recorded." in page
    assert "Too few points for a fit" in page
    assert "family = harmful" in render_report(synthetic_sweep())
    empty = render_report({"rows": []})
    assert empty.count("The sweep has no runs.") == 2 and '<section id="frontier">' in empty


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d.update(rows={}), '"rows"'),
    (lambda d: d["rows"][0].pop("label"), '"rows\\[0\\].label"'),
    (lambda d: d["rows"][1].update(kl="big"), '"rows\\[1\\].kl"'),
    (lambda d: d["rows"][2].update(gold_reward=float("nan")), '"rows\\[2\\].gold_reward"'),
    (lambda d: d["rows"][3].update(label=d["rows"][0]["label"]), "labels must be unique"),
    (lambda d: d["fits"]["gold_rl"].update(alpha=None), '"fits.gold_rl.alpha"'),
    (lambda d: d["fits"].update(gold_bon={"kind": "poly"}), '"fits.gold_bon"'),
    (lambda d: d.update(sft_baseline=[1]), '"sft_baseline"'),
    (lambda d: d["optimum"][0].update(kl=None), '"optimum\\[0\\].kl"'),
    (lambda d: d.update(optimum={}), '"optimum"'),
])
def test_check_sweep_names_the_field(mutate, field):
    data = synthetic_sweep()
    mutate(data)
    with pytest.raises(InputError, match=field):
        check_sweep(data)


def test_report_round_trips_through_json(tmp_path):
    data = json.loads(json.dumps(synthetic_sweep()))
    write_report(tmp_path / "r.html", data)
    assert (tmp_path / "r.html").stat().st_size > 50_000


def test_report_renders_in_headless_chromium(tmp_path, browser):
    path = tmp_path / "report.html"
    write_report(path, _with_hostile_sample(synthetic_sweep()))
    dialogs, requests = [], []
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(path.as_uri())
        page.wait_for_load_state("load")
        images = page.evaluate("Array.from(document.images).map(i => [i.id, i.complete, i.naturalWidth])")
        xss_text = page.inner_text("#samples")
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    finally:
        page.close()
    assert dialogs == []
    assert len(images) == 5 and all(complete and width > 0 for _, complete, width in images), images
    assert XSS_SCRIPT in xss_text  # shown as text, not run
    assert all(url.startswith(("file:", "data:")) for url in requests), requests


def test_summary_and_frontier_compare_ppo_with_the_kl_regularised_optimum():
    data = synthetic_sweep()
    text = " ".join(summarize(data))
    largest, smallest = BETAS[-1], BETAS[0]
    assert f"at β = {largest:g} PPO ended at KL = " in text and f"at β = {smallest:g} PPO ended at KL = " in text
    assert "at the estimate's limit log n" in text  # the smallest β's π* sits at 4.1 of log 64 = 4.16
    page = render_report(data)
    assert "PPO against the KL-regularised optimum" in page and page.count("<tr>") > len(BETAS)
    data.pop("optimum")
    assert "π*" not in " ".join(summarize(data)) and "KL-regularised optimum" not in render_report(data)


def test_the_report_shows_dpos_implicit_margin_beside_the_reward_models_on_the_same_pairs():
    """A sweep.json from before rm_margin/rm_accuracy is read as it was (no table, no sentence); with them the
    frontier section has the table (each DPO run, then the reward model) and the summary one sentence."""
    data = synthetic_sweep()
    dpo = [{"kind": "dpo", "label": f"DPO β={b:g}", "beta": b, "kl": 0.5 / b, "proxy_reward": 0.5, "gold_reward": 0.3,
            "dpo_margin": 2 * b, "dpo_accuracy": acc} for b, acc in ((0.1, 0.625), (1.0, 0.875))]
    data["rows"] += dpo
    check_sweep(data)
    page = render_report(data)
    assert "against the reward model on the same" not in page and "implicit reward ranked" not in " ".join(summarize(data))
    for row in dpo:
        row.update(rm_margin=0.75, rm_accuracy=0.5, rm_n_pairs=64)
    check_sweep(data)
    page = render_report(data)
    table = page[page.index("against the reward model on the same 64 held-out pairs"):]
    table = table[:table.index("</table>")]
    cells = re.findall(r'<td class="[a-z]+">([^<]*)</td>', table)
    assert cells == ["DPO β=0.1", "0.1", "0.2", "62%", "DPO β=1", "1", "2", "88%", "reward model", "—", "0.75", "50%"]
    text = " ".join(summarize(data))
    assert ("On the 64 held-out pairs DPO was evaluated on, its implicit reward ranked 62%–88% as the labels did "
            "(best: DPO β=1) and the reward model 50%: DPO's implicit reward ranks more of them as labelled") in text
    data["rows"][-2]["dpo_accuracy"] = 0.874  # shown as 87%, beside 88%: a range
    assert "ranked 87%–88% as the labels did" in " ".join(summarize(data))
    data["rows"][-2]["dpo_accuracy"] = 0.876  # both shown as 88%: one number
    assert "ranked 88% as the labels did" in " ".join(summarize(data))
    data["rows"][-1]["rm_accuracy"] = "half"
    with pytest.raises(InputError, match="rm_accuracy"):
        check_sweep(data)


def test_the_headline_says_gold_fell_at_the_smallest_beta_though_another_beta_ended_with_more_proxy():
    """The smallest β's gold below SFT while its proxy rose is said as such, even when a larger β's proxy ended
    a little higher (the demo at seed 0: 1.43 against 1.44), not "did not overoptimise"."""
    data = synthetic_sweep(hack=True)
    ppo = sorted((r for r in data["rows"] if r["kind"] == "ppo"), key=lambda r: r["beta"])
    small, other = ppo[0], ppo[1]
    for key in ("proxy_reward", "proxy_delta"):
        if key in other:
            other[key] = small[key] + 0.01
    headline = re.findall(r'<p class="headline">(.*?)</p>', render_report(data))[1]
    assert headline.startswith(f"At the smallest β ({small['beta']:g}) gold fell below SFT (")
    assert f"though the proxy ended highest at β = {other['beta']:g}" in headline and "did not" not in headline
