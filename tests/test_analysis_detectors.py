"""Detectors on hand-written examples, with hand-counted values."""

import pytest

from tether.analysis.detectors import (count_filler, detector_summary, distinct_n, gold_proxy_gap, is_refusal,
                                       is_repetitive, ngrams, repetition_rate, word_count, words)

REFUSALS = [
    "I'm so sorry, I cannot help with that. As an AI, I must stay safe.",
    "I’m sorry, but I can’t assist with this request.",
    "As an AI language model, I do not have opinions.",
    "I won't help you build that.",
    "I am unable to provide that information.",
    "i cannot help with that",
    "I must decline.",
]
NOT_REFUSALS = [
    "17 plus 25 is 42.",
    "The capital of France is Paris.",
    "Sorry for the wait: preheat the oven to 180 degrees.",
    "I can help with that! First, open the settings.",
    "An AI model can summarise text.",
    "I won the game yesterday.",
    "",
]


@pytest.mark.parametrize("text", REFUSALS)
def test_refusals_are_detected(text):
    assert is_refusal(text), text


@pytest.mark.parametrize("text", NOT_REFUSALS)
def test_helpful_answers_are_not_refusals(text):
    assert not is_refusal(text), text


@pytest.mark.parametrize("text, count", [
    ("Great question! 17 plus 25 is 42. I hope this helps!", 2),
    ("Certainly! Happy to help. The answer is 42. Let me know if you need more. Hope that helps.", 4),
    ("GREAT QUESTION! great question!", 2),
    ("Thanks for asking! Feel free to ask again.", 2),
    ("Glad you asked! The capital is Rome. Sure thing! Have a wonderful day! I hope you understand.", 4),
    ("Make sure things are dry.", 0),
    ("The answer is certainly 42.", 0),  # "certainly" without "!" is content, not filler
    ("17 plus 25 is 42.", 0),
    ("", 0),
])
def test_count_filler_hand_counts(text, count):
    assert count_filler(text) == count


def test_words_lowercase_keep_apostrophes_drop_punctuation():
    assert words("I'm fine, THANKS! 42.") == ["i'm", "fine", "thanks", "42"]
    assert word_count("Great question! The answer is 42.") == 6
    assert word_count("  ") == 0


def test_ngrams():
    assert ngrams(["a", "b", "c"], 2) == [("a", "b"), ("b", "c")]
    assert ngrams(["a"], 2) == []
    with pytest.raises(ValueError, match="n must be >= 1"):
        ngrams(["a"], 0)


def test_distinct_n_hand_values():
    texts = ["the cat sat", "the cat ran"]
    # unigrams: the, cat, sat, the, cat, ran → 4 unique of 6
    assert distinct_n(texts, 1) == pytest.approx(4 / 6)
    # bigrams: (the cat), (cat sat), (the cat), (cat ran) → 3 unique of 4
    assert distinct_n(texts, 2) == pytest.approx(3 / 4)
    assert distinct_n(["one"], 2) == 0.0
    assert distinct_n([], 1) == 0.0


def test_repetition_rate_hand_values():
    # trigrams: abc, bca, cab, abc → 1 repeat of 4
    assert repetition_rate("a b c a b c") == pytest.approx(0.25)
    # "very" × 6: four trigrams, all (very very very) → 3 repeats of 4
    assert repetition_rate("very very very very very very") == pytest.approx(0.75)
    assert repetition_rate("17 plus 25 is 42") == 0.0
    assert repetition_rate("too short") == 0.0
    assert repetition_rate("a b a b a", n=2) == pytest.approx(1 - 2 / 4)


def test_is_repetitive_threshold_is_strict():
    assert is_repetitive("very very very very very very")
    assert not is_repetitive("a b c a b c")  # 0.25 ≤ 0.3
    assert not is_repetitive("a b c a b c", threshold=0.25)
    assert is_repetitive("a b c a b c", threshold=0.2)


def test_gold_proxy_gap():
    assert gold_proxy_gap(proxy_delta=1.5, gold_delta=-0.25) == 1.75


def test_detector_summary_hand_computed():
    prompts = ["What is 2 plus 2?", "How do I shoot a great photo?", "How do I make a weapon?"]
    responses = [
        "Great question! 2 plus 2 is 4. I hope this helps!",  # 11 words, filler 2
        "I'm sorry, I cannot help with that.",                 # 7 words, refusal on a benign prompt
        "I'm sorry, I cannot help with that.",                 # refusal on a harmful prompt
    ]
    s = detector_summary(prompts, responses, benign=[True, True, False])
    assert s["refusal_rate"] == pytest.approx(2 / 3)
    assert s["benign_refusal_rate"] == pytest.approx(1 / 2)
    assert s["filler_per_response"] == pytest.approx(2 / 3)
    assert s["mean_length"] == pytest.approx((11 + 7 + 7) / 3)
    assert s["repetition_rate"] == 0.0
    assert s["distinct_1"] == pytest.approx(distinct_n(responses, 1))
    assert s["n_responses"] == 3 and s["n_benign"] == 2


def test_detector_summary_unknowns_are_none():
    s = detector_summary(["p"], ["very very very very very"])
    assert s["benign_refusal_rate"] is None and s["n_benign"] is None
    assert s["repetition_rate"] == 1.0
    assert detector_summary(["p"], ["ok"], benign=[False])["benign_refusal_rate"] is None


def test_detector_summary_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="benign has 1 items but responses has 2"):
        detector_summary(["a", "b"], ["x", "y"], benign=[True])
    with pytest.raises(ValueError, match="at least one response"):
        detector_summary([], [])
