"""--dtype on the stages whose models are frozen (rm eval, score, collect, dpo's reference; issue 19):
bfloat16 weights where asked, results within measured tolerances of float32, the dtype and peak memory recorded,
a bad value one line and exit 2.

Tolerances are about five times the largest difference measured on these tiny models (bfloat16 keeps 8 bits of
mantissa: ~0.4% per rounding): rm eval loss 4e-5, reward mean 1e-4; score reward 9e-4 (of rewards up to 0.17),
exact KL 1.5e-4 (of 0.08), log-ratio 5e-3 (of 0.58); DPO implicit rewards 9e-5 at beta 0.1.
"""

import json
import random

import pytest
import torch

from conftest import WORDS
from tether.cli import main
from tether.models import score_texts
from tether.pipelines import collect, dpo, reward, score, scoring
from tether.worlds import reward_model_gold


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    """16 pairs of random words of the tiny vocabulary (and the same rows as {prompt, response} to score)."""
    rng, root = random.Random(0), tmp_path_factory.mktemp("pairs")
    words = lambda k: " ".join(rng.choices(WORDS, k=k))
    rows = [{"prompt": words(5) + " ?", "chosen": words(rng.randint(1, 6)), "rejected": words(rng.randint(1, 6))}
            for _ in range(16)]
    (root / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "responses.jsonl").write_text("".join(json.dumps({"prompt": r["prompt"], "response": r["chosen"]}) + "\n"
                                                  for r in rows))
    return root


@pytest.fixture
def loaded(monkeypatch):
    """The models the stages load, in order (each as it ends up: `.to(dtype)` converts a module in place)."""
    models = []
    for module, name in ((reward, "load_reward_model"), (scoring, "load_reward_model"), (reward_model_gold, "load_reward_model"),
                         (score, "load_causal_lm"), (collect, "load_causal_lm"), (dpo, "load_causal_lm")):
        monkeypatch.setattr(module, name, lambda *a, _real=getattr(module, name), **kw: models.append(_real(*a, **kw)) or models[-1])
    return models


def weight_dtypes(model) -> set:
    return {p.dtype for p in model.parameters()}


def test_rm_eval_in_bfloat16_is_close_to_float32_and_records_its_dtype(tiny_dirs, pairs_file, tmp_path, loaded):
    evals = {}
    for dtype in ("float32", "bfloat16"):
        out = tmp_path / dtype
        assert main(["rm", "eval", "--model", str(tiny_dirs["rm"]), "--data", str(pairs_file / "pairs.jsonl"),
                     "--out", str(out), "--device", "cpu", "--dtype", dtype]) == 0
        evals[dtype] = json.loads((out / "eval.json").read_text())
        assert weight_dtypes(loaded[-1]) == {getattr(torch, dtype)}
    fp32, bf16 = evals["float32"], evals["bfloat16"]
    assert (fp32["dtype"], bf16["dtype"]) == ("float32", "bfloat16")
    assert bf16["memory/peak_gb"] > 0.01
    assert bf16["loss"] == pytest.approx(fp32["loss"], abs=2e-4)
    assert bf16["reward_mean"] == pytest.approx(fp32["reward_mean"], abs=5e-4)
    assert bf16["accuracy"] == fp32["accuracy"]


def test_score_in_bfloat16_loads_every_frozen_model_so_and_is_close_to_float32(tiny_dirs, pairs_file, tmp_path, loaded):
    results = {}
    for dtype in ("float32", "bfloat16"):
        del loaded[:]
        rows = score.run_score(score.ScoreConfig(
            policy=str(tiny_dirs["policy"]), ref_policy=str(tiny_dirs["policy"]), reward_model=str(tiny_dirs["rm"]),
            gold=str(tiny_dirs["rm"]), responses=str(pairs_file / "responses.jsonl"), out=str(tmp_path / dtype),
            device="cpu", dtype=dtype))
        assert len(loaded) == 4  # policy, reference, reward model, gold
        assert all(weight_dtypes(m) == {getattr(torch, dtype)} for m in loaded)
        saved = json.loads((tmp_path / dtype / "scores.json").read_text())
        assert saved["dtype"] == dtype and saved["memory/peak_gb"] > 0.01
        results[dtype] = rows
    for key, tol in (("reward", 5e-3), ("gold", 5e-3), ("kl_exact", 1e-3), ("log_ratio", 2.5e-2)):
        assert [r[key] for r in results["bfloat16"]] == pytest.approx([r[key] for r in results["float32"]], abs=tol), key
    assert all(isinstance(r["reward"], float) for r in results["bfloat16"])


