"""End to end at real model sizes: SFT → reward model → PPO (exact and k1 KL) → TRL's PPO, per phase, in one run.

For each shape (`--arch`): a user's model directory built from a config (random
weights) with a byte-level BPE tokenizer trained on the data (the built-in world's
SFT corpus, `--size full`: 8,192 tokens), then `tether sft` on the corpus, `tether
rm train` on labelled pairs, `tether ppo` with the exact and the k1 KL, and TRL
1.12's `trl.experimental.ppo.PPOTrainer` (skipped with the reason when it does not
import) on the same SFT policy and reward model, the same batch shape and response
length. `--fixed-new-tokens` makes every response exactly `max_new_tokens` long
in both: tether's PPO gets a tokenizer whose EOS is a reserved token the data never
holds (so the policy never samples it), TRL runs without a stop token.

Shapes (`--size full`): GPT-2 124M (12 layers, width 768; 92M with this vocabulary)
and Llama 135M (SmolLM2-135M's config: 30 layers, width 576, GQA 9/3 heads, RoPE,
tied embeddings). `--size tiny` keeps every phase but shrinks models, data and
batches so that the whole run takes seconds on a CPU (the test runs it).

Per phase: seconds per step (SFT, RM: the stage's wall clock over its optimiser
steps, start-up included; PPO: the median iteration's rollout + scoring + training,
after `--warmup` iterations), tokens/s, achieved TFLOP/s, peak memory (torch's peak
allocation on a GPU, reset per phase; on CPU the process's peak RSS so far), and the
achieved share of a matmul peak measured in the same run. FLOPs are the usual
2·N per token forward and 6·N per token trained (N = parameters; attention's
extra FLOPs are left out):
    SFT: 6·N·tokens;  RM: 6·N·tokens of the packed pairs (2 sides);
    PPO iteration: 2·N·B·R (rollout) + 2·N·4·B·T (policy, reference, critic, reward model)
                   + epochs·6·N·2·B·T (policy and critic), with B rollouts of R response tokens, T = P + R.
Prints a table and writes the numbers as JSON (`--json`).

    python bench/gpu_e2e.py [--size full|tiny] [--arch gpt2 llama] [--device auto] [--fixed-new-tokens]
                            [--iterations 4] [--warmup 1] [--no-trl] [--json results.json]
"""

import argparse
import dataclasses
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from _common import print_table, quiet, trl_or_reason, world_pairs, write_jsonl  # noqa: E402
from tether.models import resolve_device  # noqa: E402
from tether.pipelines.common import peak_memory_gb  # noqa: E402
from tether.pipelines.ppo import PPOConfig, run_ppo  # noqa: E402
from tether.pipelines.reward import RMTrainConfig, run_rm_train  # noqa: E402
from tether.pipelines.sft import SFTConfig, run_sft  # noqa: E402
from tether.runlog import read_metrics  # noqa: E402
from tether.worlds.assistant import write_prompt_file, write_sft_corpus  # noqa: E402

EOS, PAD, NEVER = "<|endoftext|>", "<|pad|>", "<|no-eos|>"  # NEVER: a reserved token the data never holds

SHAPES = {
    "full": {"gpt2": dict(n_layer=12, n_embd=768, n_head=12, n_positions=1024),
             "llama": dict(num_hidden_layers=30, hidden_size=576, intermediate_size=1536, num_attention_heads=9,
                           num_key_value_heads=3, max_position_embeddings=2048, rope_theta=100000.0,
                           rms_norm_eps=1e-5, tie_word_embeddings=True)},
    "tiny": {"gpt2": dict(n_layer=2, n_embd=32, n_head=2, n_positions=256),
             "llama": dict(num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                           num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True)},
}
SIZES = {
    "full": dict(vocab=8192, sft_examples=1000, pairs=1000, prompts=512, sft_batch=32, rm_batch=32, batch=64,
                 micro=16, max_new_tokens=128, matmul=8192),
    "tiny": dict(vocab=400, sft_examples=64, pairs=32, prompts=32, sft_batch=16, rm_batch=8, batch=8, micro=4,
                 max_new_tokens=8, matmul=256),
}


def train_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer trained on `texts`, with EOS, padding and the reserved never-seen token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS, PAD, NEVER],
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS, pad_token=PAD)


