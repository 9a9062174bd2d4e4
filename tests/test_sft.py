"""`tether sft` (issue 4): plain-transformers output, seeded bytes, completion-only per-sequence loss, bad data."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import make_policy, make_tokenizer
from tether.pipelines.sft import SFTConfig, run_sft, sft_batch, sft_loss
from tether.worlds.assistant import WORLD, write_sft_corpus


def tiny_sft(data, out, seed=0, **memory):
    return run_sft(SFTConfig(data=str(data), out=str(out), model="builtin:assistant", epochs=1, batch_size=32,
                             seed=seed, device="cpu", log_every=1, **WORLD.tuned["sft"], **memory))


def loss_curve(run) -> list[float]:
    return [r["train/loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "train/loss" in r]


@pytest.fixture(scope="module")
def world_sft(tmp_path_factory):
    """A tiny SFT run of the built-in world's model on 300 corpus rows: (corpus path, run directory)."""
    root = tmp_path_factory.mktemp("sft")
    write_sft_corpus(root / "sft.jsonl", n=300)
    tiny_sft(root / "sft.jsonl", root / "a")
    return root / "sft.jsonl", root / "a"


def test_sft_writes_model_and_metrics(world_sft):
    _, run = world_sft
    assert (run / "model" / "model.safetensors").is_file() and (run / "config.yaml").is_file()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("train/loss" in r for r in rows) and any("eval/loss" in r for r in rows), rows
    assert all(r["train/grad_norm"] > 0 for r in rows if "train/loss" in r), rows


@pytest.mark.parametrize("memory", [{"micro_batch_size": 10}, {"gradient_checkpointing": True}],
                         ids=["micro-batches", "checkpointing"])
def test_memory_features_give_the_loss_curve_of_one_plain_batch(world_sft, tmp_path, memory):
    """Micro-batches of 10, 10, 10, 2 rows (gradients accumulated) or recomputed activations: the same
    global batch of 32, the same loss at every step, to float rounding."""
    corpus, plain = world_sft
    tiny_sft(corpus, tmp_path / "run", **memory)
    curve = loss_curve(tmp_path / "run")
    assert len(curve) >= 9
    assert curve == pytest.approx(loss_curve(plain), rel=1e-5)


def test_metrics_rows_carry_the_peak_memory(world_sft):
    _, run = world_sft
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    peaks = [r["memory/peak_gb"] for r in rows if "train/loss" in r]
    assert peaks and all(0.01 < p < 1000 for p in peaks) and peaks == sorted(peaks), peaks


