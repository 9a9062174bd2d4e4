"""Label files: validation, the undo rule, and agreement statistics against hand computations."""

import json

import pytest

from tether.errors import InputError
from tether.data.labels import check_label_row, effective_labels, preference_labels, read_label_rows
from tether.label.stats import (
    cohen_kappa,
    gold_agreement,
    inter_labeler_agreement,
    label_stats,
    position_bias,
    reward_model_agreement,
    self_agreement,
    verdict,
)

# Two responses per pair; "x…" sorts before "y…", so a win of x is the verdict "first".
TEXTS = {"p1": ("x1", "y1"), "p2": ("x2", "y2"), "p3": ("x3", "y3"), "p4": ("x4", "y4")}


def label(labeler, pair_id, winner, choice="left", repeat=0, time="t0"):
    """A label row where the person picked `winner` ("x", "y", "tie", "both_bad" or "skip") with `choice`."""
    x, y = TEXTS[pair_id]
    if winner in ("x", "y"):
        chosen, rejected = (x, y) if winner == "x" else (y, x)
    else:
        chosen, rejected, choice = x, y, winner
    return {"event": "label", "prompt": f"prompt of {pair_id}", "chosen": chosen, "rejected": rejected,
            "id": pair_id, "repeat": repeat, "labeler": labeler, "time": time, "choice": choice,
            "order": ["a", "b"], "reason": None}


def undo(labeler, pair_id, undoes_time, repeat=0, time="u0"):
    return {"event": "undo", "id": pair_id, "repeat": repeat, "labeler": labeler, "time": time,
            "undoes_time": undoes_time}


def test_effective_labels_applies_undo_and_ignores_duplicates_and_stale_undos():
    rows = [
        first := label("alice", "p1", "x", time="t1"),
        label("alice", "p2", "x", time="t2"),
        undo("alice", "p2", "t2"),  # withdraws t2
        relabel := label("alice", "p2", "y", time="t3"),
        label("alice", "p1", "y", time="t4"),  # p1 already answered: a duplicate, ignored
        undo("alice", "p1", "t9"),  # names no answer in force: changes nothing
        bob := label("bob", "p1", "y", time="t5"),
    ]
    assert effective_labels(rows) == [first, relabel, bob]


def test_an_undo_withdraws_only_its_own_labelers_answer():
    rows = [alice := label("alice", "p1", "x", time="t1"), label("bob", "p1", "x", time="t1"),
            undo("bob", "p1", "t1")]
    assert effective_labels(rows) == [alice]


def test_preference_labels_keep_only_left_and_right():
    rows = [left := label("a", "p1", "x", "left"), right := label("a", "p2", "y", "right"),
            label("a", "p3", "tie"), label("a", "p4", "both_bad"), label("b", "p1", "skip")]
    assert preference_labels(rows) == [left, right]


def test_verdict_ignores_screen_side_and_response_order():
    assert verdict(label("a", "p1", "x", "left")) == verdict(label("a", "p1", "x", "right")) == "first"
    assert verdict(label("a", "p1", "y", "left")) == "second"
    assert verdict(label("a", "p1", "tie")) == "tie"
    assert verdict(label("a", "p1", "skip")) is None


def test_cohen_kappa_hand_computed():
    # p_o = 3/4; shares rater 1 (first 2, second 1, tie 1), rater 2 (first 1, second 2, tie 1):
    # p_e = (2·1 + 1·2 + 1·1) / 16 = 5/16; κ = (12/16 − 5/16) / (11/16) = 7/11
    assert cohen_kappa(["f", "f", "s", "t"], ["f", "s", "s", "t"]) == pytest.approx(7 / 11)
    assert cohen_kappa(["f", "s"], ["f", "s"]) == pytest.approx(1.0)
    assert cohen_kappa(["f", "s"], ["s", "f"]) == pytest.approx(-1.0)  # p_o = 0, p_e = 1/2
    assert cohen_kappa(["f", "f"], ["f", "f"]) is None  # p_e = 1: κ undefined