def model_dir(path: Path, arch: str, shape: dict, tokenizer) -> Path:
    """A user's model directory: a config of `shape`, random weights, the tokenizer."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
    ids = dict(vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    if arch == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(**shape, **ids, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    else:
        model = LlamaForCausalLM(LlamaConfig(**shape, **ids))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def never_stopping_copy(policy: Path, out: Path) -> Path:
    """The policy directory with EOS set to the reserved token: its responses run to max_new_tokens."""
    from transformers import AutoTokenizer
    shutil.copytree(policy, out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    tokenizer.eos_token = NEVER
    tokenizer.save_pretrained(out)
    return out


def matmul_peak_tflops(device: torch.device, n: int, repeats: int = 10) -> float:
    """Measured n×n @ n×n matmul rate (bfloat16 on a GPU, float32 on CPU): 2n³ FLOPs each, best of `repeats`."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    best = float("inf")
    for _ in range(repeats + 1):  # the first one warms up
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e12


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def n_params(path: Path) -> int:
    """Parameters stored in a model directory (a tied embedding once)."""
    from safetensors import safe_open
    with safe_open(path / "model.safetensors", "pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())


def stage_row(name: str, seconds: float, steps: int, tokens: float, flops: float, peak: float) -> dict:
    return {"phase": name, "s_per_step": seconds / max(steps, 1), "tokens_per_s": tokens / seconds,
            "tflops": flops / seconds / 1e12, "peak_gb": peak, "steps": steps, "seconds": seconds}


def timed_stage(run, cfg, device) -> tuple[dict, float, float]:
    """(the stage's result, wall seconds, peak memory GB of the stage)."""
    reset_peak(device)
    start = time.perf_counter()
    with quiet():
        result = run(cfg)
    synchronize(device)
    return result, time.perf_counter() - start, peak_memory_gb(device)


def ppo_phase(name: str, iterations: list[dict], n: int, prompt_len: float, epochs: int, peak: float) -> dict:
    """Median iteration of a PPO contender; `iterations` hold rollout/score/train seconds, B and mean R."""
    total = [it["rollout"] + it["score"] + it["train"] for it in iterations]
    median_it = iterations[total.index(statistics.median_low(total))]
    b, r = median_it["batch"], median_it["length"]
    t = prompt_len + r
    flops = 2 * n * b * r + 2 * n * 4 * b * t + epochs * 6 * n * 2 * b * t
    seconds = statistics.median(total)
    return {"phase": name, "s_per_step": seconds, "tokens_per_s": b * r / seconds, "tflops": flops / seconds / 1e12,
            "peak_gb": peak, "rollout_s": statistics.median(it["rollout"] for it in iterations),
            "score_s": statistics.median(it["score"] for it in iterations),
            "train_s": statistics.median(it["train"] for it in iterations), "mean_new_tokens": r}


def tether_ppo(policy, rm, prompts, out, settings, device, kl_estimator) -> tuple[list[dict], float]:
    """Per-iteration phases of `run_ppo` after the warm-up, and the stage's peak memory."""
    cfg = PPOConfig(policy=str(policy), reward_model=str(rm), prompts=str(prompts), out=str(out),
                    kl_estimator=kl_estimator, **settings)
    _, _, peak = timed_stage(run_ppo, cfg, device)
    rows = [r for r in read_metrics(out / "metrics.jsonl") if "time/rollout" in r]
    return [{"rollout": r["time/rollout"], "score": r["time/score"], "train": r["time/train"],
             "batch": settings["batch_size"], "length": r["val/mean_length"]} for r in rows], peak


def run_shape(arch: str, args, root: Path, tokenizer, data: dict, device) -> list[dict]:
    """Every phase of one shape: rows of the table."""
    size, bf16 = SIZES[args.size], device.type == "cuda"
    init = model_dir(root / arch / "init", arch, SHAPES[args.size][arch], tokenizer)
    n = n_params(init)
    common = dict(device=str(device), bf16=bf16, seed=0)
    sft_cfg = SFTConfig(data=str(data["sft"]), out=str(root / arch / "sft"), model=str(init), epochs=1,
                        batch_size=size["sft_batch"], eval_fraction=0.0, max_length=512, log_every=10**9, **common)
    sft, seconds, peak = timed_stage(run_sft, sft_cfg, device)
    rows = [stage_row("sft", seconds, sft["steps"], data["sft_tokens"], 6 * n * data["sft_tokens"], peak)]
    policy = root / arch / "sft" / "model"
    rm_cfg = RMTrainConfig(init=str(policy), data=str(data["pairs"]), out=str(root / arch / "rm"), epochs=1,
                           batch_size=size["rm_batch"], eval_fraction=0.0, max_length=512, **common)
    rm, seconds, peak = timed_stage(run_rm_train, rm_cfg, device)
    rows.append(stage_row("rm train", seconds, rm["steps"], data["pair_tokens"], 6 * n * data["pair_tokens"], peak))
    reward_model = root / arch / "rm" / "model"
    ppo_policy = never_stopping_copy(policy, root / arch / "ppo_policy") if args.fixed_new_tokens else policy
    settings = dict(steps=args.warmup + args.iterations, batch_size=size["batch"], minibatch_size=size["batch"],
                    micro_batch_size=size["micro"], ppo_epochs=2, max_new_tokens=size["max_new_tokens"],
                    eval_every=0, eval_samples=size["batch"], samples_every=0, save_every=0, **common)
    for estimator in ("exact", "k1"):
        its, peak = tether_ppo(ppo_policy, reward_model, data["prompts"], root / arch / f"ppo_{estimator}", settings,
                               device, estimator)
        rows.append(ppo_phase(f"ppo ({estimator} KL)", its[args.warmup:], n, data["prompt_tokens"], 2, peak))
    if data["trl"] is not None:
        from bench_ppo import trl_iterations
        trl_settings = {f.name: f.default for f in dataclasses.fields(PPOConfig)} | settings
        reset_peak(device)
        with quiet():
            its = trl_iterations(policy, reward_model, data["prompts"], root / arch / "trl", args, trl_settings,
                                 stop_at_eos=not args.fixed_new_tokens, device=device.type)
        peak = peak_memory_gb(device)
        its = [{**it, "batch": size["batch"], "length": it["tokens"] / size["batch"]} for it in its]
        rows.append(ppo_phase(f"TRL {data['trl'].__version__} PPO", its, n, data["prompt_tokens"], 2, peak))
    return [{"arch": arch, "params_m": n / 1e6, **row} for row in rows]


def prepare_data(root: Path, size: dict) -> dict:
    """The world's SFT corpus, labelled pairs and prompts; the tokenizer trained on them; token counts."""
    write_sft_corpus(root / "sft.jsonl", size["sft_examples"], seed=0)
    pairs = world_pairs(size["pairs"], seed=0)
    write_jsonl(root / "pairs.jsonl", pairs)
    write_prompt_file(root / "prompts.jsonl", "train", size["prompts"], seed=0)
    corpus = [json.loads(line) for line in (root / "sft.jsonl").read_text().splitlines()]
    tokenizer = train_tokenizer([r["prompt"] + r["completion"] for r in corpus]
                                + [p["prompt"] + p["chosen"] + p["rejected"] for p in pairs], size["vocab"])
    count = lambda text: len(tokenizer(text)["input_ids"])
    prompts = [json.loads(line)["prompt"] for line in (root / "prompts.jsonl").read_text().splitlines()]
    return {"tokenizer": tokenizer, "sft": root / "sft.jsonl", "pairs": root / "pairs.jsonl",
            "prompts": root / "prompts.jsonl",
            "sft_tokens": sum(count(r["prompt"] + r["completion"]) + 1 for r in corpus),
            "pair_tokens": sum(count(p["prompt"] + p["chosen"]) + count(p["prompt"] + p["rejected"]) for p in pairs),
            "prompt_tokens": statistics.mean(count(p) for p in prompts)}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="full", help="model and data sizes (default: full)")
    parser.add_argument("--arch", nargs="+", choices=["gpt2", "llama"], default=["gpt2", "llama"], help="shapes")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: auto)")
    parser.add_argument("--fixed-new-tokens", action="store_true",
                        help="every response exactly max_new_tokens long, in tether and in TRL")
    parser.add_argument("--iterations", type=int, default=4, help="timed PPO iterations (default: 4)")
    parser.add_argument("--warmup", type=int, default=1, help="PPO iterations dropped first (default: 1)")
    parser.add_argument("--no-trl", action="store_true", help="leave TRL out even if it imports")
    parser.add_argument("--json", help="write the rows here as JSON")
    args = parser.parse_args(argv)
    device, size = resolve_device(args.device), SIZES[args.size]
    trl, reason = (None, "TRL left out (--no-trl)") if args.no_trl else trl_or_reason()
    if trl is not None:
        try:
            import trl.experimental.ppo  # noqa: F401  (PPO was last shipped in trl 1.12.0)
        except ImportError as e:
            trl, reason = None, f"TRL skipped: trl {trl.__version__} has no PPO trainer ({e})"
    if reason:
        print(reason)
    peak = matmul_peak_tflops(device, size["matmul"])
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    print(f"{name}, torch {torch.__version__}; measured matmul peak {peak:.2f} TFLOP/s "
          f"({'bf16' if device.type == 'cuda' else 'fp32'}, {size['matmul']}²)")
    root = Path(tempfile.mkdtemp(prefix="tether-gpu-e2e-"))
    try:
        data = prepare_data(root, size) | {"trl": trl}
        rows = [row | {"peak_share": row["tflops"] / peak}
                for arch in args.arch for row in run_shape(arch, args, root, data["tokenizer"], data, device)]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print_table(["shape", "params (M)", "phase", "s/step", "tokens/s", "TFLOP/s", "of peak", "peak GB", "new tokens"],
                [[r["arch"], f"{r['params_m']:.3g}", r["phase"], f"{r['s_per_step']:.3f}", f"{r['tokens_per_s']:.0f}",
                  f"{r['tflops']:.3g}", f"{r['peak_share']:.1%}", f"{r['peak_gb']:.2f}",
                  f"{r['mean_new_tokens']:.1f}" if "mean_new_tokens" in r else ""] for r in rows])
    result = {"device": name, "torch": torch.__version__, "matmul_peak_tflops": peak, "size": args.size,
              "fixed_new_tokens": args.fixed_new_tokens, "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return rows


if __name__ == "__main__":
    main()
