"""`tether rm train` / `tether rm eval` (issue 5): transformers-format models, HH data, label files, eval numbers, bad input."""

import json
import math
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, GPT2Config, GPT2ForSequenceClassification

from tether.cli import main
from tether.data import encode_response, read_preferences
from tether.models import score_texts
from tether.pipelines.reward import RMTrainConfig, expected_calibration_error, run_rm_train
from tether.runlog import read_metrics
from tether.worlds.assistant import (WORLD, GoldLabeler, build_model_config, build_tokenizer, format_prompt, make_prompts,
                                     sample_response, styles_for)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def world_pairs(n: int, seed: int) -> list[dict]:
    """`n` explicit-prompt pairs of the built-in world: two styles per prompt, labelled by the gold labeler."""
    rng, labeler = random.Random(seed), GoldLabeler(seed=seed)
    rows = []
    for p in make_prompts("train", n, seed):
        style_1, style_2 = rng.sample(styles_for(p.family), 2)
        prompt = format_prompt(p.text)
        y1, y2 = " " + sample_response(p, style_1, rng), " " + sample_response(p, style_2, rng)
        first = labeler.label(prompt, y1, y2)
        (chosen, style_c), (rejected, style_r) = ((y1, style_1), (y2, style_2)) if first else ((y2, style_2), (y1, style_1))
        rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, "family": p.family,
                     "style_chosen": style_c, "style_rejected": style_r, "p_chosen": labeler.prob(prompt, chosen, rejected)})
    return rows


