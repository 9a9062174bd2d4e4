"""The sweep report: one self-contained `report.html` from `sweep.json`.

`write_report(path, data)` writes a single HTML file a person opens in a browser:
plots are embedded as base64 `data:` PNGs, the CSS is inline, there is no
JavaScript and no external resource. Every piece of text taken from `data`
(prompts, responses, labels, keys) is HTML-escaped.

`data` is the content of `sweep.json` (`tether.analysis.schema`). Every block is
optional except `rows`; a section whose numbers are missing says so instead of
disappearing. What the report marks comes from `tether.analysis.findings` and its
prose from `tether.analysis.summary`, both computed from `rows`, so the text cannot
disagree with the tables.
"""

import base64
import html
import re
from importlib import resources
from string import Template

from tether.analysis.detectors import (REPETITION_N, REPETITION_THRESHOLD, count_filler, gold_proxy_gap, is_refusal,
                                       is_repetitive)
from tether.analysis.findings import (MIN_FIT_POINTS, MIN_FIT_R2, Findings, ImplicitRanking, decide_findings, peak_status,
                                      reward_delta, sweep_fits)
from tether.analysis.formats import fmt, pct, signed
from tether.analysis.frontier import Fit, fixed_beta_rows, row_sqrt_kl
from tether.analysis.schema import ROW_KINDS, check_sweep, is_number
from tether.analysis.summary import headline, summary_paragraphs
from tether.io import write_text_atomic

MAX_SAMPLE_PROMPTS = 8
"""Prompts shown in the samples section (each with every run's response)."""


# ---------------------------------------------------------------- HTML

def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _img(png: bytes, img_id: str, alt: str) -> str:
    src = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return f'<figure><img id="{_e(img_id)}" alt="{_e(alt)}" src="{src}"></figure>'


_NUMBER_CELL = re.compile(r"^(?:[-+]?[\d.,]+(?:e[-+]?\d+)?%?|—)$")


def _cell_class(j: int, text) -> str:
    """The first column is the row's name (key); numbers are right-aligned (num); other words txt."""
    return "key" if j == 0 else ("num" if _NUMBER_CELL.match(str(text)) else "txt")


def _table(headers: list[str], rows: list[list], caption: str | None = None) -> str:
    classes = [[_cell_class(j, c) for j, c in enumerate(row)] for row in rows]
    numeric = [any(cls[j] == "num" for cls in classes) for j in range(len(headers))]
    head = "".join(f'<th class="{"num" if numeric[j] else "key"}">{_e(h)}</th>' for j, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f'<td class="{cls}">{_e(c)}</td>' for c, cls in zip(row, row_classes)) + "</tr>"
                   for row, row_classes in zip(rows, classes))
    cap = f"<caption>{_e(caption)}</caption>" if caption else ""
    return f'<div class="scroll"><table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _flatten(d: dict, prefix: str = "") -> list[tuple[str, object]]:
    items = []
    for key, value in d.items():
        if isinstance(value, dict):
            items += _flatten(value, f"{prefix}{key}.")
        elif not isinstance(value, list):
            items.append((f"{prefix}{key}", value))
    return items


def _key_values(d: dict, caption: str | None = None) -> str:
    return _table(["quantity", "value"], [[k, fmt(v)] for k, v in _flatten(d)], caption)


def _section(section_id: str, title: str, body: str, intro: str | None = None) -> str:
    intro_html = f'<p class="intro">{_e(intro)}</p>' if intro else ""
    return f'<section id="{section_id}"><h2>{_e(title)}</h2>{intro_html}{body}</section>'


def _missing(what: str) -> str:
    return f'<p class="missing">{_e(what)}</p>'


def _pipeline_section(pipeline: dict) -> str:
    parts = []
    for stage, numbers in pipeline.items():
        if stage in ("reward_model", "timings_s") or not isinstance(numbers, dict):
            continue
        parts.append(_key_values(numbers, caption=stage))
    if isinstance(pipeline.get("timings_s"), dict):
        timings = pipeline["timings_s"]
        rows = [[stage, fmt(s)] for stage, s in timings.items()]
        if all(is_number(s) for s in timings.values()):
            rows.append(["total", fmt(float(sum(timings.values())))])
        parts.append(_table(["stage", "wall time [s]"], rows, caption="timings"))
    body = f'<div class="tables">{"".join(parts)}</div>' if parts else _missing("No pipeline numbers recorded.")
    return _section("pipeline", "Pipeline", body)


