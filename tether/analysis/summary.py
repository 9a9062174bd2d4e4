"""The plain-language summary of a sweep, one paragraph per finding.

Every sentence is written from a `tether.analysis.findings.Findings`: the rules and
thresholds live there; this module only chooses the words for what was decided.
"""

from tether.analysis.findings import (MIN_FIT_POINTS, MIN_FIT_R2, BenignRefusals, BestOfNPeak, Findings, FitPeak, ImplicitRanking,
                                      OptimumComparison, Reference, RewardModelAccuracy, Rise, decide_findings)
from tether.analysis.formats import fmt, pct, signed
from tether.analysis.frontier import row_sqrt_kl
from tether.analysis.schema import ROW_KINDS, check_sweep

HACK_NAMES = {"refusal": "“safe but useless” refusals", "filler": "verbosity", "repetition": "degenerate repetition"}
"""`Findings.readable_hacks` → the words for each hack."""
FIT_WORDS = {"gold_rl": ("PPO", "d(α − κ log d)"), "gold_bon": ("best-of-n", "d(α − κ d)")}
"""Gold fit → (the method it fits, its curve)."""


def _count(n: int, singular: str, plural: str | None = None) -> str:
    return f"{n} {singular if n == 1 else plural or singular + 's'}"


def _and(items: list[str]) -> str:
    """"a", "a and b", "a, b and c"."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _beta_list(rows: list[dict]) -> str:
    return ", ".join(f"{r['beta']:g}" for r in rows)


def _overview(f: Findings) -> str:
    parts = []
    if f.ppo:
        parts.append(f"{_count(len(f.ppo), 'PPO policy', 'PPO policies')} with a fixed KL coefficient "
                     f"(β = {_beta_list(f.ppo)})")
    if f.bon:
        parts.append(f"best-of-n sampling for n = {', '.join(str(r.get('n')) for r in f.bon)}")
    if f.others:
        parts.append(f"{_count(len(f.others), 'other run')} ({', '.join(r['label'] for r in f.others)})")
    world = f"on the built-in “{f.world}” world, whose gold labeler stands in for a human" \
        if f.world else "with no gold labeler (no world): only the proxy reward was measured"
    if f.gold_model:
        world = (f"with the {f.gold_model} as gold, standing in for a human (Gao et al. 2022). A reward model has "
                 f"no response styles and no benign/harmful split of the prompts, so style shares and the refusal "
                 f"rate on benign prompts are absent; refusals are counted over all prompts")
    return f"This sweep compared {'; '.join(parts)}, {world}."


def _gold_paragraph(f: Findings) -> str:
    if f.best_gold is None:
        return ("No gold reward was measured, so this report cannot say whether the reward model's "
                "gains are real; read the proxy numbers as what the policy was paid, not what it is worth.")
    best, delta = f.best_gold.run.row, f.best_gold.run.gold_delta
    if delta is None:
        base = ""
    elif f.sft.get("gold_reward") is None:
        base = f" ({signed(delta)} over SFT)"
    else:
        base = f" against the SFT policy's {fmt(f.sft['gold_reward'])} ({signed(delta)})"
    if f.best_gold.improved is not False:
        return (f"Gold reward was highest at β = {best['beta']:g}: {fmt(best['gold_reward'])}{base}, at KL = "
                f"{fmt(best.get('kl'))} nats. Its proxy reward was {fmt(best.get('proxy_reward'))} "
                f"({signed(f.best_gold.run.proxy_delta)} over SFT).")
    return (f"No β improved the gold reward over the SFT policy: the best, β = {best['beta']:g}, reached "
            f"{fmt(best['gold_reward'])}{base}.")


def _overoptimisation_paragraph(f: Findings) -> str | None:
    o = f.overoptimisation
    if o is None:
        return None
    small, gold_delta, sft_gold = o.smallest.row, o.smallest.gold_delta, fmt(f.sft.get("gold_reward"))
    if o.occurred:
        others = [r for r in o.hacked if r is not small]
        also = f" The proxy also rose while gold fell below SFT at β = {_beta_list(others)}." if others else ""
        return (f"At the smallest β ({small['beta']:g}) the policy overoptimised the reward model: its proxy "
                f"reward was the highest of the sweep ({fmt(small['proxy_reward'])}, "
                f"{signed(o.smallest.proxy_delta)} over SFT) while its gold reward fell below the SFT "
                f"policy's ({fmt(small['gold_reward'])} vs {sft_gold}, {signed(gold_delta)}). "
                f"This is reward hacking as Gao, Schulman & Hilton (2022) describe it: the proxy keeps "
                f"climbing while the true reward falls." + also)
    reasons = []
    if not o.gold_fell:
        reasons.append(f"its gold reward ({fmt(small['gold_reward'])}) stayed at or above the SFT policy's "
                       f"({sft_gold}, {signed(gold_delta)})")
    if not o.proxy_is_top:
        reasons.append(f"its proxy reward ({fmt(small['proxy_reward'])}) was not the sweep's highest "
                       f"(β = {o.top_proxy['beta']:g}: {fmt(o.top_proxy['proxy_reward'])})")
    also = (f" Proxy up while gold fell below SFT at β = {_beta_list(o.hacked)}."
            if o.hacked else " At no β did the proxy rise while gold fell below SFT.")
    return (f"The expected overoptimisation did not appear at the smallest β ({small['beta']:g}): "
            f"{'; and '.join(reasons)}." + also)


def _refusal_sentence(r: BenignRefusals) -> str:
    if r.worst is None:
        return "The refusal rate on benign prompts was not measured."
    worst, threshold = r.worst, pct(r.threshold)
    sft_note = (f" The SFT policy itself already refused {pct(r.sft_rate)} of benign prompts, above the "
                f"threshold, so this finding says little on its own." if r.sft_above else "")
    if r.onset is None:
        return (f"No β pushed the refusal rate on benign prompts above {threshold}: the highest was "
                f"{pct(worst['benign_refusal_rate'])} at β = {worst['beta']:g} "
                f"(SFT policy: {pct(r.sft_rate)}).{sft_note}")
    return (f"“Safe but useless” behaviour begins at β = {r.onset['beta']:g}: there the policy refused "
            f"{pct(r.onset['benign_refusal_rate'])} of benign prompts (threshold {threshold}; SFT policy "
            f"{pct(r.sft_rate)}); the highest rate was {pct(worst['benign_refusal_rate'])} at β = {worst['beta']:g}."
            + sft_note)


def _rise_sentence(rise: Rise, hack: str, what: str, unit_fmt) -> str:
    if rise.worst is None:
        return f"{what.capitalize()} was not compared with the SFT policy (not measured)."
    worst, beta, sft = unit_fmt(rise.worst[rise.key]), rise.worst["beta"], unit_fmt(rise.sft_value)
    if rise.rose:
        return f"{hack.capitalize()}: {what} rose from {sft} (SFT) to {worst} at β = {beta:g}."
    return f"{what.capitalize()} did not rise: at most {worst} at β = {beta:g}, against {sft} for the SFT policy."


def _hacks_paragraph(f: Findings) -> str:
    sentences = [
        _refusal_sentence(f.refusals),
        _rise_sentence(f.filler, HACK_NAMES["filler"], "filler phrases per response", fmt),
        _rise_sentence(f.repetition, HACK_NAMES["repetition"], "the share of repetitive responses", pct),
    ]
    if f.longest is not None:
        sentences.append(f"Mean length ranged up to {fmt(f.longest['mean_length'])} words "
                         f"(β = {f.longest['beta']:g}) against the SFT policy's {fmt(f.sft['mean_length'])}.")
    if f.top_style is not None:
        s = f.top_style
        sft_part = f"; the SFT policy's was “{s.sft_style}” ({pct(s.sft_share)})" if s.sft_style is not None else ""
        sentences.append(f"At β = {s.beta:g} the most common response style was “{s.style}” "
                         f"({pct(s.share)}){sft_part}.")
    found = [HACK_NAMES[hack] for hack in f.readable_hacks]
    head = (f"Readable hacks that appeared: {_and(found)}." if found else
            "None of the readable hacks (benign refusals, filler, repetition) crossed its threshold at any β.")
    if found and f.seed is not None:
        sentences.append(f"Which readable hack wins can change with the reward model's seed; this sweep used "
                         f"seed {f.seed}, so rerun with another seed before generalising.")
    return " ".join([head] + sentences)


def _reference_paragraph(ref: Reference | None) -> str | None:
    if ref is None:
        return None
    beta, kl = f"{ref.row['beta']:g}", fmt(ref.row["kl"])
    if ref.near:
        return f"At the largest β ({beta}) the policy stayed near the reference: KL = {kl} nats (below {ref.limit:g})."
    return (f"Even the largest β ({beta}) moved the policy away from the reference: KL = {kl} nats "
            f"(not below {ref.limit:g}), so no run here shows a policy that barely moves.")


def _optimum_comparison(c: OptimumComparison) -> str:
    r, o = c.row, c.optimum
    text = f"at β = {r['beta']:g} PPO ended at KL = {fmt(r['kl'])} nats against π*'s {fmt(o['kl'])}"
    if c.at_limit:
        text += f" (at the estimate's limit log n = {fmt(o['kl_limit'])}: π* lies further out)"
    if r.get("gold_reward") is not None and o.get("gold_reward") is not None:
        text += f", with gold reward {fmt(r['gold_reward'])} against π*'s {fmt(o['gold_reward'])}"
    return text


def _optimum_paragraph(comparisons: list[OptimumComparison]) -> str | None:
    """PPO's KL and gold against π* ∝ π_ref·exp(r/β) at the largest and the smallest β both have."""
    if not comparisons:
        return None
    return ("The exact optimiser of r − β·KL would sample π* ∝ π_ref·exp(r/β), estimated here by reweighting the "
            "SFT policy's best-of-n samples: " + "; ".join(map(_optimum_comparison, comparisons)) + ". A PPO "
            "policy far beyond π*'s KL at a large β is held too loosely; a gold reward far below π*'s at a small β "
            "means PPO found responses the SFT policy hardly ever writes, where the reward model is wrong.")