def save_world_policy(path, seed: int = 0):
    """A randomly initialised tiny GPT-2 with the world's tokenizer, saved as a transformers directory."""
    from transformers import GPT2LMHeadModel
    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    GPT2LMHeadModel(build_model_config(tokenizer, n_layer=2, n_embd=32, n_head=2)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def world_rm(tmp_path_factory):
    """{'policy', 'train', 'eval', 'run', 'result'}: a reward model trained by `run_rm_train` on 200 world pairs."""
    root = tmp_path_factory.mktemp("rm")
    policy = save_world_policy(root / "policy")
    train = write_jsonl(root / "train.jsonl", world_pairs(200, seed=0))
    held = write_jsonl(root / "eval.jsonl", world_pairs(40, seed=1))
    result = run_rm_train(RMTrainConfig(init=str(policy), data=str(train), eval_data=str(held), out=str(root / "run"),
                                        epochs=2, batch_size=32, eval_every=4, device="cpu", **WORLD.tuned["rm"]))
    return {"policy": policy, "train": train, "eval": held, "run": root / "run", "result": result}


def train_losses(run) -> list[float]:
    return [row["train/loss"] for row in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]


@pytest.mark.parametrize("memory", [{"micro_batch_size": 10}, {"gradient_checkpointing": True}],
                         ids=["micro-batches", "checkpointing"])
def test_memory_features_give_the_loss_curve_of_one_plain_batch(world_rm, tmp_path, memory):
    """Micro-batches of 10, 10, 10, 2 pairs (gradients accumulated) or recomputed activations: the same
    global batch of 32 pairs, the same loss at every step, to float rounding; every row has the peak memory."""
    run_rm_train(RMTrainConfig(init=str(world_rm["policy"]), data=str(world_rm["train"]), out=str(tmp_path / "run"),
                               eval_data=str(world_rm["eval"]), epochs=2, batch_size=32, eval_every=100, device="cpu",
                               **WORLD.tuned["rm"], **memory))
    curve = train_losses(tmp_path / "run")
    assert len(curve) >= 10
    assert curve == pytest.approx(train_losses(world_rm["run"]), rel=1e-5)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(row["memory/peak_gb"] > 0.01 for row in rows)


def test_rm_train_writes_a_transformers_reward_model_curves_and_metrics(world_rm):
    run, result = world_rm["run"], world_rm["result"]
    model = AutoModelForSequenceClassification.from_pretrained(run / "model")
    tokenizer = AutoTokenizer.from_pretrained(run / "model")
    assert model.config.num_labels == 1 and model.config.pad_token_id == tokenizer.pad_token_id
    assert (run / "curves.png").read_bytes()[:8] == PNG_MAGIC
    evals = [r for r in read_metrics(run / "metrics.jsonl") if "eval/accuracy" in r]
    assert evals and 0 <= evals[-1]["eval/accuracy"] <= 1
    assert result["eval/accuracy"] == evals[-1]["eval/accuracy"]
    assert (result["n_train"], result["n_eval"]) == (200, 40)
    assert result["steps"] == 2 * math.ceil(200 / 32)


def plain_scores(model_dir, prompts, responses) -> list[float]:
    """Scores from plain transformers: prompt + response + EOS, right-padded, the model's own pooling."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    seqs = [tokenizer(p)["input_ids"] + tokenizer(r, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            for p, r in zip(prompts, responses)]
    width = max(map(len, seqs))
    ids = torch.tensor([s + [tokenizer.pad_token_id] * (width - len(s)) for s in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits.squeeze(-1).tolist()


def test_plain_transformers_scores_equal_score_texts(world_rm):
    rows = [json.loads(line) for line in world_rm["eval"].read_text().splitlines()][:8]
    prompts = [r["prompt"] for r in rows] * 2
    responses = [r["chosen"] for r in rows] + [r["rejected"] for r in rows]
    assert len({len(r) for r in responses}) > 1, "the batch needs padding"
    ours = score_texts(world_rm["run"] / "model", prompts, responses)
    np.testing.assert_allclose(ours, plain_scores(world_rm["run"] / "model", prompts, responses), atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def foreign_rm(tmp_path_factory):
    """A reward model made with transformers alone: GPT2ForSequenceClassification, num_labels=1, pad_token_id."""
    path = tmp_path_factory.mktemp("foreign") / "rm"
    tokenizer = build_tokenizer()
    torch.manual_seed(3)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=2, n_head=2, num_labels=1,
                        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    GPT2ForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def foreign_eval(world_rm, foreign_rm, tmp_path_factory):
    """`tether rm eval` of the transformers-made reward model on 40 world pairs, and scores worked by hand."""
    out = tmp_path_factory.mktemp("foreign_eval") / "eval"
    assert main(["rm", "eval", "--model", str(foreign_rm), "--data", str(world_rm["eval"]), "--out", str(out),
                 "--device", "cpu"]) == 0
    rows = [json.loads(line) for line in world_rm["eval"].read_text().splitlines()]
    prompts = [r["prompt"] for r in rows]
    rc = np.array(score_texts(foreign_rm, prompts, [r["chosen"] for r in rows]))
    rr = np.array(score_texts(foreign_rm, prompts, [r["rejected"] for r in rows]))
    assert 0 < (rc > rr).mean() < 1, "the hand check needs both right and wrong pairs"
    return {"metrics": json.loads((out / "eval.json").read_text()), "rows": rows, "rc": rc, "rr": rr,
            "disagreements": [json.loads(line) for line in (out / "disagreements.jsonl").read_text().splitlines()]}


def test_rm_eval_numbers_match_a_hand_computation(foreign_eval):
    """A transformers-made reward model is accepted; eval.json agrees with `score_texts` scores worked by hand."""
    metrics, rows, rc, rr = (foreign_eval[k] for k in ("metrics", "rows", "rc", "rr"))
    correct = rc > rr
    assert metrics["n_pairs"] == len(rows)
    assert metrics["accuracy"] == pytest.approx(correct.mean(), abs=1e-6)
    assert metrics["loss"] == pytest.approx(np.mean(np.log1p(np.exp(-(rc - rr)))), abs=1e-5)
    p_chosen = 1 / (1 + np.exp(-(rc - rr)))
    assert metrics["ece"] == pytest.approx(expected_calibration_error(torch.tensor(p_chosen)), abs=1e-5)
    assert metrics["label_ceiling"] == pytest.approx(np.mean([max(r["p_chosen"], 1 - r["p_chosen"]) for r in rows]))

    tokenizer = build_tokenizer()
    lc = np.array([len(encode_response(tokenizer, r["chosen"])) for r in rows])
    lr = np.array([len(encode_response(tokenizer, r["rejected"])) for r in rows])
    differ = lc != lr
    bias = metrics["length_bias"]
    assert bias["longer_wins_labels"] == pytest.approx((lc > lr)[differ].mean(), abs=1e-6)
    assert bias["longer_wins_model"] == pytest.approx((correct == (lc > lr))[differ].mean(), abs=1e-6)
    corr = np.corrcoef(np.concatenate([rc, rr]), np.concatenate([lc, lr]))[0, 1]
    assert bias["reward_length_corr"] == pytest.approx(corr, abs=1e-5)

    for field in ("family", "style_chosen"):
        values = sorted({r[field] for r in rows})
        expected = {v: {"accuracy": pytest.approx(correct[[r[field] == v for r in rows]].mean(), abs=1e-9),
                        "n": sum(r[field] == v for r in rows)} for v in values}
        assert metrics["by_category"][field] == expected


def test_disagreements_are_the_wrong_pairs_most_confident_first(foreign_eval):
    rows, rc, rr, disagreements = (foreign_eval[k] for k in ("rows", "rc", "rr", "disagreements"))
    p_chosen = 1 / (1 + np.exp(-(rc - rr)))
    wrong = sorted(np.flatnonzero(rc <= rr), key=lambda i: p_chosen[i])
    assert [(d["prompt"], d["chosen"], d["rejected"]) for d in disagreements] == \
        [(rows[i]["prompt"], rows[i]["chosen"], rows[i]["rejected"]) for i in wrong]
    np.testing.assert_allclose([d["reward_chosen"] for d in disagreements], rc[wrong], atol=1e-5)
    np.testing.assert_allclose([d["reward_rejected"] for d in disagreements], rr[wrong], atol=1e-5)
    assert all(d["family"] == rows[i]["family"] for d, i in zip(disagreements, wrong))


def test_disagreements_p_chosen_is_the_models(foreign_eval):
    rc, rr, disagreements = (foreign_eval[k] for k in ("rc", "rr", "disagreements"))
    p_chosen = np.sort(1 / (1 + np.exp(-(rc - rr)))[rc <= rr])
    np.testing.assert_allclose([d["p_chosen"] for d in disagreements], p_chosen, atol=1e-5)


def test_expected_calibration_error_by_hand():
    """p_chosen [0.9, 0.2, 0.6]: confidences 0.9, 0.8, 0.6 fall in three bins with accuracy 1, 0, 1.
    ECE = (|1 − 0.9| + |0 − 0.8| + |1 − 0.6|) / 3."""
    assert expected_calibration_error(torch.tensor([0.9, 0.2, 0.6])) == pytest.approx((0.1 + 0.8 + 0.4) / 3)


HH_TURNS = [("what is two plus three ?", "five ."), ("what is the capital of france ?", "paris ."),
            ("a b c ?", "d e f ."), ("what is e f g ?", "h .")]
HH_REFUSAL = "sorry i cannot help with that ."


def hh_rows() -> list[dict]:
    """Anthropic HH transcripts (implicit prompt); the last row is two turns long."""
    rows = [{"chosen": f"\n\nHuman: {q}\n\nAssistant: {a}", "rejected": f"\n\nHuman: {q}\n\nAssistant: {HH_REFUSAL}"}
            for q, a in HH_TURNS]
    history = "".join(f"\n\nHuman: {q}\n\nAssistant: {a}" for q, a in HH_TURNS[:2])
    rows.append({"chosen": history + "\n\nHuman: a b c ?\n\nAssistant: d e f .",
                 "rejected": history + f"\n\nHuman: a b c ?\n\nAssistant: {HH_REFUSAL}"})
    return rows


def test_hh_transcripts_train_and_evaluate(hh_policy, tmp_path):
    data = write_jsonl(tmp_path / "hh.jsonl", hh_rows())
    pairs = read_preferences(data)
    assert pairs[0].prompt == "\n\nHuman: what is two plus three ?\n\nAssistant:" and pairs[0].chosen == " five ."
    assert pairs[-1].prompt.count("\n\nAssistant:") == 3 and pairs[-1].rejected == " " + HH_REFUSAL
    assert main(["rm", "train", "--init", str(hh_policy), "--data", str(data), "--eval-data", str(data),
                 "--out", str(tmp_path / "rm"), "--epochs", "12", "--batch-size", "5", "--lr", "1e-2",
                 "--warmup-steps", "1", "--device", "cpu"]) == 0
    assert read_metrics(tmp_path / "rm" / "metrics.jsonl")[-1]["eval/accuracy"] == 1.0
    assert main(["rm", "eval", "--model", str(tmp_path / "rm" / "model"), "--data", str(data),
                 "--out", str(tmp_path / "eval"), "--device", "cpu"]) == 0
    metrics = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert metrics["n_pairs"] == 5 and metrics["accuracy"] == 1.0
    assert (tmp_path / "eval" / "disagreements.jsonl").read_text() == ""


def label_row(i: int, choice: str, chosen: str, rejected: str, time: str) -> dict:
    q, _ = HH_TURNS[i % len(HH_TURNS)]
    return {"event": "label", "prompt": q, "chosen": chosen, "rejected": rejected, "id": f"pair{i}", "repeat": 0,
            "labeler": "ann", "time": time, "choice": choice, "order": ["a", "b"], "reason": None}


def test_training_on_a_label_file_ignores_undone_labels_ties_and_skips(hh_policy, tmp_path):
    rows = [label_row(0, "left", " five .", " " + HH_REFUSAL, "2024-01-01T00:00:00.000000Z"),
            label_row(1, "right", " paris .", " " + HH_REFUSAL, "2024-01-01T00:00:01.000000Z"),
            label_row(2, "tie", " d e f .", " " + HH_REFUSAL, "2024-01-01T00:00:02.000000Z"),
            label_row(3, "skip", " h .", " " + HH_REFUSAL, "2024-01-01T00:00:03.000000Z"),
            label_row(4, "both_bad", " a .", " b .", "2024-01-01T00:00:04.000000Z"),
            label_row(5, "left", " " + HH_REFUSAL, " paris .", "2024-01-01T00:00:05.000000Z"),
            {"event": "undo", "id": "pair5", "repeat": 0, "labeler": "ann", "time": "2024-01-01T00:00:06.000000Z",
             "undoes_time": "2024-01-01T00:00:05.000000Z"},
            label_row(6, "left", " h .", " " + HH_REFUSAL, "2024-01-01T00:00:07.000000Z")]
    labels = write_jsonl(tmp_path / "labels.jsonl", rows)
    pairs = read_preferences(labels)
    assert [p.extra["id"] for p in pairs] == ["pair0", "pair1", "pair6"]
    result = run_rm_train(RMTrainConfig(init=str(hh_policy), data=str(labels), out=str(tmp_path / "rm"),
                                        eval_fraction=0.0, epochs=1, batch_size=8, device="cpu"))
    assert (result["n_train"], result["n_eval"], result["steps"]) == (3, 0, 3)  # batch sized to the 3 pairs: 1


def test_rm_train_missing_file_exits_2_with_one_line(hh_policy, tmp_path):
    out = tmp_path / "rm"
    result = subprocess.run([sys.executable, "-m", "tether", "rm", "train", "--init", str(hh_policy),
                             "--data", str(tmp_path / "missing.jsonl"), "--out", str(out), "--device", "cpu"],
                            capture_output=True, text=True)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "missing.jsonl" in lines[0] and "Traceback" not in result.stderr, result.stderr
    assert not out.exists()


@pytest.fixture
def no_load_bars():
    """In-process CLI calls: transformers' weight-loading bars off (a subprocess gets that from `tether.cli`)."""
    from transformers.utils import logging
    logging.disable_progress_bar()
    yield
    logging.enable_progress_bar()


@pytest.mark.parametrize("command", ["train", "eval"])
def test_rm_bad_row_names_file_line_and_field_and_writes_nothing(hh_policy, foreign_rm, tmp_path, capsys, no_load_bars,
                                                                 command):
    rows = hh_rows()
    rows[2]["rejected"] = 5
    data = write_jsonl(tmp_path / "bad.jsonl", rows)
    out = tmp_path / "out"
    model = ["--init", str(hh_policy)] if command == "train" else ["--model", str(foreign_rm)]
    assert main(["rm", command, *model, "--data", str(data), "--out", str(out), "--device", "cpu"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "bad.jsonl:3:" in lines[0] and '"rejected"' in lines[0], lines
    assert not out.exists()
