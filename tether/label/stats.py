"""Label files: their rows, the undo rule, and agreement statistics.

A label file (`tether label --out`) is append-only JSON Lines with two kinds of row:

    label  {"event": "label", "prompt", "chosen", "rejected", "id", "repeat", "labeler",
            "time", "choice", "order", "reason"}
    undo   {"event": "undo", "id", "repeat", "labeler", "time", "undoes_time"}

`choice` is what the person pressed: "left", "right", "tie", "both_bad" or "skip".
For "left"/"right", `chosen` is the winning text and `rejected` the other; for the
rest they hold the left and right texts as shown. `order` says which of the pair's
two responses (`a` = y1, `b` = y2 as read from the pairs file) was on the left:
["a", "b"] or ["b", "a"]. `repeat` numbers the showings of a pair that occurs more
than once in the pairs file (0 for the first), which measures self-agreement.
`time` is ISO 8601 UTC; an undo names the label it withdraws by its `time`.

What a reader must do with such a file, training included: replay it with
`effective_labels` (undone answers vanish), then keep the "left"/"right" choices
(`preference_labels`): ties, both-bad, skips and undo rows are not preferences.
"""

import json
from collections import Counter, defaultdict
from itertools import combinations

from tether.data.labels import PREFERENCE_CHOICES, effective_labels
from tether.errors import InputError

# ---------------------------------------------------------------- agreement


def verdict(row: dict) -> str | None:
    """The judgement of a label, independent of the screen side and of the pair's y1/y2 order.

    "first"/"second": the winning text is the one whose JSON sorts first/second;
    "tie" or "both_bad" as given; None for a skip (no judgement).
    """
    choice = row["choice"]
    if choice == "skip":
        return None
    if choice not in PREFERENCE_CHOICES:
        return choice
    return "first" if json.dumps(row["chosen"]) <= json.dumps(row["rejected"]) else "second"


def cohen_kappa(labels_1: list, labels_2: list) -> float | None:
    """Cohen's κ of two raters on the same items (Cohen 1960).

    κ = (p_o − p_e) / (1 − p_e), p_o = share of items where they agree,
    p_e = Σ_k p1(k)·p2(k) the agreement expected by chance from each rater's own
    category shares. None when p_e = 1 (both raters used a single, identical category).
    """
    if len(labels_1) != len(labels_2) or not labels_1:
        raise ValueError(f"need two equally long non-empty label lists, got {len(labels_1)} and {len(labels_2)}")
    n = len(labels_1)
    p_observed = sum(x == y for x, y in zip(labels_1, labels_2)) / n
    counts_1, counts_2 = Counter(labels_1), Counter(labels_2)
    p_chance = sum(counts_1[k] * counts_2[k] for k in counts_1) / n**2
    if p_chance == 1:
        return None
    return (p_observed - p_chance) / (1 - p_chance)


def _verdicts_by_labeler(labels) -> dict[str, dict[tuple, str]]:
    """{labeler: {(id, repeat): verdict}} without skips."""
    table = defaultdict(dict)
    for row in labels:
        if verdict(row) is not None:
            table[row["labeler"]][row["id"], row["repeat"]] = verdict(row)
    return table


def inter_labeler_agreement(labels) -> list[dict]:
    """Cohen's κ and raw agreement for every two labelers, on the showings both judged (skips left out)."""
    table = _verdicts_by_labeler(labels)
    out = []
    for first, second in combinations(sorted(table), 2):
        common = sorted(table[first].keys() & table[second].keys())
        if not common:
            continue
        x, y = [table[first][k] for k in common], [table[second][k] for k in common]
        out.append({"labelers": [first, second], "n": len(common), "kappa": cohen_kappa(x, y),
                    "agreement": sum(a == b for a, b in zip(x, y)) / len(common)})
    return out


def self_agreement(labels) -> dict[str, dict]:
    """Per labeler, over pairs they judged more than once (repeats in the pairs file):
    the share of agreeing judgements among all two-judgement combinations of a pair."""
    judged = defaultdict(list)  # (labeler, id) -> verdicts of its showings
    for labeler, keyed in _verdicts_by_labeler(labels).items():
        for (pair_id, _repeat), value in keyed.items():
            judged[labeler, pair_id].append(value)
    per_labeler = defaultdict(lambda: {"repeated_pairs": 0, "comparisons": 0, "agreeing": 0})
    for (labeler, _), values in judged.items():
        if len(values) < 2:
            continue
        entry = per_labeler[labeler]
        entry["repeated_pairs"] += 1
        for x, y in combinations(values, 2):
            entry["comparisons"] += 1
            entry["agreeing"] += x == y
    return {labeler: {"repeated_pairs": e["repeated_pairs"], "comparisons": e["comparisons"],
                      "agreement": e["agreeing"] / e["comparisons"]}
            for labeler, e in sorted(per_labeler.items())}


