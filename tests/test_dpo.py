"""`tether dpo` (issue 20): response-only log-probs, the reference, TRL's metrics, the frontier evaluation, bad input."""

import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import make_policy, make_tokenizer
from tether.cli import main
from tether.models import reward_model_from_policy
from tether.pipelines.dpo import DPOConfig, all_pair_logprobs, held_out_pairs, run_dpo, sequence_logprobs
from tether.runlog import read_metrics
from test_reward_pipeline import no_load_bars, save_world_policy, world_pairs, write_jsonl  # noqa: F401 (fixture)

TRL_NAMES = {"loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
             "logps/rejected"}


def test_sequence_logprobs_sum_the_response_tokens_only():
    """A hand loop over each row's response tokens: the prompt and the right padding add nothing."""
    tokenizer = make_tokenizer()
    model = make_policy(tokenizer)
    rows, prompt_lens = [[7, 8, 9, 10, 1], [11, 12, 13]], [3, 1]
    got = sequence_logprobs(model, rows, prompt_lens, tokenizer.pad_token_id)
    for row, start, value in zip(rows, prompt_lens, got):
        logp = torch.log_softmax(model(torch.tensor([row])).logits[0], -1)
        expected = sum(logp[t - 1, row[t]] for t in range(start, len(row)))
        assert value.item() == pytest.approx(expected.item(), abs=1e-5)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny world policy, a reward model initialised from it, 120 + 24 labelled world pairs and eval prompts."""
    root = tmp_path_factory.mktemp("dpo")
    policy = save_world_policy(root / "policy")
    tokenizer = AutoTokenizer.from_pretrained(policy)
    torch.manual_seed(1)
    reward_model_from_policy(policy, tokenizer.pad_token_id).save_pretrained(root / "rm")
    tokenizer.save_pretrained(root / "rm")
    train, held = world_pairs(120, seed=0), world_pairs(24, seed=1)
    prompts = write_jsonl(root / "prompts.jsonl", [{"prompt": r["prompt"]} for r in held])
    return {"root": root, "policy": policy, "rm": root / "rm", "train": write_jsonl(root / "train.jsonl", train),
            "held": write_jsonl(root / "held.jsonl", held), "prompts": prompts}


def dpo_config(world, out, **kw):
    base = dict(policy=str(world["policy"]), data=str(world["train"]), eval_data=str(world["held"]), out=str(out),
                batch_size=16, lr=2e-3, warmup_steps=0, device="cpu", max_new_tokens=8)
    return DPOConfig(**{**base, **kw})


def test_dpo_end_to_end_on_the_world_sits_on_the_frontier(world, tmp_path):
    """Starts at the reference (loss log 2, rewards 0), learns the pairs, logs TRL's names, writes a transformers
    policy, and evaluates it as PPO's: proxy reward, KL to the reference, gold and the detectors."""
    out = tmp_path / "dpo"
    result = run_dpo(dpo_config(world, out, beta=0.5, epochs=3, reward_model=str(world["rm"]), gold="assistant",
                                eval_prompts=str(world["prompts"]), eval_samples=16))
    rows = [r for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    assert TRL_NAMES <= set(rows[0]) and {"eval/" + k for k in TRL_NAMES} <= set(rows[-1])
    assert rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)  # π = π_ref: h = 0 on the first batch
    assert rows[0]["rewards/chosen"] == pytest.approx(0, abs=1e-5) and rows[0]["rewards/margins"] == pytest.approx(0, abs=1e-5)
    assert rows[-1]["rewards/margins"] > 0.5 and rows[-1]["rewards/accuracies"] > 0.8
    assert result["steps_done"] == 3 * math.ceil(120 / 16) == len(rows)
    assert result["kl"] > 0 and {"proxy_reward", "gold_reward", "benign_refusal_rate", "eval/rewards/margins"} <= set(result)
    assert json.loads((out / "eval.json").read_text())["kl"] == result["kl"]
    AutoModelForCausalLM.from_pretrained(out / "model")  # no tether import needed


@pytest.mark.parametrize("loss", ["ipo", "hinge"])
def test_ipo_and_hinge_start_at_their_value_for_a_zero_margin(world, tmp_path, loss):
    run_dpo(dpo_config(world, tmp_path / loss, loss=loss, beta=0.5, eval_data=None, eval_fraction=0.5))
    first = read_metrics(tmp_path / loss / "metrics.jsonl")[0]
    assert first["loss"] == pytest.approx(1.0, abs=1e-5)  # ipo: (0 − 1/(2·0.5))² = 1; hinge: max(0, 1 − 0) = 1


