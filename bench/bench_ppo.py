"""PPO speed on CPU: seconds per iteration (rollout, scoring, training) and generated tokens/s, in one run.

Every contender runs PPO on the built-in world with the same models and sizes:
the world's small GPT-2 after a short SFT (so responses end in EOS) as policy
and reference, a reward model made from it (scalar head; untrained, which does
not change the work), 64 rollouts per iteration, responses of at most 48
tokens, 2 PPO epochs over minibatches of 32, sampling at temperature 1. The
first `--warmup` iterations are dropped; the table shows medians over the next
`--repeats` iterations.

- tether: `run_ppo` (TorchSampler rollouts), value head on the policy trunk (the default).
- tether, critic: `run_ppo --value-model critic`, a separate value model, as TRL's PPO has.
- tether, HF generate: `run_ppo` with `HFGenerateSampler` (Hugging Face `generate`) for
  the rollout: the rollout baseline.
- TRL: `trl.experimental.ppo.PPOTrainer` (trl 1.12.0, the last TRL with PPO; fp32,
  no gradient checkpointing, value model initialised from the reward model);
  skipped with the reason when it does not import. Its phases are timed by
  wrapping its module-level `batch_generation` and `forward`; its `gc.collect()`
  calls are timed too.

tokens/s counts response tokens through EOS over the rollout's seconds.

    python bench/bench_ppo.py [--repeats 5] [--warmup 2] [--threads 2] [--batch 64] [--no-trl]
"""

import os

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # trl.experimental warns on import

import tempfile
import time
from contextlib import contextmanager
from pathlib import Path


from _common import (base_parser, load_average, median, print_table, quiet, setup, spread, trl_or_reason,
                     world_policy)
from tether.data import encode_prompt, read_prompts
from tether.models import load_tokenizer, reward_model_from_policy, save_pretrained_atomic
from tether.pipelines import ppo as ppo_module
from tether.pipelines.ppo import PPOConfig, run_ppo
from tether.rollout import HFGenerateSampler
from tether.runlog import read_metrics
from tether.worlds.assistant import write_prompt_file

MAX_NEW_TOKENS = 48
BETA = 0.05
LR = 3e-4


def fixtures(tmp: Path, threads: int) -> tuple[Path, Path, Path]:
    """(policy dir, reward-model dir, prompts file) of the built-in world."""
    policy = world_policy(tmp / "policy", threads=threads)
    tokenizer = load_tokenizer(policy)
    save_pretrained_atomic(tmp / "rm", reward_model_from_policy(policy, tokenizer.pad_token_id), tokenizer)
    write_prompt_file(tmp / "prompts.jsonl", "train", 512, seed=0)
    return policy, tmp / "rm", tmp / "prompts.jsonl"


@contextmanager
def rollout_engine(engine_class):
    """Run `run_ppo` with another rollout engine (the baseline), restoring the default afterwards."""
    default = ppo_module.TorchSampler
    ppo_module.TorchSampler = engine_class
    try:
        yield
    finally:
        ppo_module.TorchSampler = default


def tether_iterations(policy, rm, prompts, out, args, **overrides) -> list[dict]:
    """Per-iteration {rollout, score, train, tokens} of one `run_ppo`, after the warm-up iterations."""
    cfg = PPOConfig(policy=str(policy), reward_model=str(rm), prompts=str(prompts), out=str(out),
                    steps=args.warmup + args.repeats, batch_size=args.batch, minibatch_size=args.batch // 2,
                    micro_batch_size=args.batch // 2, ppo_epochs=2, lr=LR, beta=BETA, max_new_tokens=MAX_NEW_TOKENS,
                    eval_every=0, eval_samples=64, samples_every=0, save_every=0, device="cpu", seed=0, **overrides)
    run_ppo(cfg)
    rows = [r for r in read_metrics(out / "metrics.jsonl") if "time/rollout" in r][args.warmup:]
    return [{"rollout": r["time/rollout"], "score": r["time/score"], "train": r["time/train"],
             "tokens": r["val/mean_length"] * args.batch} for r in rows]


class TRLClock:
    """Phase timestamps of TRL's PPO loop, from wrappers around its module-level functions.

    rollout: `batch_generation`; scoring: from there to the first training forward
    (a `forward` on the policy-and-value wrapper); training: from there to the next
    rollout (or the end), which includes its end-of-update `gc.collect()`.
    """

    def __init__(self, trl_ppo, eos_id: int):
        self.trl_ppo, self.eos_id = trl_ppo, eos_id
        self.iterations: list[dict] = []
        self.gc_seconds = 0.0

    def install(self):
        module = self.trl_ppo
        generation, forward, gc = module.batch_generation, module.forward, module.gc
        clock = self

        def timed_generation(model, queries, *a, **kw):
            clock.close_iteration()
            start = time.perf_counter()
            query_responses, logits = generation(model, queries, *a, **kw)
            responses = query_responses[:, queries.shape[1]:]
            ended = (responses == clock.eos_id).int().cumsum(1)  # tokens through the first EOS
            clock.iterations.append({"start": start, "rollout_end": time.perf_counter(), "train_start": None,
                                     "tokens": ((ended == 0) | ((ended == 1) & (responses == clock.eos_id))).sum().item(),
                                     "gc": 0.0})
            return query_responses, logits

        def timed_forward(model, *a, **kw):
            current = clock.iterations[-1] if clock.iterations else None
            if current and current["train_start"] is None and isinstance(model, module.PolicyAndValueWrapper):
                current["train_start"] = time.perf_counter()
            return forward(model, *a, **kw)

        class TimedGC:
            def collect(self, *a):
                start = time.perf_counter()
                result = gc.collect(*a)
                if clock.iterations:
                    clock.iterations[-1]["gc"] += time.perf_counter() - start
                return result

        module.batch_generation, module.forward, module.gc = timed_generation, timed_forward, TimedGC()

    def close_iteration(self):
        if self.iterations and "end" not in self.iterations[-1]:
            self.iterations[-1]["end"] = time.perf_counter()

    def phases(self) -> list[dict]:
        return [{"rollout": it["rollout_end"] - it["start"], "score": it["train_start"] - it["rollout_end"],
                 "train": it["end"] - it["train_start"], "tokens": it["tokens"], "gc": it["gc"]}
                for it in self.iterations]