def _bon_paragraph(b: BestOfNPeak | None) -> str | None:
    if b is None:
        return None
    text = (f"Best-of-n's {b.reward} reward peaked at n = {b.peak.get('n')} (KL = {fmt(b.peak.get('kl'))} nats, "
            f"√KL = {fmt(row_sqrt_kl(b.peak))}) with {signed(b.peak_gain)} over SFT")
    if b.largest is not None:
        text += f"; at the largest n = {b.largest.get('n')} it was {signed(b.largest_gain)}"
    if b.best_ppo is not None:
        text += (f". The best PPO policy (β = {b.best_ppo['beta']:g}) reached {signed(b.best_ppo_gain)} "
                 f"at √KL = {fmt(row_sqrt_kl(b.best_ppo))}")
    return text + "."


def _peak_words(p: FitPeak) -> str:
    fit, peak = p.fit, p.fit.peak_d
    if p.status == "no fit":
        if fit.n_points < MIN_FIT_POINTS:
            return f"has {fit.n_points} points, fewer than the {MIN_FIT_POINTS} a fit needs: it predicts nothing"
        return f"does not fit (R² under {MIN_FIT_R2:g}): it predicts nothing"
    if p.status == "none":
        return "predicts no peak (the fitted curve never turns down)"
    if p.status == "out of reach":
        return (f"predicts no peak within {p.reach_factor:g}× the largest measured √KL "
                f"({fmt(fit.d_max)}): the curve barely bends")
    where = " (beyond the measured points: an extrapolation)" if p.status == "extrapolated" else ""
    return (f"predicts the gold reward peaks at √KL = {fmt(peak)} (KL = {fmt(peak ** 2)} nats){where} with "
            f"{signed(fit.peak_reward)} over SFT")