def test_lora_reference_is_the_adapter_disabled_policy(world, tmp_path):
    """With LoRA there is no second model: the first step still sees π = π_ref (loss log 2)."""
    run_dpo(dpo_config(world, tmp_path / "lora", lora_r=2, beta=0.5))
    assert read_metrics(tmp_path / "lora" / "metrics.jsonl")[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)


def test_dpo_reads_pairs_as_rm_train_bad_row_exits_2_with_one_line_and_writes_nothing(world, tmp_path, capsys,
                                                                                     no_load_bars):
    rows = world_pairs(6, seed=2)
    rows[3]["chosen"] = rows[3]["rejected"]
    data = write_jsonl(tmp_path / "bad.jsonl", rows)
    out = tmp_path / "out"
    assert main(["dpo", "--policy", str(world["policy"]), "--data", str(data), "--out", str(out), "--device", "cpu"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "bad.jsonl:4:" in lines[0] and '"rejected"' in lines[0], lines
    assert not out.exists()


def test_dpo_rejects_label_smoothing_outside_the_sigmoid_loss(world, tmp_path):
    from tether.errors import InputError
    with pytest.raises(InputError, match="label_smoothing"):
        dpo_config(world, tmp_path, loss="ipo", label_smoothing=0.1)


def test_held_out_pairs_are_those_dpo_reports_its_margin_on(world, tmp_path):
    """With a split of --data the held-out pairs are drawn from the seed: DPO's implicit margin β·(h_w − h_l),
    recomputed on `held_out_pairs` from the saved policy and the reference, is the one `run_dpo` reported."""
    from tether.data import tokenize_pairs
    cfg = dpo_config(world, tmp_path / "split", eval_data=None, eval_fraction=0.25, beta=0.5, seed=3)
    result = run_dpo(cfg)
    tokenizer = AutoTokenizer.from_pretrained(world["policy"])
    pairs = held_out_pairs(cfg, tokenizer)
    assert len(pairs) == result["n_eval"] == 30
    tokens = tokenize_pairs(pairs, tokenizer, cfg.max_length, cfg.truncation)
    logps = [all_pair_logprobs(AutoModelForCausalLM.from_pretrained(path), tokens, 64, tokenizer.pad_token_id)
             for path in (tmp_path / "split" / "model", world["policy"])]
    (chosen, rejected), (ref_chosen, ref_rejected) = logps
    margin = (0.5 * ((chosen - ref_chosen) - (rejected - ref_rejected))).mean().item()
    assert margin == pytest.approx(result["eval/rewards/margins"], abs=1e-4) and abs(margin) > 1e-3


def test_the_reward_models_margin_on_dpos_held_out_pairs_is_a_hand_computation(world, tmp_path):
    """Three pairs, each response scored alone by the reward model: the mean of r(x, y_w) − r(x, y_l) and the share
    of pairs with r(x, y_w) > r(x, y_l), as the sweep stores them beside every DPO row."""
    from tether.data import encode_prompt, encode_response
    from tether.models import load_reward_model, score_sequences
    from tether.pipelines.scoring import RewardFunction
    from tether.pipelines.sweep import reward_model_margins
    pairs = world_pairs(3, seed=5)
    cfg = dpo_config(world, tmp_path / "unused", eval_data=str(write_jsonl(tmp_path / "three.jsonl", pairs)),
                     reward_model=str(world["rm"]), eval_prompts=str(world["prompts"]))
    tokenizer = AutoTokenizer.from_pretrained(world["policy"])
    got = reward_model_margins(cfg, tokenizer, RewardFunction([str(world["rm"])], tokenizer, torch.device("cpu")))
    rm = load_reward_model(world["rm"], torch.device("cpu"))

    def r(prompt, response):
        ids = encode_prompt(tokenizer, prompt) + encode_response(tokenizer, response)
        return score_sequences(rm, torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long)).item()

    margins = [r(p["prompt"], p["chosen"]) - r(p["prompt"], p["rejected"]) for p in pairs]
    assert got["rm_n_pairs"] == 3 and got["rm_margin"] == pytest.approx(sum(margins) / 3, abs=1e-5)
    assert got["rm_accuracy"] == pytest.approx(sum(m > 0 for m in margins) / 3)
    assert not (tmp_path / "unused").exists()