def trl_iterations(policy, rm, prompts, out, args) -> list[dict]:
    """Per-iteration phases of `trl.experimental.ppo.PPOTrainer` with tether's sizes, after the warm-up."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, PrinterCallback
    from trl.experimental import ppo as trl_ppo_package
    from trl.experimental.ppo import ppo_trainer as trl_ppo
    tokenizer = load_tokenizer(policy)
    tokenizer.padding_side = "left"  # TRL generates from the collator's padding
    ids = [encode_prompt(tokenizer, p.prompt) for p in read_prompts(prompts)]
    dataset = Dataset.from_dict({"input_ids": ids})
    iterations = args.warmup + args.repeats
    config = trl_ppo_package.PPOConfig(
        output_dir=str(out), per_device_train_batch_size=args.batch, gradient_accumulation_steps=1,
        num_mini_batches=2, num_ppo_epochs=2, local_rollout_forward_batch_size=args.batch,
        total_episodes=args.batch * iterations, response_length=MAX_NEW_TOKENS, stop_token="eos", temperature=1.0,
        kl_coef=BETA, learning_rate=LR, vf_coef=0.1, cliprange=0.2, cliprange_value=0.2, gamma=1.0, lam=0.95,
        missing_eos_penalty=1.0, num_sample_generations=0, gradient_checkpointing=False, bf16=False, use_cpu=True,
        report_to="none", save_strategy="no", logging_steps=10**6, disable_tqdm=True, seed=0)
    load_lm = lambda: AutoModelForCausalLM.from_pretrained(policy, local_files_only=True)
    load_rm = lambda: AutoModelForSequenceClassification.from_pretrained(rm, local_files_only=True)
    trainer = trl_ppo.PPOTrainer(args=config, processing_class=tokenizer, model=load_lm(), ref_model=load_lm(),
                                 reward_model=load_rm(), value_model=load_rm(), train_dataset=dataset,
                                 eval_dataset=dataset.select(range(args.batch)))
    trainer.remove_callback(PrinterCallback)
    clock = TRLClock(trl_ppo, tokenizer.eos_token_id)
    saved = trl_ppo.batch_generation, trl_ppo.forward, trl_ppo.gc
    clock.install()
    try:
        trainer.train()
        clock.close_iteration()
    finally:
        trl_ppo.batch_generation, trl_ppo.forward, trl_ppo.gc = saved
    return clock.phases()[args.warmup:]


def summary_row(name: str, its: list[dict], reference: dict | None) -> list:
    """[name, rollout, score, train, total (min–max), tokens/s, ratio of total to the reference's]."""
    total = [it["rollout"] + it["score"] + it["train"] for it in its]
    row = [name, median([it["rollout"] for it in its]), median([it["score"] for it in its]),
           median([it["train"] for it in its]), median(total), spread(total),
           median([it["tokens"] / it["rollout"] for it in its])]
    if reference is not None:
        row += [f"{row[4] / reference['total']:.2f}×", f"{row[1] / reference['rollout']:.2f}×"]
    return row


def main(argv=None) -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--warmup", type=int, default=2, help="iterations dropped before timing (default: 2)")
    parser.add_argument("--batch", type=int, default=64, help="rollouts per iteration (default: 64)")
    parser.add_argument("--no-trl", action="store_true", help="leave TRL out even if it imports")
    args = parser.parse_args(argv)
    setup(args.threads)

    tmp = Path(tempfile.mkdtemp(prefix="tether-bench-ppo-"))
    trl, reason = (None, "TRL left out (--no-trl)") if args.no_trl else trl_or_reason()
    results = {}
    with quiet():
        policy, rm, prompts = fixtures(tmp, args.threads)
        results["tether"] = tether_iterations(policy, rm, prompts, tmp / "tether", args)
        results["tether, critic"] = tether_iterations(policy, rm, prompts, tmp / "critic", args, value_model="critic")
        with rollout_engine(HFGenerateSampler):
            results["tether, HF generate"] = tether_iterations(policy, rm, prompts, tmp / "hf", args)
        if trl is not None:
            try:
                results[f"TRL {trl.__version__} PPO"] = trl_iterations(policy, rm, prompts, tmp / "trl", args)
            except ImportError as e:
                reason = f"TRL skipped: trl {trl.__version__} has no experimental PPO ({e})"

    ours = results["tether"]
    reference = {"total": median([it["rollout"] + it["score"] + it["train"] for it in ours]),
                 "rollout": median([it["rollout"] for it in ours])}
    print(f"\nPPO: batch {args.batch}, ≤{MAX_NEW_TOKENS} new tokens, 2 epochs × 2 minibatches; seconds per iteration, "
          f"median of {args.repeats} after {args.warmup} warm-up; {load_average()}")
    print_table(["contender", "rollout s", "score s", "train s", "total s", "min–max", "tokens/s",
                 "tether is (total)", "(rollout)"],
                [summary_row(name, its, reference) for name, its in results.items()])
    trl_key = next((k for k in results if k.startswith("TRL")), None)
    if trl_key:
        print(f"TRL's gc.collect(): median {median([it['gc'] for it in results[trl_key]]):.3f} s per iteration")
    if reason:
        print(reason)


if __name__ == "__main__":
    main()