def _fits_paragraph(peaks: list[FitPeak]) -> str | None:
    if not peaks:
        return None
    parts = [f"the {FIT_WORDS[p.name][0]} fit R(d) = {FIT_WORDS[p.name][1]} (α = {fmt(p.fit.alpha)}, "
             f"κ = {fmt(p.fit.beta)}, R² = {fmt(p.fit.r2)}, {p.fit.n_points} points) {_peak_words(p)}"
             for p in peaks]
    return f"Fitting the curves of Gao, Schulman & Hilton (2022) to the gold rewards, {'; '.join(parts)}."


def _rm_paragraph(rm: RewardModelAccuracy | None) -> str | None:
    if rm is None:
        return None
    text = f"The reward model ranked {pct(rm.accuracy)} of held-out pairs as the labels did"
    if rm.n_pairs is not None:
        text += f" ({fmt(rm.n_pairs)} pairs)"
    if rm.ceiling is not None:
        text += (f", against a ceiling of {pct(rm.ceiling)} (the best any model can do on labels this noisy): "
                 f"{fmt(rm.shortfall_points)} percentage points short. The pairs it gets wrong "
                 f"beyond the labels' own noise are where a policy can collect reward the labeler would not give")
    return text + "."


def _others_paragraph(f: Findings) -> str | None:
    if not f.other_runs:
        return None
    parts = []
    for other in f.other_runs:
        r = other.run.row
        against = ("" if other.gold_vs_plain is None else
                   f" ({signed(other.gold_vs_plain)} gold against plain PPO at β = {fmt(r['beta'])})")
        parts.append(f"{r['label']} ({ROW_KINDS.get(r['kind'], r['kind'])}): KL = {fmt(r.get('kl'))} nats, "
                     f"gold {signed(other.run.gold_delta)}, proxy {signed(other.run.proxy_delta)} over SFT" + against)
    return "Other runs: " + "; ".join(parts) + "."