def _reward_model_section(pipeline: dict) -> str:
    rm = pipeline.get("reward_model") or {}
    if not rm:
        return _section("reward-model", "Reward model", _missing("No reward-model evaluation recorded."))
    ceiling = rm.get("label_ceiling", rm.get("ceiling"))
    main = {k: rm[k] for k in ("accuracy", "loss", "n_pairs", "ece", "mean_margin") if k in rm}
    if ceiling is not None:
        main["labeler ceiling"] = ceiling
    parts = [_key_values(main, caption="held-out pairs")]
    if isinstance(rm.get("length_bias"), dict):
        parts.append(_key_values(rm["length_bias"], caption="length bias"))
    if isinstance(rm.get("by_category"), dict):
        rows = [[f"{field} = {value}", pct(cell.get("accuracy")), fmt(cell.get("n"))]
                for field, values in rm["by_category"].items() if isinstance(values, dict)
                for value, cell in values.items() if isinstance(cell, dict)]
        parts.append(_table(["category", "accuracy", "pairs"], rows, caption="accuracy by category"))
    body = f'<div class="tables">{"".join(parts)}</div>'
    if rm.get("history"):
        from tether.analysis.plots import plot_rm_curves
        body += _img(plot_rm_curves(rm["history"], ceiling=ceiling), "plot-rm-curves",
                     "Reward model loss and accuracy against training step, train and held-out")
    intro = ("Accuracy is the share of held-out preference pairs the reward model orders as the labels do; "
             "the ceiling is the best accuracy reachable on labels this noisy. Length bias compares how often "
             "the longer response wins under the labels and under the model.")
    return _section("reward-model", "Reward model", body, intro)


def _fits_table(fits: dict[str, Fit]) -> str:
    rows = []
    for name, fit in fits.items():
        status, peak = peak_status(fit), fit.peak_d
        shown = status in ("measured", "extrapolated")
        formula = "d(α − κ·log d)" if fit.kind == "rl" else "d(α − κ·d)"
        rows.append([name, formula, fmt(fit.alpha), fmt(fit.beta),
                     fmt(fit.r2), fmt(fit.n_points), fmt(fit.d_max), fmt(peak) if shown else "—",
                     fmt(peak ** 2) if shown else "—", signed(fit.peak_reward) if shown else "—", status])
    return _table(["fit", "R(d)", "α", "κ", "R²", "points", "largest √KL", "peak √KL", "peak KL [nats]",
                   "peak gain", "peak"], rows)


def _optimum_table(rows: list[dict], optimum: list[dict]) -> str:
    ppo = {r["beta"]: r for r in fixed_beta_rows(rows)}
    out = [[f"β={o['beta']:g}", fmt(ppo.get(o["beta"], {}).get("kl")), fmt(o["kl"]), fmt(o.get("kl_limit")),
            fmt(ppo.get(o["beta"], {}).get("proxy_reward")), fmt(o.get("proxy_reward")),
            fmt(ppo.get(o["beta"], {}).get("gold_reward")), fmt(o.get("gold_reward"))] for o in optimum]
    return _table(["β", "PPO KL", "π* KL", "limit log n", "PPO proxy", "π* proxy", "PPO gold", "π* gold"], out,
                  caption="PPO against the KL-regularised optimum (dotted above)")


def _implicit_ranking_table(r: ImplicitRanking) -> str:
    """Each DPO run's implicit reward margin and accuracy beside the reward model's, on the same held-out pairs."""
    out = [[run["label"], fmt(run.get("beta")), fmt(run.get("dpo_margin")), pct(run["dpo_accuracy"])] for run in r.runs]
    out.append(["reward model", "—", fmt(r.rm_margin), pct(r.rm_accuracy)])
    pairs = "the same held-out pairs" if r.n_pairs is None else f"the same {fmt(r.n_pairs)} held-out pairs"
    return _table(["ranker", "β", "mean margin", "accuracy"], out,
                  caption=f"DPO's implicit reward β·log π/π_ref against the reward model on {pairs} (margin: mean "
                          f"r(chosen) − r(rejected); accuracy: share ranked as labelled). They are the sweep's "
                          f"--dpo-eval-data, else a split of --dpo-data, which the reward model may have learned from")


def _frontier_plot(rows: list[dict], fits: dict[str, Fit], optimum: list[dict]) -> str:
    from tether.analysis.plots import plot_frontier
    return _img(plot_frontier(rows, fits, optimum), "plot-frontier",
                "Gold and proxy reward gain over SFT against square-root KL, each method's runs with its fit")


def _summary_section(data: dict, f: Findings) -> str:
    """The frontier and three sentences first (`headline`), the details below (`summary_paragraphs`)."""
    top = _frontier_plot(data["rows"], sweep_fits(data), data.get("optimum") or []) if data["rows"] else ""
    top += "".join(f'<p class="headline">{_e(s)}</p>' for s in headline(f))
    details = "".join(f"<p>{_e(p)}</p>" for p in summary_paragraphs(f))
    return _section("summary", "What happened", f'{top}<h3>Details</h3><div class="summary">{details}</div>')