def test_cohen_kappa_needs_paired_labels():
    with pytest.raises(ValueError, match="equally long non-empty label lists, got 2 and 1"):
        cohen_kappa(["f", "s"], ["f"])


def test_inter_labeler_agreement_on_common_pairs_without_skips():
    rows = [label("alice", "p1", "x"), label("alice", "p2", "x"), label("alice", "p3", "y"),
            label("alice", "p4", "tie"), label("bob", "p1", "x", "right"), label("bob", "p2", "y"),
            label("bob", "p3", "y"), label("bob", "p4", "tie"),
            label("carol", "p1", "skip")]  # carol judged nothing
    assert inter_labeler_agreement(rows) == [
        {"labelers": ["alice", "bob"], "n": 4, "kappa": pytest.approx(7 / 11), "agreement": 0.75}]


def test_self_agreement_over_repeated_showings():
    rows = [label("alice", "p1", "x", repeat=0), label("alice", "p1", "x", "right", repeat=1),
            label("alice", "p1", "y", repeat=2),  # 3 judgements: 3 combinations, 1 agrees (x, x)
            label("alice", "p2", "x"),  # shown once: not a repeat
            label("bob", "p1", "tie", repeat=0), label("bob", "p1", "tie", repeat=1)]
    assert self_agreement(rows) == {
        "alice": {"repeated_pairs": 1, "comparisons": 3, "agreement": pytest.approx(1 / 3)},
        "bob": {"repeated_pairs": 1, "comparisons": 1, "agreement": 1.0}}


def test_position_bias_is_the_left_win_rate_among_left_right_answers():
    rows = [label("alice", "p1", "x", "left"), label("alice", "p2", "x", "left"), label("bob", "p3", "y", "right"),
            label("bob", "p4", "tie")]
    assert position_bias(rows) == {"n": 3, "rate": pytest.approx(2 / 3), "by_labeler": {
        "alice": {"n": 2, "rate": 1.0}, "bob": {"n": 1, "rate": 0.0}}}


def test_gold_agreement_with_a_gold_labeler_probability():
    gold = {("x1", "y1"): 0.9, ("y2", "x2"): 0.2, ("x3", "y3"): 0.5}  # P(chosen ≻ rejected)
    rows = [label("alice", "p1", "x"), label("alice", "p2", "y"), label("bob", "p3", "x"), label("bob", "p4", "tie")]
    stats = gold_agreement(rows, lambda prompt, y1, y2: gold[y1, y2])
    # agreement per answer: 1 (0.9 > ½), 0 (0.2 < ½), ½ (on the fence); the tie is not compared
    assert stats["n"] == 3 and stats["rate"] == pytest.approx(1.5 / 3)
    assert stats["mean_gold_prob"] == pytest.approx((0.9 + 0.2 + 0.5) / 3)
    assert stats["by_labeler"] == {"alice": {"n": 2, "rate": 0.5}, "bob": {"n": 1, "rate": 0.5}}
    assert stats["not_judged"] == 0


def test_gold_agreement_counts_prompts_the_gold_labeler_cannot_judge():
    def prob(prompt, y1, y2):
        if prompt == "prompt of p2":
            raise InputError(f"not a prompt of the world: {prompt!r}", field="prompt")
        return 0.8

    stats = gold_agreement([label("alice", "p1", "x"), label("alice", "p2", "x")], prob)
    assert stats["n"] == 1 and stats["rate"] == 1.0 and stats["mean_gold_prob"] == pytest.approx(0.8)
    assert stats["not_judged"] == 1 and stats["first_not_judged_reason"] == "not a prompt of the world: 'prompt of p2'"


