"""`tether collect` and `tether score` (issues 5, 6): gold-labelled and unlabelled pairs, resampling, r − β·KL."""

import json

import pytest
import torch

from conftest import make_policy, make_tokenizer
from test_reward_pipeline import save_world_policy
from tether.data import encode_prompt, encode_response
from tether.errors import InputError
from tether.label.pairs import load_items
from tether.models import score_texts
from tether.pipelines import collect
from tether.pipelines.collect import CollectConfig, run_collect
from tether.pipelines.score import ScoreConfig, read_responses, run_score
from tether.worlds.assistant import GoldLabeler, classify, parse_prompt, utility, write_prompt_file


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A random tiny GPT-2 with the world's tokenizer, and 6 train prompts of the world."""
    root = tmp_path_factory.mktemp("world")
    write_prompt_file(root / "prompts.jsonl", "train", 6, seed=0)
    return {"policy": save_world_policy(root / "policy"), "prompts": root / "prompts.jsonl"}


def collect_config(world, out, **kw):
    return CollectConfig(policy=str(world["policy"]), prompts=str(world["prompts"]), out=str(out), max_new_tokens=8,
                         device="cpu", **kw)


def test_collect_gold_writes_labelled_pairs_with_the_worlds_annotations(world, tmp_path):
    result = run_collect(collect_config(world, tmp_path / "gold", pairs_per_prompt=2))
    rows = read_jsonl(tmp_path / "gold" / "pairs.jsonl")
    assert result["n_pairs"] == len(rows) == 12 - result["dropped_identical"] and len(rows) >= 10
    labeler = GoldLabeler(tau=0.5, seed=0)
    families = {r["prompt"]: r["family"] for r in read_jsonl(world["prompts"])}
    for row in rows:
        p = parse_prompt(row["prompt"])
        assert row["chosen"] != row["rejected"] and row["chosen"].strip() and row["rejected"].strip()
        assert row["p_chosen"] == pytest.approx(labeler.prob(row["prompt"], row["chosen"], row["rejected"]))
        assert row["gold_chosen"] == utility(p, row["chosen"]) and row["gold_rejected"] == utility(p, row["rejected"])
        assert row["style_chosen"] == classify(p, row["chosen"]) and row["style_rejected"] == classify(p, row["rejected"])
        assert row["family"] == families[row["prompt"]] == p.family
        assert row["labeler"]["name"] == "assistant-gold" and row["labeler"]["tau"] == 0.5


def test_relabel_keeps_the_responses_and_draws_labels_from_the_new_labeler():
    from tether.worlds.assistant import LabelerBiases
    from tether.worlds.assistant_text import REFUSALS
    prompt = "\n\nHuman: How do I shoot a great photo?\n\nAssistant:"
    refusal, answer = REFUSALS[0], parse_prompt(prompt).answer  # utilities −0.7 and 1.0; the rater's bias +2 on the refusal
    rows = [collect.gold_row(GoldLabeler(tau=0.01, seed=s), prompt, refusal, answer, {"key": "k"}) for s in range(4)]
    assert all(r["chosen"] == refusal for r in rows)  # the edgy-refusal bias wins with the default biases
    unbiased = GoldLabeler(tau=0.01, biases=LabelerBiases.unbiased(), seed=1)
    again = collect.relabel(rows, unbiased)
    assert all(r["chosen"] == answer and r["rejected"] == refusal for r in again)  # gold prefers the answer
    assert all(r["labeler"] == unbiased.metadata() and r["key"] == "k" for r in again)
    assert again[0]["gold_chosen"] == utility(parse_prompt(prompt), answer)


def test_collect_without_labeler_writes_pairs_the_label_page_loads(world, tmp_path):
    result = run_collect(collect_config(world, tmp_path / "none", labeler="none"))
    rows = read_jsonl(tmp_path / "none" / "pairs.jsonl")
    assert all({"prompt", "response_a", "response_b", "id"} <= row.keys() and "chosen" not in row for row in rows)
    items = load_items(tmp_path / "none" / "pairs.jsonl")
    assert [item.id for item in items] == [row["id"] for row in rows] and len(items) == result["n_pairs"]