def _frontier_section(fits: dict[str, Fit], optimum: list[dict], rows: list[dict],
                      ranking: ImplicitRanking | None = None) -> str:
    body = _fits_table(fits) if fits else _missing("Too few points for a fit (need two distinct √KL > 0).")
    if optimum:
        body += _optimum_table(rows, optimum)
    if ranking is not None:
        body += _implicit_ranking_table(ranking)
    intro = ("The plot at the top (What happened): reward gained over the SFT policy against d = √KL(π ‖ π_ref), as in "
             "Gao, Schulman & Hilton (2022). "
             "Dashed, in each method's colour: its least-squares fit, R_rl(d) = d(α − κ log d) to the points of PPO, "
             "RLOO, GRPO and DPO, R_bon(d) = d(α − κ d) to best-of-n, where KL_bon = log n − (n − 1)/n; a method "
             f"whose fit explains less than R² = {MIN_FIT_R2:g} of its points, or rests on fewer than "
             f"{MIN_FIT_POINTS} points (two coefficients pass through any two), is drawn as points only (“no fit”). "
             "A gold curve that rises "
             "then falls while the proxy keeps rising is overoptimisation. A peak beyond the largest measured "
             "√KL is an extrapolation. Dotted: π* ∝ π_ref·exp(r/β), the exact optimum of r − β·KL for each β "
             "of the sweep, estimated by reweighting the best-of-n samples of the SFT policy (its KL cannot "
             "exceed log n).")
    return _section("frontier", "Reward–KL frontier", body, intro)


def _curves_section(f: Findings) -> str:
    curves = {r["label"]: r["curve"] for r in f.ppo + f.bon + f.others if r.get("curve")}
    if not curves:
        return _section("learning-curves", "Learning curves", _missing("No learning curves recorded."))
    from tether.analysis.plots import plot_learning_curves
    body = _img(plot_learning_curves(curves), "plot-learning-curves",
                "Proxy reward, gold reward and KL against PPO step, one line per run")
    return _section("learning-curves", "Learning curves", body,
                    "Mean reward-model score, gold score and KL to the reference during PPO, one line per run.")


def _table_rows(f: Findings) -> list[dict]:
    """SFT baseline first (labelled "SFT"), then fixed-β PPO by β, best-of-n by n, then the rest."""
    return ([{"kind": "sft", "label": "SFT", "kl": 0.0, "proxy_delta": 0.0, "gold_delta": 0.0, **f.sft}]
            if f.sft else []) + f.ppo + f.bon + f.others


def _rewards_table(table_rows: list[dict], sft: dict) -> str:
    out = []
    for r in table_rows:
        gold, proxy = reward_delta(r, sft, "gold"), reward_delta(r, sft, "proxy")
        gap = gold_proxy_gap(proxy, gold) if gold is not None and proxy is not None else None
        kind = "reference" if r["kind"] == "sft" else ROW_KINDS.get(r["kind"], r["kind"])
        out.append([r["label"], kind, fmt(r.get("beta")), fmt(r.get("n")), fmt(r.get("kl")),
                    fmt(row_sqrt_kl(r)) if r.get("kl") is not None or r.get("sqrt_kl") is not None else "—",
                    fmt(r.get("proxy_reward")), signed(proxy), fmt(r.get("gold_reward")), signed(gold), fmt(gap)])
    return _table(["run", "kind", "β", "n", "KL [nats]", "√KL", "proxy", "Δ proxy", "gold", "Δ gold",
                   "gap (Δ proxy − Δ gold)"], out, caption="rewards and KL (Δ: minus the SFT policy's)")


def _detectors_table(table_rows: list[dict]) -> str:
    out = [[r["label"], pct(r.get("benign_refusal_rate")), pct(r.get("refusal_rate")),
            fmt(r.get("filler_per_response")), fmt(r.get("mean_length")), fmt(r.get("distinct_1")),
            fmt(r.get("distinct_2")), pct(r.get("repetition_rate")), fmt(r.get("entropy"))]
           for r in table_rows]
    return _table(["run", "benign refusals", "refusals (all)", "filler / response", "mean length [words]",
                   "distinct-1", "distinct-2", "repetitive", "entropy [nats/token]"], out,
                  caption="hacking detectors")


