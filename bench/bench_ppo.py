"""PPO speed on CPU: seconds per iteration (rollout, scoring, training) and generated tokens/s, in one run.

Every contender runs PPO on the built-in world with the same models and sizes:
the world's small GPT-2 after a short SFT (so responses end in EOS) as policy
and reference, a reward model made from it (scalar head; untrained, which does
not change the work), and `tether ppo`'s defaults for everything else (rollouts
per iteration, minibatch and micro-batch sizes, PPO epochs, response length,
learning rate, β, clipping), which TRL is given too. Each contender runs
`--repeats` times, contenders taking turns; each run drops its first `--warmup`
iterations and times the next `--iterations`. The table shows medians over all
timed iterations (repeats × iterations), and the min–max of the per-run medians.

- tether: `run_ppo` as configured by default (TorchSampler rollouts, a separate critic).
- tether, k1 KL: `run_ppo --kl-estimator k1`, the sampled-token KL in the reward, as TRL computes it
  (the default `exact` adds the vocabulary-wide KL's loss term: same work as TRL plus that).
- tether, shared value head: `run_ppo --value-model shared` (value head on the policy trunk).
- tether, one padded pass: `run_ppo --micro-batch-size 64`, so scoring and each minibatch are one
  forward over the whole rollout batch, padded to its longest prompt and response: what tether did
  before it cut batches into length-sorted chunks trimmed to their own columns.
- tether, HF generate: `run_ppo --rollout-engine hf` (`HFGenerateSampler`, Hugging Face
  `generate`) for the rollout: the rollout baseline.
- TRL: `trl.experimental.ppo.PPOTrainer` (trl 1.12.0, the last TRL with PPO; fp32,
  no gradient checkpointing, value model initialised from the reward model);
  skipped with the reason when it does not import. Its phases are timed by
  wrapping its module-level `batch_generation` and `forward`; its `gc.collect()`
  calls are timed too.

tokens/s counts response tokens through EOS over the rollout's seconds.

    python bench/bench_ppo.py [--repeats 5] [--iterations 4] [--warmup 1] [--threads 2] [--no-trl]
"""

import os

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # trl.experimental warns on import

import tempfile
import time
from dataclasses import fields
from pathlib import Path


from _common import (base_parser, load_average, median, print_table, quiet, setup, spread, trl_or_reason,
                     world_policy)
from tether.data import encode_prompt, read_prompts
from tether.models import load_tokenizer, reward_model_from_policy, save_pretrained_atomic
from tether.pipelines.ppo import PPOConfig, run_ppo
from tether.runlog import read_metrics
from tether.worlds.assistant import WORLD, write_prompt_file

# `tether ppo`'s defaults with the built-in world's tuned values, given to every contender
DEFAULTS = {f.name: f.default for f in fields(PPOConfig)} | WORLD.tuned["ppo"]


def fixtures(tmp: Path, threads: int) -> tuple[Path, Path, Path]:
    """(policy dir, reward-model dir, prompts file) of the built-in world."""
    policy = world_policy(tmp / "policy", n_examples=12000, threads=threads)  # long enough to write whole answers
    tokenizer = load_tokenizer(policy)
    save_pretrained_atomic(tmp / "rm", reward_model_from_policy(policy, tokenizer.pad_token_id), tokenizer)
    write_prompt_file(tmp / "prompts.jsonl", "train", 512, seed=0)
    return policy, tmp / "rm", tmp / "prompts.jsonl"


def tether_iterations(policy, rm, prompts, out, args, **overrides) -> list[dict]:
    """Per-iteration {rollout, score, train, tokens} of one `run_ppo`, after the warm-up iterations."""
    cfg = PPOConfig(policy=str(policy), reward_model=str(rm), prompts=str(prompts), out=str(out),
                    steps=args.warmup + args.iterations, eval_every=0, eval_samples=64, samples_every=0, save_every=0,
                    device="cpu", seed=0, **{**WORLD.tuned["ppo"], **overrides})
    run_ppo(cfg)
    rows = [r for r in read_metrics(out / "metrics.jsonl") if "time/rollout" in r][args.warmup:]
    return [{"rollout": r["time/rollout"], "score": r["time/score"], "train": r["time/train"],
             "tokens": r["val/mean_length"] * cfg.batch_size} for r in rows]


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