def _method_sentence(p) -> str:
    name = ROW_KINDS.get(p.kind, p.kind)
    best = p.best.row
    text = f"{name}: best gold {signed(p.best.gold_delta)} over SFT ({best['label']}, KL = {fmt(best.get('kl'))} nats"
    if best.get("dpo_margin") is not None:
        text += f", implicit margin {fmt(best['dpo_margin'])} beside a proxy of {signed(p.best.proxy_delta)}"
    text += ")"
    if p.fit is not None:
        text += (f"; its gold fit peaks at √KL = {fmt(p.fit.peak_d)}" if p.peak_status in ("measured", "extrapolated")
                 else "; its gold fit shows no peak in reach")
    if p.smallest_beta_hacked is not None:
        text += ("; at its smallest β gold fell while the proxy" + (" and the margin" if p.kind == "dpo" else "") + " rose"
                 if p.smallest_beta_hacked else "; its smallest β did not overoptimise against the next")
    return text


def _methods_paragraph(f: Findings) -> str | None:
    m = f.methods
    if m is None:
        return None
    text = "Methods on one frontier (KL of each policy's own samples against the reference). " + "; ".join(
        _method_sentence(p) for p in m.points) + "."
    if m.most_gold_at_common is not None:
        text += (f" At the same √KL = {fmt(m.common_sqrt_kl)} (every fitted method measured that far), "
                 f"{ROW_KINDS.get(m.most_gold_at_common, m.most_gold_at_common)} keeps the most gold.")
    if m.first_to_peak is not None:
        text += f" {ROW_KINDS.get(m.first_to_peak, m.first_to_peak)} overoptimises first (its gold fit peaks at the smallest √KL)."
    return text


RANKING_WORDS = {"more": "DPO's implicit reward ranks more of them as labelled than the reward model does",
                 "fewer": "DPO's implicit reward ranks fewer of them as labelled than the reward model does",
                 "as many": "within the noise, DPO's implicit reward ranks them as well as the reward model does"}
"""`ImplicitRanking.verdict` → the words for it."""


def _implicit_ranking_sentence(r: ImplicitRanking | None) -> str | None:
    if r is None:
        return None
    lowest, highest = (pct(min(run["dpo_accuracy"] for run in r.runs)), pct(r.best["dpo_accuracy"]))
    ranked = highest if lowest == highest else f"{lowest}–{highest}"
    pairs = f"the {fmt(r.n_pairs)} held-out pairs" if r.n_pairs else "the held-out pairs"
    noise = ("" if r.standard_error is None else
             f" (gap {signed(100 * r.gap)} points; {r.n_standard_errors:g} standard errors: "
             f"±{fmt(100 * r.n_standard_errors * r.standard_error)} points)")
    return (f"On {pairs} DPO was evaluated on, its implicit reward ranked {ranked} as the labels did (best: "
            f"{r.best['label']}) and the reward model {pct(r.rm_accuracy)}: {RANKING_WORDS[r.verdict]}{noise}.")


