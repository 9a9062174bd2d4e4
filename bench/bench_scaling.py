"""Data-parallel scaling: one process vs `torchrun --nproc_per_node 2`, same global batch, same work.

Times `tether rm train` and `tether ppo` on the built-in world's model (random
init: speed does not depend on the weights) as whole commands, start-up
included, and prints the median wall time of each and the 2-process speed-up.
On a 2-core machine the one-process run uses 2 torch threads and each of the two
processes 1 thread, so both use the whole machine.

    python bench/bench_scaling.py --repeats 3
"""

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def build_inputs(root: Path, n_pairs: int) -> dict:
    """A random built-in policy, a reward model from it, prompts and gold-labelled pairs."""
    from transformers import GPT2LMHeadModel
    from tether.models import reward_model_from_policy, set_seed
    from tether.worlds.assistant import (GoldLabeler, build_model_config, build_tokenizer, format_prompt,
                                         make_prompts, sample_response, styles_for, write_prompt_file)
    tokenizer = build_tokenizer()
    set_seed(0)
    GPT2LMHeadModel(build_model_config(tokenizer)).save_pretrained(root / "policy")
    tokenizer.save_pretrained(root / "policy")
    reward_model_from_policy(root / "policy", tokenizer.pad_token_id).save_pretrained(root / "rm")
    tokenizer.save_pretrained(root / "rm")
    write_prompt_file(root / "prompts.jsonl", "train", 256)
    rng, labeler, rows = random.Random(0), GoldLabeler(), []
    for prompt in make_prompts("train", n_pairs):
        y1, y2 = (sample_response(prompt, rng.choice(styles_for(prompt.family)), rng) for _ in range(2))
        if y1 != y2:
            first = labeler.label(format_prompt(prompt), y1, y2)
            rows.append({"prompt": format_prompt(prompt), "chosen": y1 if first else y2, "rejected": y2 if first else y1})
    (root / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"policy": root / "policy", "rm": root / "rm", "prompts": root / "prompts.jsonl", "pairs": root / "pairs.jsonl"}


def commands(inputs: dict, out: Path) -> dict[str, list[str]]:
    return {
        "rm train (2 epochs)": ["rm", "train", "--init", str(inputs["policy"]), "--data", str(inputs["pairs"]),
                                "--out", str(out / "rm"), "--eval-fraction", "0", "--batch-size", "32", "--epochs", "2"],
        "ppo (10 iterations)": ["ppo", "--policy", str(inputs["policy"]), "--reward-model", str(inputs["rm"]),
                                "--prompts", str(inputs["prompts"]), "--out", str(out / "ppo"), "--steps", "10",
                                "--batch-size", "64", "--minibatch-size", "32", "--micro-batch-size", "16",
                                "--eval-every", "0", "--eval-samples", "64", "--save-every", "0"],
    }


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(argv)}\n{result.stderr[-2000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=2048)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        inputs = build_inputs(root, args.pairs)
        print(f"{'stage':<22} {'1 process (2 threads)':>22} {'2 processes (1 thread)':>24} {'speed-up':>9}")
        for name, cmd in commands(inputs, root).items():
            single = [sys.executable, "-m", "tether", *cmd, "--device", "cpu", "--threads", "2"]
            double = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                      "-m", "tether", *cmd, "--device", "cpu", "--threads", "1"]
            one, two = [], []
            for _ in range(args.repeats):  # interleaved, so load changes hit both alike
                one.append(timed(single))
                two.append(timed(double))
            m1, m2 = statistics.median(one), statistics.median(two)
            print(f"{name:<22} {m1:>20.1f} s {m2:>22.1f} s {m1 / m2:>8.2f}x")


if __name__ == "__main__":
    main()