def _share(hits: list[float]) -> dict:
    return {"n": len(hits), "rate": sum(hits) / len(hits) if hits else None}


def _overall_and_by_labeler(rows: list[dict], values: list[float]) -> dict:
    """{"n", "rate"} of `values` (one per row) overall and per labeler."""
    by_labeler = defaultdict(list)
    for row, value in zip(rows, values):
        by_labeler[row["labeler"]].append(value)
    return {**_share(values), "by_labeler": {lab: _share(v) for lab, v in sorted(by_labeler.items())}}


def position_bias(labels) -> dict:
    """How often the left response wins among "left"/"right" answers (0.5 = no bias; order is random)."""
    preferences = [row for row in labels if row["choice"] in PREFERENCE_CHOICES]
    return _overall_and_by_labeler(preferences, [float(row["choice"] == "left") for row in preferences])


def _agreement(value: float, threshold: float) -> float:
    """1 when `value` sides with the labeler, 0 when against, 0.5 on the fence."""
    return 1.0 if value > threshold else 0.5 if value == threshold else 0.0


def gold_agreement(labels, prob) -> dict:
    """Agreement of "left"/"right" answers with a gold labeler, `prob(prompt, y1, y2) = P(y1 ≻ y2)`.

    rate: share of answers whose chosen text gold prefers (P > 0.5; 0.5 counts half);
    mean_gold_prob: mean P(chosen ≻ rejected), the agreement a noisy gold labeler would reach.
    Answers whose prompt the gold labeler cannot judge (it raises InputError, e.g. a
    prompt from outside its world) are left out and counted in `not_judged`.
    """
    judged, probs, not_judged = [], [], []
    for row in labels:
        if row["choice"] not in PREFERENCE_CHOICES:
            continue
        try:
            probs.append(prob(row["prompt"], row["chosen"], row["rejected"]))
            judged.append(row)
        except InputError as e:
            not_judged.append(e.message)
    out = _overall_and_by_labeler(judged, [_agreement(p, 0.5) for p in probs])
    out["mean_gold_prob"] = sum(probs) / len(probs) if probs else None
    out["not_judged"] = len(not_judged)
    if not_judged:
        out["first_not_judged_reason"] = not_judged[0]
    return out


def reward_model_agreement(labels, score) -> dict:
    """Share of "left"/"right" answers whose chosen text the reward model scores higher (equal scores count half).

    `score(prompts, responses) -> list[float]` is r(x, y) for each (prompt, response).
    """
    preferences = [row for row in labels if row["choice"] in PREFERENCE_CHOICES]
    if not preferences:
        return _overall_and_by_labeler([], [])
    prompts = [row["prompt"] for row in preferences]
    scores = score(prompts * 2, [row["chosen"] for row in preferences] + [row["rejected"] for row in preferences])
    margins = [c - r for c, r in zip(scores[:len(preferences)], scores[len(preferences):])]
    return _overall_and_by_labeler(preferences, [_agreement(m, 0.0) for m in margins])


def label_stats(rows, gold_prob=None, rm_score=None) -> dict:
    """Everything `tether label stats` reports about label rows (several labelers' files may be pooled)."""
    labels = effective_labels(rows)
    by_labeler = defaultdict(Counter)
    for row in labels:
        by_labeler[row["labeler"]][row["choice"]] += 1
    stats = {
        "labels": len(labels),
        "undo_rows": sum(row["event"] == "undo" for row in rows),
        "choices_by_labeler": {lab: dict(sorted(c.items())) for lab, c in sorted(by_labeler.items())},
        "inter_labeler": inter_labeler_agreement(labels),
        "self_agreement": self_agreement(labels),
        "position_bias_left_wins": position_bias(labels),
    }
    if gold_prob is not None:
        stats["gold_agreement"] = gold_agreement(labels, gold_prob)
    if rm_score is not None:
        stats["reward_model_agreement"] = reward_model_agreement(labels, rm_score)
    return stats