def test_reward_model_agreement_scores_chosen_and_rejected():
    scores = {"x1": 2.0, "y1": 1.0, "x2": 0.0, "y2": 3.0}
    calls = []

    def score(prompts, responses):
        calls.append((prompts, responses))
        return [scores[r] for r in responses]

    rows = [label("alice", "p1", "x"), label("alice", "p2", "x"), label("alice", "p3", "skip")]
    stats = reward_model_agreement(rows, score)
    assert stats["n"] == 2 and stats["rate"] == 0.5  # x1 > y1 agrees, x2 < y2 does not
    assert calls == [(["prompt of p1", "prompt of p2"] * 2, ["x1", "x2", "y1", "y2"])]


def test_label_stats_report():
    rows = [label("alice", "p1", "x", time="t1"), undo("alice", "p1", "t1"), label("alice", "p1", "y", time="t2"),
            label("bob", "p1", "y"), label("bob", "p2", "skip")]
    stats = label_stats(rows, gold_prob=lambda prompt, y1, y2: 1.0)
    assert stats["labels"] == 3 and stats["undo_rows"] == 1
    assert stats["choices_by_labeler"] == {"alice": {"left": 1}, "bob": {"left": 1, "skip": 1}}
    assert stats["inter_labeler"] == [{"labelers": ["alice", "bob"], "n": 1, "kappa": None, "agreement": 1.0}]
    assert stats["gold_agreement"]["rate"] == 1.0 and "reward_model_agreement" not in stats
    json.dumps(stats, allow_nan=False)  # plain JSON


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_read_label_rows_validates_and_defaults_repeat(tmp_path):
    row = label("alice", "p1", "x")
    del row["repeat"]
    write_rows(tmp_path / "labels.jsonl", [row, undo("alice", "p1", "t0")])
    rows = read_label_rows(tmp_path / "labels.jsonl")
    assert [r["repeat"] for r in rows] == [0, 0] and rows[0]["chosen"] == "x1"


@pytest.mark.parametrize("change, message", [
    ({"event": "vote"}, r'"event": expected "label" or "undo", got \'vote\''),
    ({"choice": "maybe"}, r'"choice": expected one of left, right, tie, both_bad, skip'),
    ({"order": ["a", "a"]}, r'"order": expected \["a", "b"\] or \["b", "a"\]'),
    ({"labeler": ""}, r'"labeler": expected a non-empty string'),
    ({"repeat": -1}, r'"repeat": expected a whole number >= 0'),
    ({"chosen": None}, r'"chosen": expected a string or a list of messages, got null'),
    ({"prompt": ""}, r'"prompt": empty string'),
    ({"reason": 3}, r'"reason": expected a string or null'),
])
def test_read_label_rows_names_line_and_field(tmp_path, change, message):
    write_rows(tmp_path / "labels.jsonl", [label("alice", "p1", "x"), {**label("alice", "p2", "x"), **change}])
    with pytest.raises(InputError, match="labels.jsonl:2: " + message):
        read_label_rows(tmp_path / "labels.jsonl")


def test_undo_row_needs_undoes_time():
    row = undo("alice", "p1", "t1")
    del row["undoes_time"]
    with pytest.raises(InputError, match='"undoes_time": expected a non-empty string'):
        check_label_row(row)


def test_data_check_reads_a_label_file_with_an_undo_as_training_does(tmp_path):
    """`tether data check` accepted only pair files and stopped at an undo row that `rm train` reads (issue 21)."""
    from tether.data import read_preferences
    from tether.data.check import DataCheckConfig, data_stats, format_report
    path = tmp_path / "labels.jsonl"
    rows = [label("ann", "p1", "x", time="t1"), label("ann", "p2", "y", time="t2"), undo("ann", "p2", "t2"),
            label("ann", "p3", "tie", time="t3")]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    stats = data_stats(DataCheckConfig(file=str(path)))
    assert (stats["kind"], stats["rows"], stats["formats"]) == ("labels", 4, {"label": 3, "undo": 1})
    assert stats["choices"] == {"left": 1, "tie": 1}
    assert len(read_preferences(path)) == 1 and stats["chosen_longer"] == 0.0
    assert "answers in force: left 1, tie 1" in format_report(stats)