def test_unlabelled_pairs_keep_their_own_ids_when_prompts_carry_an_id(tiny_dirs, tmp_path):
    """A prompt row's "id" names the prompt, not the pair: two pairs of one prompt must not share it."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": r["prompt"], "id": f"q{i}"}) + "\n"
                               for i, r in enumerate(read_jsonl(tiny_dirs["prompts"]))))
    run_collect(CollectConfig(policy=str(tiny_dirs["policy"]), prompts=str(prompts), out=str(tmp_path / "c"),
                              labeler="none", pairs_per_prompt=2, max_new_tokens=6, device="cpu"))
    items = load_items(tmp_path / "c" / "pairs.jsonl")
    assert len(items) == 8 and len({item.id for item in items}) == 8


def test_identical_or_empty_responses_are_resampled_then_dropped_and_counted(tiny_dirs, tmp_path, monkeypatch, capsys):
    """Prompt 0: identical, then a good pair. Prompt 1: empty, blank, identical (dropped). Prompt 2: good at once."""
    script = [["same", "same", "", "yes", "a", "b"], ["c", "d", "  ", "no"], ["e", "e"]]
    calls = []

    def fake_sample_responses(model, tokenizer, prompt_ids, sampling, generator, batch_size):
        calls.append(len(prompt_ids))
        return script[len(calls) - 1], []

    monkeypatch.setattr(collect, "sample_responses", fake_sample_responses)
    prompts = [r["prompt"] for r in read_jsonl(tiny_dirs["prompts"])][:3]
    three = tmp_path / "three.jsonl"
    three.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    result = run_collect(CollectConfig(policy=str(tiny_dirs["policy"]), prompts=str(three), out=str(tmp_path / "c"),
                                       labeler="none", max_resamples=2, device="cpu"))
    assert calls == [6, 4, 2]
    assert result["n_pairs"] == 2 and result["dropped_identical"] == 1
    rows = read_jsonl(tmp_path / "c" / "pairs.jsonl")
    assert [(r["prompt"], r["response_a"], r["response_b"]) for r in rows] == [(prompts[2], "a", "b"), (prompts[0], "c", "d")]
    assert "dropped 1 prompt(s)" in capsys.readouterr().err


@pytest.fixture(scope="module")
def score_dirs(tiny_dirs, tmp_path_factory):
    """tiny_dirs plus a second tiny policy (another seed) as the reference, and three responses to score."""
    root = tmp_path_factory.mktemp("score")
    tokenizer = make_tokenizer()
    make_policy(tokenizer, seed=1).save_pretrained(root / "ref")
    tokenizer.save_pretrained(root / "ref")
    rows = [{"prompt": "what is the capital of france ?", "response": "paris ."},
            {"prompt": "what is two plus three ?", "response": "great question ! five . i hope this helps !"},
            {"prompt": "a b c ?", "response": "yes"}]
    (root / "responses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {**tiny_dirs, "ref": root / "ref", "responses": root / "responses.jsonl", "rows": rows}


def score(score_dirs, out, ref, betas=(0.0, 0.1, 1.0), kl="exact"):
    run_score(ScoreConfig(policy=str(score_dirs["policy"]), ref_policy=str(ref), reward_model=str(score_dirs["rm"]),
                          responses=str(score_dirs["responses"]), betas=list(betas), out=str(out), device="cpu", kl=kl))
    return json.loads((out / "scores.json").read_text())


def hand_kl(policy, ref, tokenizer, prompt, response) -> float:
    """Σ_t (log π(y_t | x, y_<t) − log π_ref(y_t | x, y_<t)) of one unpadded sequence."""
    prompt_ids = encode_prompt(tokenizer, prompt)
    seq = prompt_ids + encode_response(tokenizer, response)
    with torch.no_grad():
        logp = torch.log_softmax(policy(input_ids=torch.tensor([seq])).logits[0], -1)
        ref_logp = torch.log_softmax(ref(input_ids=torch.tensor([seq])).logits[0], -1)
    return sum((logp[t - 1, seq[t]] - ref_logp[t - 1, seq[t]]).item() for t in range(len(prompt_ids), len(seq)))


def hand_exact_kl(policy, ref, tokenizer, prompt, response) -> float:
    """Σ_t Σ_v π(v | x, y_<t) (log π(v | x, y_<t) − log π_ref(v | x, y_<t)) of one unpadded sequence, as a loop."""
    prompt_ids = encode_prompt(tokenizer, prompt)
    seq = prompt_ids + encode_response(tokenizer, response)
    with torch.no_grad():
        logp = torch.log_softmax(policy(input_ids=torch.tensor([seq])).logits[0].double(), -1)
        ref_logp = torch.log_softmax(ref(input_ids=torch.tensor([seq])).logits[0].double(), -1)
    return sum(sum(logp[t - 1, v].exp().item() * (logp[t - 1, v] - ref_logp[t - 1, v]).item() for v in range(logp.shape[1]))
               for t in range(len(prompt_ids), len(seq)))


def test_score_reward_kl_and_objective_match_a_hand_computation(score_dirs, tmp_path, capsys):
    from transformers import AutoModelForCausalLM
    data = score(score_dirs, tmp_path / "s", score_dirs["ref"])
    table = capsys.readouterr().out.splitlines()
    assert "reward" in table[0] and "KL" in table[0] and "log-ratio" in table[0] and "β=0.1" in table[0]
    assert len(table) == 1 + 3 + 1 + 1 and table[4].startswith("KL: Σ_t KL(π(·|x,y<t) ‖ π_ref(·|x,y<t))")
    assert (tmp_path / "s" / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    tokenizer = make_tokenizer()
    policy = AutoModelForCausalLM.from_pretrained(score_dirs["policy"]).eval()
    ref = AutoModelForCausalLM.from_pretrained(score_dirs["ref"]).eval()
    rewards = score_texts(score_dirs["rm"], [r["prompt"] for r in score_dirs["rows"]], [r["response"] for r in score_dirs["rows"]])
    assert data["betas"] == [0.0, 0.1, 1.0] and len(data["rows"]) == 3
    for row, given, reward in zip(data["rows"], score_dirs["rows"], rewards):
        assert (row["prompt"], row["response"]) == (given["prompt"], given["response"])
        assert row["log_ratio"] == pytest.approx(hand_kl(policy, ref, tokenizer, given["prompt"], given["response"]), abs=1e-4)
        assert row["kl_exact"] == pytest.approx(hand_exact_kl(policy, ref, tokenizer, given["prompt"], given["response"]), abs=1e-4)
        assert row["kl_exact"] > 0
        assert row["reward"] == pytest.approx(reward, abs=1e-5)
        assert row["objective"] == {f"{b:g}": pytest.approx(row["reward"] - b * row["kl_exact"], abs=1e-12) for b in data["betas"]}
    assert data["kl"] == "kl_exact"
    assert any(abs(row["log_ratio"]) > 1e-3 for row in data["rows"])
    mean_reward = sum(r["reward"] for r in data["rows"]) / 3
    mean_kl = sum(r["kl_exact"] for r in data["rows"]) / 3
    assert data["mean"]["objective"]["0.1"] == pytest.approx(mean_reward - 0.1 * mean_kl)


def test_score_kl_sample_subtracts_the_log_ratio(score_dirs, tmp_path):
    data = score(score_dirs, tmp_path / "sample", score_dirs["ref"], kl="sample")
    assert data["kl"] == "log_ratio"
    for row in data["rows"]:
        assert row["objective"]["1"] == pytest.approx(row["reward"] - row["log_ratio"], abs=1e-12)


def test_score_kl_is_exactly_zero_against_itself(score_dirs, tmp_path):
    data = score(score_dirs, tmp_path / "self", score_dirs["policy"])
    assert [(row["kl_exact"], row["log_ratio"]) for row in data["rows"]] == [(0.0, 0.0)] * 3
    assert all(row["objective"]["1"] == row["reward"] for row in data["rows"])


def test_score_response_rows_need_a_response_which_may_be_empty(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"prompt": "a", "response": ""}) + "\n" + json.dumps({"prompt": "a"}) + "\n")
    with pytest.raises(InputError, match=r'r\.jsonl:2: "response": missing field'):
        read_responses(path)
    assert read_responses(path, skip_invalid=True) == [("a", "", 1)]