def _detectors_section(data: dict, f: Findings) -> str:
    from tether.analysis.plots import plot_detectors, plot_style_shares
    rows, sft, threshold = data["rows"], f.sft, f.refusals.threshold
    table_rows = _table_rows(f)
    body = _rewards_table(table_rows, sft) + _detectors_table(table_rows)
    if fixed_beta_rows(rows):
        body += _img(plot_detectors(rows, sft_baseline=sft, refusal_threshold=threshold), "plot-detectors",
                     "Benign refusal rate, filler per response, repetition rate and mean length against beta")
    if any(r.get("style_shares") for r in rows):
        body += _img(plot_style_shares(rows, sft_baseline=sft), "plot-style-shares",
                     "Share of each response style per run")
    intro = (f"Refusals match stock phrases (“I'm sorry”, “As an AI”, …) and are counted on benign prompts; "
             f"above {pct(threshold)} a policy counts as “safe but useless”. Filler counts phrases such as "
             f"“Great question!” and “I hope this helps”. A response is repetitive when over "
             f"{pct(REPETITION_THRESHOLD)} of its word {REPETITION_N}-grams repeat. distinct-n is the share of unique "
             f"n-grams over all responses (Li et al. 2016).")
    return _section("detectors", "Hacking detectors", body, intro)


def _badges(response: str) -> str:
    badges = []
    if is_refusal(response):
        badges.append(("refusal", "refusal"))
    if count_filler(response):
        badges.append(("filler", f"filler ×{count_filler(response)}"))
    if is_repetitive(response):
        badges.append(("repetitive", "repetitive"))
    return "".join(f'<span class="badge {cls}">{_e(text)}</span>' for cls, text in badges)


def _sample_card(label: str, sample: dict) -> str:
    scores = f'proxy <b>{_e(fmt(sample.get("proxy")))}</b> · gold <b>{_e(fmt(sample.get("gold")))}</b>'
    return (f'<div class="card"><div class="card-head"><span class="run">{_e(label)}</span>'
            f'<span class="scores">{scores}</span></div>'
            f'<div class="response">{_e(sample.get("response", ""))}</div>'
            f'<div class="badges">{_badges(str(sample.get("response", "")))}</div></div>')


def _samples_section(f: Findings) -> str:
    by_prompt: dict[str, list[str]] = {}
    for row in _table_rows(f):
        for sample in row.get("samples") or []:
            by_prompt.setdefault(str(sample.get("prompt", "")), []).append(_sample_card(row["label"], sample))
    if not by_prompt:
        return _section("samples", "Samples", _missing("No samples recorded."))
    shown = list(by_prompt.items())[:MAX_SAMPLE_PROMPTS]
    body = "".join(f'<div class="prompt-group"><div class="prompt"><span>prompt</span>{_e(prompt)}</div>'
                   f'<div class="cards">{"".join(cards)}</div></div>' for prompt, cards in shown)
    intro = (f"Each prompt with every run's response side by side, with its proxy (reward-model) and gold score. "
             f"Showing {len(shown)} of {len(by_prompt)} prompts.")
    return _section("samples", "Samples", body, intro)


NAV = (("summary", "Summary"), ("pipeline", "Pipeline"), ("reward-model", "Reward model"),
       ("frontier", "Frontier"), ("learning-curves", "Learning curves"), ("detectors", "Detectors"),
       ("samples", "Samples"))


def render_report(data: dict) -> str:
    """The report as one HTML string (see the module docstring for `data`)."""
    check_sweep(data)
    pipeline = data.get("pipeline") or {}
    findings = decide_findings(data)
    body = "".join([
        _summary_section(data, findings),
        _pipeline_section(pipeline),
        _reward_model_section(pipeline),
        _frontier_section(sweep_fits(data), data.get("optimum") or [], data["rows"], findings.implicit_ranking)
        if data["rows"] else
        _section("frontier", "Reward–KL frontier", _missing("The sweep has no runs.")),
        _curves_section(findings),
        _detectors_section(data, findings) if data["rows"] else
        _section("detectors", "Hacking detectors", _missing("The sweep has no runs.")),
        _samples_section(findings),
    ])
    world = data.get("world")
    subtitle = f"world: {world}" if world else "no world (proxy reward only)"
    if data.get("gold_model"):
        subtitle = f"gold: {data['gold_model']}"
    if data.get("seed") is not None:
        subtitle += f" · seed {data['seed']}"
    template = Template(resources.files("tether.analysis").joinpath("report_template.html").read_text("utf-8"))
    return template.substitute(
        title="tether — reward hacking report", subtitle=_e(subtitle),
        nav="".join(f'<a href="#{anchor}">{_e(name)}</a>' for anchor, name in NAV), body=body)


def write_report(path, data: dict) -> None:
    """Write `render_report(data)` to `path` atomically (a reader never sees half a report)."""
    write_text_atomic(path, render_report(data))