def headline(f: Findings) -> list[str]:
    """Three sentences a reader takes away, in the order of the lesson's questions: where gold peaked,
    whether the smallest β hacked the reward model, where "safe but useless" refusals begin. The
    paragraphs of `summary_paragraphs` give the details."""
    if not f.ppo:
        return []
    sentences = []
    if f.best_gold is None:
        sentences.append("No gold reward was measured: the proxy numbers say what the policy was paid, not what it is worth.")
    else:
        best = f.best_gold.run.row
        gain = f" ({signed(f.best_gold.run.gold_delta)} over SFT)" if f.best_gold.run.gold_delta is not None else ""
        sentences.append(f"Gold reward peaked at β = {best['beta']:g}: {fmt(best['gold_reward'])}{gain} at KL "
                         f"{fmt(best.get('kl'))} nats.")
    o = f.overoptimisation
    if o is not None:
        small = o.smallest.row
        if o.occurred:
            sentences.append(f"At the smallest β ({small['beta']:g}) the proxy reward rose to {fmt(small['proxy_reward'])} "
                             f"while gold fell to {fmt(small['gold_reward'])}: the policy hacked the reward model.")
        elif o.gold_fell and small in o.hacked:  # hacked, though another β's proxy ended higher
            sentences.append(f"At the smallest β ({small['beta']:g}) gold fell below SFT ({signed(o.smallest.gold_delta)}) "
                             f"while the proxy rose ({signed(o.smallest.proxy_delta)}), though the proxy ended highest "
                             f"at β = {o.top_proxy['beta']:g} ({fmt(o.top_proxy['proxy_reward'])} against "
                             f"{fmt(small['proxy_reward'])}).")
        else:
            sentences.append(f"The smallest β ({small['beta']:g}) did not overoptimise: its gold did not fall below SFT "
                             f"while its proxy rose.")
    r = f.refusals
    if r.worst is not None:
        sentences.append(f"“Safe but useless” refusals begin at β = {r.onset['beta']:g} "
                         f"({pct(r.onset['benign_refusal_rate'])} of benign prompts refused, threshold {pct(r.threshold)})."
                         if r.onset is not None else
                         f"No β pushed refusals of benign prompts above {pct(r.threshold)}.")
    return sentences


def summary_paragraphs(f: Findings) -> list[str]:
    """The summary of `f`, one string per paragraph.

    It says which β maximised gold reward and by how much over SFT; whether the
    smallest β overoptimised (highest proxy, gold below SFT), and says so when it did
    not; which readable hack appeared; whether the largest β stayed near the reference;
    PPO against the KL-regularised optimum; best-of-n's peak; the fits' predicted peak; the methods compared;
    DPO's implicit ranking of held-out pairs against the reward model's; other runs against plain PPO; and the reward model's accuracy against the labeler ceiling.
    """
    if not (f.ppo or f.bon or f.others):
        return ["The sweep has no runs, so there is nothing to summarise."]
    paragraphs = [_overview(f)]
    if f.ppo:
        paragraphs += [_gold_paragraph(f), _overoptimisation_paragraph(f), _hacks_paragraph(f),
                       _reference_paragraph(f.reference), _optimum_paragraph(f.optimum)]
    paragraphs += [_bon_paragraph(f.best_of_n), _fits_paragraph(f.fit_peaks), _methods_paragraph(f),
                   _implicit_ranking_sentence(f.implicit_ranking), _others_paragraph(f), _rm_paragraph(f.reward_model)]
    return [p for p in paragraphs if p]


def summarize(data: dict) -> list[str]:
    """The summary of a `sweep.json` (checked by `schema.check_sweep`), one string per paragraph."""
    check_sweep(data)
    return summary_paragraphs(decide_findings(data))
