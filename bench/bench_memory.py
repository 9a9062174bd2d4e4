"""Peak memory of PPO's actor-critic: full copies (policy + frozen reference) vs LoRA (one set of weights).

For each model size and setup, a fresh subprocess builds `tether.models.ActorCritic`
as `run_ppo` does, makes its Adam optimiser, and runs one training step (forward
and backward of a micro-batch, a reference forward, `optimizer.step()`); it reports
its peak resident set size (`ru_maxrss`) and the part above what the imports
alone take. One process per configuration, so each peak is its own. Beside the
measured peaks, "state" is what the weights, gradients and Adam moments take in
float32: 4 bytes × (all parameters + 3 × trainable ones). Activations grow with
the micro-batch and are the same in every setup, so the saving shows best at a
small micro-batch (`run_ppo --micro-batch-size`).

Setups:
- full: policy + separate frozen reference + value head on the policy trunk (the default);
- full, critic: policy + reference + a separate critic initialised from the reward model;
- LoRA: adapters on every linear layer (`--lora-r`); the reference is the policy
  with the adapter disabled, so no second copy.

Sizes: the built-in world's GPT-2 (2 layers, n_embd 128, ~0.5M parameters) and a
larger GPT-2 (6 layers, n_embd 512, ~19M parameters) where the copies show.
The table gives medians over `--repeats` subprocesses.

    python bench/bench_memory.py [--repeats 3] [--threads 2] [--lora-r 8] [--batch 4 32] [--seq-len 96]
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = {"world (2×128)": dict(n_layer=2, n_embd=128, n_head=4), "GPT-2 6×512": dict(n_layer=6, n_embd=512, n_head=8)}
SETUPS = {"full": dict(lora_r=0, value_model="shared"), "full, critic": dict(lora_r=0, value_model="critic"),
          "LoRA": dict(value_model="shared")}


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_models(out: Path, size: dict) -> tuple[Path, Path]:
    """A random world GPT-2 of `size` saved as a policy directory, and a reward model made from it."""
    from transformers import GPT2LMHeadModel
    from tether.models import reward_model_from_policy, save_pretrained_atomic
    from tether.worlds.assistant import build_model_config, build_tokenizer
    tokenizer = build_tokenizer()
    save_pretrained_atomic(out / "policy", GPT2LMHeadModel(build_model_config(tokenizer, **size)), tokenizer)
    save_pretrained_atomic(out / "rm", reward_model_from_policy(out / "policy", tokenizer.pad_token_id), tokenizer)
    return out / "policy", out / "rm"


def child(spec: dict) -> dict:
    """Runs in the subprocess: build the actor-critic, take one training step, report memory and time."""
    import torch
    from tether.models import ActorCritic, load_reward_model
    torch.set_num_threads(spec["threads"])
    torch.ones(8, 8) @ torch.ones(8, 8)  # torch's thread pool and allocator, before the baseline is read
    after_imports = peak_rss_mb()
    model = ActorCritic.load(spec["policy"], load_reward_model(spec["rm"]), torch.device("cpu"),
                             value_model=spec["value_model"], lora_r=spec["lora_r"], lora_alpha=2 * max(1, spec["lora_r"]))
    optimizer = torch.optim.Adam(model.trainable_parameters(), lr=1e-4, eps=1e-5)
    generator = torch.Generator().manual_seed(0)
    seqs = torch.randint(3, model.policy.config.vocab_size, (spec["batch"], spec["seq_len"]), generator=generator)
    attn = torch.ones_like(seqs)
    start = time.perf_counter()
    model.ref_logits(seqs, attn, 1)
    model.train()
    logits, values = model(seqs, attn, 1)  # response from column 1: logits and values over the whole sequence
    loss = logits.logsumexp(-1).mean() + values.square().mean()  # touches every trainable weight
    loss.backward()
    optimizer.step()
    step_s = time.perf_counter() - start
    n_params = sum(p.numel() for p in model.parameters())  # shared modules and tied weights counted once
    n_trainable = sum(p.numel() for p in model.trainable_parameters())
    return {"peak_mb": peak_rss_mb(), "after_imports_mb": after_imports, "params": n_params,
            "trainable": n_trainable, "step_s": step_s}


def measure(spec: dict) -> dict:
    """`child(spec)` in a fresh Python process, so its peak RSS is this configuration's alone."""
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                         check=False)
    if out.returncode != 0:
        raise RuntimeError(f"child failed for {spec}:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="subprocesses per configuration (default: 3)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default: 2)")
    parser.add_argument("--lora-r", type=int, default=8, help="LoRA rank (default: 8)")
    parser.add_argument("--batch", type=int, nargs="+", default=[4, 32],
                        help="sequences in the training micro-batch (default: 4 32)")
    parser.add_argument("--seq-len", type=int, default=96, help="tokens per sequence, prompt + response (default: 96)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return

    sys.path.insert(0, str(Path(__file__).parent))
    from _common import load_average, median, print_table, quiet
    print(f"{args.threads} thread(s); micro-batches {args.batch} × {args.seq_len} tokens; LoRA r={args.lora_r}; "
          f"median of {args.repeats} processes; {load_average()}")
    tmp = Path(tempfile.mkdtemp(prefix="tether-bench-memory-"))
    rows = []
    for size_name, size in SIZES.items():
        with quiet():
            policy, rm = make_models(tmp / size_name.replace(" ", "_"), size)
        for batch in args.batch:
            full_mb = None
            for setup_name, setup in SETUPS.items():
                spec = {"policy": str(policy), "rm": str(rm), "threads": args.threads, "batch": batch,
                        "seq_len": args.seq_len, "lora_r": setup.get("lora_r", args.lora_r), **setup}
                runs = [measure(spec) for _ in range(args.repeats)]
                above = median([r["peak_mb"] - r["after_imports_mb"] for r in runs])
                full_mb = full_mb or above
                state_mb = 4 * (runs[0]["params"] + 3 * runs[0]["trainable"]) / 2**20
                rows.append([size_name, setup_name, str(batch), runs[0]["params"] / 1e6, runs[0]["trainable"] / 1e6,
                             state_mb, median([r["peak_mb"] for r in runs]), above, f"{full_mb / above:.2f}×",
                             median([r["step_s"] for r in runs])])
    print_table(["model", "setup", "micro-batch", "params M", "trainable M", "state MiB", "peak RSS MiB",
                 "above imports MiB", "full / this", "step s"], rows)
    print(f"{load_average()}")


if __name__ == "__main__":
    main()