def test_collect_samples_from_a_bfloat16_policy_and_labels_with_a_bfloat16_gold(tiny_dirs, tmp_path, loaded):
    result = collect.run_collect(collect.CollectConfig(
        policy=str(tiny_dirs["policy"]), prompts=str(tiny_dirs["prompts"]), gold=str(tiny_dirs["rm"]),
        pairs_per_prompt=2, max_new_tokens=4, out=str(tmp_path / "c"), device="cpu", dtype="bfloat16"))
    assert [weight_dtypes(m) for m in loaded] == [{torch.bfloat16}] * 2  # the policy, then the gold on first use
    assert result["dtype"] == "bfloat16" and result["memory/peak_gb"] > 0.01
    rows = [json.loads(line) for line in (tmp_path / "c" / "pairs.jsonl").read_text().splitlines()]
    assert len(rows) == result["n_pairs"] >= 4
    fp32 = score_texts(str(tiny_dirs["rm"]), [r["prompt"] for r in rows], [r["chosen"] for r in rows])
    assert [r["gold_chosen"] for r in rows] == pytest.approx(fp32, abs=5e-3)


def test_dpo_reference_in_bfloat16_the_trained_policy_in_float32(tiny_dirs, pairs_file, tmp_path, loaded):
    evals = {}
    for dtype in ("float32", "bfloat16"):
        del loaded[:]
        evals[dtype] = dpo.run_dpo(dpo.DPOConfig(
            policy=str(tiny_dirs["policy"]), data=str(pairs_file / "pairs.jsonl"), eval_fraction=0.25,
            out=str(tmp_path / dtype), batch_size=4, lr=1e-3, device="cpu", dtype=dtype))
        policy, ref = loaded
        assert weight_dtypes(policy) == {torch.float32} and weight_dtypes(ref) == {getattr(torch, dtype)}
    rows = [json.loads(line) for line in (tmp_path / "bfloat16" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["memory/peak_gb"] > 0.01 for r in rows)
    for key in ("eval/rewards/chosen", "eval/rewards/rejected"):
        assert evals["bfloat16"][key] == pytest.approx(evals["float32"][key], abs=5e-4), key


@pytest.mark.parametrize("command", ["rm eval", "score", "collect", "dpo"])
def test_dtype_is_in_help_and_a_bad_value_exits_2_with_one_line(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([*command.split(), "--help"])
    assert e.value.code == 0
    assert "--dtype" in capsys.readouterr().out
    assert main([*command.split(), "--dtype", "float16"]) == 2
    err = capsys.readouterr().err
    assert err == f"tether {command}: error: \"dtype\": must be one of auto, float32, bfloat16, got 'float16'\n"


def test_a_bfloat16_models_logits_are_sampled_as_their_float32_values():
    """Sampling upcasts: a cumulative sum over the vocabulary in bfloat16 would keep ~3 significant digits."""
    from tether.rollout import sample_next_token
    logits = torch.randn(4, 1000, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    tokens, logprobs = sample_next_token(logits, 1.0, 0, 1.0, torch.Generator().manual_seed(1))
    tokens32, logprobs32 = sample_next_token(logits.float(), 1.0, 0, 1.0, torch.Generator().manual_seed(1))
    assert logprobs.dtype == torch.float32
    assert torch.equal(tokens, tokens32) and torch.equal(logprobs, logprobs32)