def trl_batch_sizes(batch: int, minibatch: int, micro: int) -> dict:
    """TRL PPOConfig sizes that reproduce tether's batch → minibatches → micro-batches.

    In TRL the rollout batch is per_device_train_batch_size × gradient_accumulation_steps,
    and the optimiser steps every gradient_accumulation_steps micro-batches, counted
    across minibatches; so only two cases map exactly: one micro-batch per minibatch,
    or one minibatch per batch.
    """
    if micro == minibatch:
        return dict(per_device_train_batch_size=batch, gradient_accumulation_steps=1, num_mini_batches=batch // minibatch)
    if minibatch == batch:
        return dict(per_device_train_batch_size=micro, gradient_accumulation_steps=batch // micro, num_mini_batches=1)
    raise ValueError(f"TRL's PPO cannot split {batch} rollouts into minibatches of {minibatch} and micro-batches of {micro}")


def trl_iterations(policy, rm, prompts, out, args, settings: dict = DEFAULTS, stop_at_eos: bool = True,
                   device: str = "cpu") -> list[dict]:
    """Per-iteration phases of `trl.experimental.ppo.PPOTrainer` with tether's `settings` (PPOConfig fields;
    default: tether ppo's defaults), after the warm-up. stop_at_eos False: every response is exactly
    max_new_tokens long. On "cuda": bf16 mixed precision, as `--bf16 true` gives tether."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, PrinterCallback
    from trl.experimental import ppo as trl_ppo_package
    from trl.experimental.ppo import ppo_trainer as trl_ppo
    tokenizer = load_tokenizer(policy)
    tokenizer.padding_side = "left"  # TRL generates from the collator's padding
    ids = [encode_prompt(tokenizer, p.prompt) for p in read_prompts(prompts)]
    dataset = Dataset.from_dict({"input_ids": ids})
    d = settings
    batch = d["batch_size"]
    iterations = args.warmup + args.iterations
    config = trl_ppo_package.PPOConfig(
        output_dir=str(out), **trl_batch_sizes(d["batch_size"], d["minibatch_size"], d["micro_batch_size"]),
        num_ppo_epochs=d["ppo_epochs"], local_rollout_forward_batch_size=d["batch_size"],
        total_episodes=d["batch_size"] * iterations, response_length=d["max_new_tokens"],
        stop_token="eos" if stop_at_eos else None,
        temperature=d["temperature"], kl_coef=d["beta"], kl_estimator="k1", learning_rate=d["lr"],
        vf_coef=d["vf_coef"], cliprange=d["clip_eps"], cliprange_value=d["clip_value"], gamma=d["gamma"],
        lam=d["lam"], max_grad_norm=d["max_grad_norm"], whiten_rewards=d["whiten_rewards"],
        missing_eos_penalty=1.0, num_sample_generations=0, gradient_checkpointing=False, bf16=device != "cpu",
        use_cpu=device == "cpu",
        report_to="none", save_strategy="no", logging_steps=10**6, disable_tqdm=True, seed=0)
    load_lm = lambda: AutoModelForCausalLM.from_pretrained(policy, local_files_only=True)
    load_rm = lambda: AutoModelForSequenceClassification.from_pretrained(rm, local_files_only=True)
    trainer = trl_ppo.PPOTrainer(args=config, processing_class=tokenizer, model=load_lm(), ref_model=load_lm(),
                                 reward_model=load_rm(), value_model=load_rm(), train_dataset=dataset,
                                 eval_dataset=dataset.select(range(batch)))
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


def iteration_seconds(it: dict) -> float:
    return it["rollout"] + it["score"] + it["train"]


def summary_row(name: str, runs: list[list[dict]], reference: dict | None) -> list:
    """[name, rollout, score, train, total, min–max of per-run medians, tokens/s, ratios to the reference's]."""
    its = [it for run in runs for it in run]
    total = [iteration_seconds(it) for it in its]
    row = [name, median([it["rollout"] for it in its]), median([it["score"] for it in its]),
           median([it["train"] for it in its]), median(total),
           spread([median([iteration_seconds(it) for it in run]) for run in runs]),
           median([it["tokens"] / it["rollout"] for it in its])]
    if reference is not None:
        row += [f"{row[4] / reference['total']:.2f}×", f"{row[1] / reference['rollout']:.2f}×"]
    return row


def main(argv=None) -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--iterations", type=int, default=4, help="timed iterations per run (default: 4)")
    parser.add_argument("--warmup", type=int, default=1, help="iterations dropped at the start of each run (default: 1)")
    parser.add_argument("--no-trl", action="store_true", help="leave TRL out even if it imports")
    args = parser.parse_args(argv)
    setup(args.threads)

    tmp = Path(tempfile.mkdtemp(prefix="tether-bench-ppo-"))
    trl, reason = (None, "TRL left out (--no-trl)") if args.no_trl else trl_or_reason()
    if trl is not None:
        try:
            import trl.experimental.ppo  # noqa: F401  (PPO was last shipped in trl 1.12.0)
        except ImportError as e:
            trl, reason = None, f"TRL skipped: trl {trl.__version__} has no PPO trainer ({e})"
    contenders = {"tether": lambda out: tether_iterations(policy, rm, prompts, out, args),
                  "tether, k1 KL (TRL's estimator)": lambda out: tether_iterations(policy, rm, prompts, out, args,
                                                                                   kl_estimator="k1"),
                  "tether, shared value head": lambda out: tether_iterations(policy, rm, prompts, out, args,
                                                                             value_model="shared"),
                  "tether, one padded pass": lambda out: tether_iterations(policy, rm, prompts, out, args,
                                                                           micro_batch_size=DEFAULTS["minibatch_size"]),
                  "tether, HF generate": lambda out: tether_iterations(policy, rm, prompts, out, args,
                                                                         rollout_engine="hf")}
    if trl is not None:
        contenders[f"TRL {trl.__version__} PPO"] = lambda out: trl_iterations(policy, rm, prompts, out, args)
    runs = {name: [] for name in contenders}
    with quiet():
        policy, rm, prompts = fixtures(tmp, args.threads)
        for round_ in range(args.repeats):
            for k, (name, run) in enumerate(contenders.items()):
                runs[name].append(run(tmp / f"run{round_}_{k}"))
    results = {name: [it for run in rs for it in run] for name, rs in runs.items()}
    ours = results["tether"]
    reference = {"total": median([iteration_seconds(it) for it in ours]),
                 "rollout": median([it["rollout"] for it in ours])}
    d = DEFAULTS
    print(f"\nPPO (tether ppo's defaults): batch {d['batch_size']}, minibatch {d['minibatch_size']}, micro-batch "
          f"{d['micro_batch_size']}, {d['ppo_epochs']} epochs, ≤{d['max_new_tokens']} new tokens, value model "
          f"{d['value_model']}; seconds per iteration, median of {args.repeats} runs × {args.iterations} iterations; "
          f"{load_average()}")
    print_table(["contender", "rollout s", "score s", "train s", "total s", "min–max", "tokens/s",
                 "tether is (total)", "(rollout)"],
                [summary_row(name, runs[name], reference) for name in results])
    trl_key = next((k for k in results if k.startswith("TRL")), None)
    if trl_key:
        print(f"TRL's gc.collect(): median {median([it['gc'] for it in results[trl_key]]):.3f} s per iteration")
    if reason:
        print(reason)


if __name__ == "__main__":
    main()