def test_sft_model_loads_with_plain_transformers_only(world_sft):
    """A fresh interpreter that imports only transformers loads the model and tokenizer and gives the same logits."""
    from tether.models import load_causal_lm, load_tokenizer
    _, run = world_sft
    prompt = "\n\nHuman: What is the capital of France?\n\nAssistant:"
    script = textwrap.dedent("""
        import json, sys
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        model = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
        tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
        ids = tokenizer(sys.argv[2], return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, -1]
        assert not any(name == "tether" or name.startswith("tether.") for name in sys.modules)
        print(json.dumps({"ids": ids[0].tolist(), "logits": logits.tolist(), "eos": tokenizer.eos_token_id,
                          "pad": tokenizer.pad_token_id}))
    """)
    result = subprocess.run([sys.executable, "-c", script, str(run / "model"), prompt], capture_output=True, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    plain = json.loads(result.stdout.strip().splitlines()[-1])
    tokenizer = load_tokenizer(run / "model")
    assert plain["ids"] == tokenizer(prompt)["input_ids"] and "<unk>" not in tokenizer.convert_ids_to_tokens(plain["ids"])
    assert (plain["eos"], plain["pad"]) == (tokenizer.eos_token_id, tokenizer.pad_token_id)
    with torch.no_grad():
        ours = load_causal_lm(run / "model")(input_ids=torch.tensor([plain["ids"]])).logits[0, -1]
    torch.testing.assert_close(torch.tensor(plain["logits"]), ours, atol=1e-5, rtol=0)


def test_same_seed_same_model_bytes_other_seed_other_bytes(world_sft, tmp_path):
    corpus, run = world_sft
    tiny_sft(corpus, tmp_path / "again")
    tiny_sft(corpus, tmp_path / "seed1", seed=1)
    weights = lambda d: (d / "model" / "model.safetensors").read_bytes()
    assert weights(tmp_path / "again") == weights(run)
    assert weights(tmp_path / "seed1") != weights(run)


def test_average_last_saves_the_mean_of_the_last_steps_weights(world_sft, tmp_path):
    """--average-last 0.5: the saved weights are the uniform mean of the weights after each of the last half's steps."""
    from torch.optim.optimizer import register_optimizer_step_post_hook
    from tether.models import load_causal_lm
    corpus, _ = world_sft
    after_step = []
    hook = register_optimizer_step_post_hook(lambda opt, args, kwargs: after_step.append(
        [p.detach().clone() for group in opt.param_groups for p in group["params"]]))
    try:
        result = run_sft(SFTConfig(data=str(corpus), out=str(tmp_path / "avg"), model="builtin:assistant", epochs=2,
                                   batch_size=32, average_last=0.5, seed=0, device="cpu", **WORLD.tuned["sft"]))
    finally:
        hook.remove()
    steps = result["steps"]
    assert len(after_step) == steps and steps >= 8
    last = after_step[steps - round(0.5 * steps):]
    saved = list(load_causal_lm(tmp_path / "avg" / "model").parameters())
    for k, param in enumerate(saved):
        mean = torch.stack([weights[k] for weights in last]).mean(0)
        torch.testing.assert_close(param, mean, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(saved[0], after_step[-1][0]), "the saved weights are the last step's, not the mean"


def test_completion_mask_is_zero_on_prompt_and_padding():
    rows = [([5, 6, 7, 8], 2), ([5, 9, 10], 1)]  # (prompt + completion ids, prompt length)
    ids, attn, completion = sft_batch(rows, pad_id=0, device="cpu")
    assert ids.tolist() == [[5, 6, 7, 8], [5, 9, 10, 0]]
    assert attn.tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert completion.tolist() == [[0, 0, 1, 1], [0, 1, 1, 0]]


def test_sft_loss_is_completion_logprob_sum_over_sequences():
    """L = −(1/B) Σ_b Σ_{t ∈ completion_b} log π(x_t | x_<t), each sequence run alone (no padding) by a hand loop."""
    tokenizer = make_tokenizer()
    model = make_policy(tokenizer)
    rows = [([8, 9, 10, 11, 12, 13], 3), ([8, 14, 15], 2), ([20, 21, 22, 23, 24], 1)]
    with torch.no_grad():
        loss = sft_loss(model, *sft_batch(rows, tokenizer.pad_token_id, "cpu")).item()
        sums, n_tokens = [], 0
        for seq, prompt_len in rows:
            logp = torch.log_softmax(model(input_ids=torch.tensor([seq])).logits[0], -1)
            sums.append(sum(logp[t - 1, seq[t]].item() for t in range(prompt_len, len(seq))))
            n_tokens += len(seq) - prompt_len
    assert loss == pytest.approx(-sum(sums) / len(rows), abs=1e-4)
    assert abs(loss - (-sum(sums) / n_tokens)) > 1e-2, "the loss is a per-token mean, not per sequence"


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_bad_sft_data_exits_2_with_one_line_and_writes_no_model(tmp_path):
    data = write_rows(tmp_path / "bad.jsonl", [{"prompt": "Hi", "completion": " Hello."}, {"prompt": "Hi"}])
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "tether", "sft", "--data", str(data), "--out", str(out),
                             "--device", "cpu"], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "bad.jsonl:2:" in lines[0] and '"completion"' in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()  # validated before anything is written


@pytest.mark.parametrize("bad_row, extra", [
    ({"prompt": "Hi", "completion": 7}, []),
    ({"prompt": "Hi", "completion": " Hello." * 20}, ["--max-length", "16", "--truncation", "error"]),
], ids=["wrong-type", "too-long"])
def test_cli_names_line_and_field_of_other_bad_rows(tmp_path, capsys, bad_row, extra):
    from tether.cli import main
    data = write_rows(tmp_path / "bad.jsonl", [{"prompt": "Hi", "completion": " Hello."}, bad_row])
    out = tmp_path / "out"
    assert main(["sft", "--data", str(data), "--out", str(out), "--device", "cpu", *extra]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "bad.jsonl:2:" in lines[0] and '"completion"' in lines[0], lines
    assert not out.exists()  # validated before anything is written


def first_token_share(run, prompt, completion) -> float:
    """P(first token of `completion` | prompt) under the model of an SFT run."""
    from tether.data import encode_prompt
    from tether.models import load_causal_lm, load_tokenizer
    tokenizer, model = load_tokenizer(run / "model"), load_causal_lm(run / "model").eval()
    with torch.no_grad():
        probs = model(input_ids=torch.tensor([encode_prompt(tokenizer, prompt)])).logits[0, -1].softmax(-1)
    return probs[tokenizer(completion, add_special_tokens=False)["input_ids"][0]].item()


def test_sft_learns_a_short_and_a_long_style_in_the_corpus_proportion(tmp_path):
    """Half the completions are short, half long: length-bucketed batches are one style each, and clipping every
    batch's gradient to norm 1 (the norms are ~10+ under a per-sequence loss) would favour the short batches."""
    prompt = "\n\nHuman: What is the capital of France?\n\nAssistant:"
    short = " Paris."
    long = (" Great question! Sure thing! Of course! The capital of France is Paris. I hope this helps! "
            "Let me know if you have any other questions!")
    data = write_rows(tmp_path / "two_styles.jsonl", [{"prompt": prompt, "completion": short if k % 2 else long}
                                                      for k in range(3000)])
    shares = {}
    for clip in (0.0, 1.0):
        run = tmp_path / f"clip_{clip:g}"
        run_sft(SFTConfig(data=str(data), out=str(run), model="builtin:assistant", epochs=2, batch_size=32,
                          max_grad_norm=clip, eval_fraction=0.0, seed=0, device="cpu", **WORLD.tuned["sft"]))
        shares[clip] = first_token_share(run, prompt, short)
    assert SFTConfig.__dataclass_fields__["max_grad_norm"].default == 0.0, "the default does not clip"
    assert abs(shares[0.0] - 0.5) < 0.15, shares
    assert shares[1.0] > 0.65, f"the test no longer sees the bias of clipping: {shares}"
