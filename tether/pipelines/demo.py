"""`tether demo`: the whole pipeline on the built-in assistant world, ending in an HTML report.

world data → SFT → collect labelled pairs → reward model (+ an ensemble for the
mitigation) → reward-model eval → β sweep with best-of-n → report. Each stage is
the same library call (and CLI command) a user runs on their own model and data;
`tether lab` runs the same stages (`tether.pipelines.stages`) on the user's models.
"""

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from tether.config import check_fields, opt, require
from tether.io import write_jsonl_atomic
from tether.pipelines.collect import WORLD, CollectConfig, LabelerBiases, relabel, run_collect
from tether.pipelines.sft import SFTConfig, run_sft
from tether.pipelines.stages import Stages, sweep_and_report, train_reward_models
from tether.pipelines.sweep import SweepConfig

# The rater pools of the ensemble's members (with --ensemble-raters): member k learns the collected pairs as
# labelled by pool k mod 3. Each bias is shared by two of the three pools, so the members disagree where the
# labels are biased, which mean − λ·std penalises.
RATER_POOLS = [("filler and edgy-refusal biases", LabelerBiases()),
               ("no edgy-refusal bias", LabelerBiases(edgy_refusal_bonus=0.0)),
               ("no filler bias", LabelerBiases(filler_bonus=0.0, filler_cap=0))]


def sized(full, quick, help: str, **bounds):
    """A demo size: unset (None) it becomes `full`, or `quick` with --quick; a value the user sets is kept."""
    return opt(None, help, default_text=f"{full}; with --quick {quick}", sizes=(full, quick), **bounds)


@dataclass
class DemoConfig:
    """Run SFT, preference collection, reward modelling, a β sweep of PPO, GRPO and DPO, and best-of-n on the built-in world.

    The demo's own sizes are fields here; `run_demo` builds every stage's config from them, and
    each stage's other settings are that stage's defaults.
    """
    out: str = opt("runs/demo", "demo directory; the report is OUT/sweep/report.html")
    quick: bool = opt(False, "a small run (about two minutes) used by the tests: the sizes the user did not set take their quick values")
    sft_examples: int | None = sized(40000, 6000, "SFT corpus size", ge=1)
    sft_epochs: int = opt(1, "SFT epochs (SFTConfig.epochs)", ge=1)
    sft_batch_size: int = opt(32, "SFT sequences per optimiser step (SFTConfig.batch_size; the small model learns more per example from more, smaller steps)", ge=1)
    train_prompts: int = opt(0, "training prompts (0: the whole train split)", ge=0)
    eval_prompts: int = opt(512, "evaluation prompts (fresh draws, another seed)", ge=1)
    n_pairs: int | None = sized(4096, 600, "labelled pairs for the reward model (one per prompt, fresh draws of the train split)", ge=1)
    eval_pairs: int | None = sized(1024, 200, "held-out labelled pairs for reward-model evaluation", ge=1)
    ensemble_size: int | None = sized(3, 2, "reward models in the ensemble mitigation (1: no ensemble row)", ge=1)
    ensemble_raters: bool = opt(True, "ensemble members learn the pairs as labelled by rater pools with different biases "
                                      "(RATER_POOLS); false: the same labels with other seeds (Coste et al. 2023), whose "
                                      "members share every bias of the labels and did not help on this world")
    early_stop: bool = opt(True, "add the early-stopping mitigation row (SweepConfig.early_stop)")
    betas: list[float] | None = sized([0.01, 0.05, 0.1, 0.5, 1.0, 5.0], [0.01, 0.05, 0.1, 0.5, 1.0], "KL coefficients of the sweep (SweepConfig.betas)", ge=0)
    methods: list[str] = opt(["ppo", "grpo", "dpo", "bon"], "methods on the frontier (SweepConfig.methods)")
    grpo_betas: list[float] | None = sized([0.01, 0.1, 1.0], [0.01, 1.0], "KL coefficients of the GRPO runs (SweepConfig.grpo_betas)", ge=0)
    rloo_betas: list[float] | None = sized([0.01, 0.1, 1.0], [0.01, 1.0], "KL coefficients of the RLOO runs, with rloo in --methods", ge=0)
    dpo_betas: list[float] | None = sized([0.03, 0.1, 0.3, 1.0], [0.1, 1.0], "beta of the DPO runs, on the collected pairs (SweepConfig.dpo_betas)", gt=0)
    ppo_steps: int | None = sized(40, 12, "PPO iterations per β (PPOConfig.steps)", ge=1)
    eval_samples: int | None = sized(512, 128, "held-out samples per evaluation (PPOConfig.eval_samples)", ge=1)
    bon_max: int | None = sized(256, 16, "largest n of best-of-n (a power of two)", ge=1)
    bon_prompts: int | None = sized(64, 32, "held-out prompts for best-of-n (SweepConfig.bon_prompts)", ge=1)
    seed: int = opt(0, "random seed of every stage")
    threads: int = opt(2, "torch CPU threads", ge=1)
    jobs: int = opt(2, "PPO runs of the sweep trained at once, sharing the threads (on 2 cores, two 1-thread runs "
                       "finish 40-iteration runs faster than one 2-thread run; bench/bench_sweep.py)", ge=1)
    device: str = opt("auto", "cpu, cuda, cuda:N or auto")

    def __post_init__(self):
        check_fields(self)
        for f in dataclasses.fields(self):
            if "sizes" in f.metadata and getattr(self, f.name) is None:
                setattr(self, f.name, f.metadata["sizes"][self.quick])
        require(self.bon_max & (self.bon_max - 1) == 0, "bon_max", "must be a power of two")


def run_demo(cfg: DemoConfig) -> dict:
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    data = out / "data"
    stage = Stages("demo")

    def world_data():
        WORLD.write_sft_corpus(data / "sft.jsonl", cfg.sft_examples, seed=cfg.seed)
        WORLD.write_prompt_file(data / "train_prompts.jsonl", "train", cfg.train_prompts or None, seed=cfg.seed)
        # Evaluation prompts are fresh draws of the train distribution (new arithmetic questions, new
        # phrasings); the world's "heldout" split asks questions the small SFT model has never seen.
        WORLD.write_prompt_file(data / "eval_prompts.jsonl", "train", cfg.eval_prompts, seed=cfg.seed + 1)
        # One pair per prompt: n_pairs (and eval_pairs) labelled pairs, fewer only where both responses stay identical.
        WORLD.write_prompt_file(data / "pair_prompts.jsonl", "train", cfg.n_pairs, seed=cfg.seed + 2)
        WORLD.write_prompt_file(data / "eval_pair_prompts.jsonl", "train", cfg.eval_pairs, seed=cfg.seed + 3)

    common = dict(seed=cfg.seed, device=cfg.device)
    stage("world data", world_data)
    sft = stage("sft", run_sft, SFTConfig(data=str(data / "sft.jsonl"), out=str(out / "sft"), epochs=cfg.sft_epochs,
                                          batch_size=cfg.sft_batch_size, **WORLD.tuned["sft"], **common))
    policy = str(out / "sft" / "model")
    collect = stage("collect", run_collect, CollectConfig(
        policy=policy, prompts=str(data / "pair_prompts.jsonl"), out=str(out / "collect"), **common))
    stage("collect eval pairs", run_collect, CollectConfig(
        policy=policy, prompts=str(data / "eval_pair_prompts.jsonl"), out=str(out / "collect_eval"),
        seed=cfg.seed + 1, device=cfg.device))
    pairs = out / "collect" / "pairs.jsonl"
    relabelled = cfg.ensemble_raters and cfg.ensemble_size > 1
    rows = [json.loads(line) for line in pairs.read_text().splitlines() if line.strip()] if relabelled else []
    member_pairs, members = [], {}
    for k in range(max(1, cfg.ensemble_size)):
        name = "rm" if k == 0 else f"rm_{k}"
        pool, biases = RATER_POOLS[k % len(RATER_POOLS) if cfg.ensemble_raters else 0]
        member_pairs.append(pairs)
        if k and relabelled:
            member_pairs[k] = data / f"pairs_{name}.jsonl"
            write_jsonl_atomic(member_pairs[k], relabel(rows, WORLD.labeler(biases=biases, seed=cfg.seed + k)))
        members[name] = f"{pool}, seed {cfg.seed + k}"
    rm_dirs, rm_eval = train_reward_models(stage, policy, member_pairs, out / "collect_eval" / "pairs.jsonl", out,
                                           **common, **WORLD.tuned["rm"])
    # Runs are evaluated once, at the end (their point on the frontier); the early-stop row's detectors every 10.
    ppo = dict(policy=policy, reward_model=rm_dirs[0], prompts=str(data / "train_prompts.jsonl"),
               eval_prompts=str(data / "eval_prompts.jsonl"), gold="assistant", steps=cfg.ppo_steps,
               eval_samples=cfg.eval_samples, eval_every=cfg.ppo_steps, threads=cfg.threads, **WORLD.tuned["ppo"], **common)
    return sweep_and_report(stage, SweepConfig(
        out=str(out / "sweep"), ppo=ppo, betas=cfg.betas, bon_ns=[2 ** i for i in range(cfg.bon_max.bit_length())],
        methods=cfg.methods, grpo_betas=cfg.grpo_betas, rloo_betas=cfg.rloo_betas, dpo_betas=cfg.dpo_betas,
        dpo_data=str(pairs), dpo_eval_data=str(out / "collect_eval" / "pairs.jsonl"),
        ensemble=rm_dirs[1:], early_stop=cfg.early_stop, early_stop_every=10, bon_prompts=cfg.bon_prompts, jobs=cfg.jobs,
        pipeline={"sft": sft, "collect": collect, "reward_model": dict(rm_eval),
                  **({"ensemble": members} if len(members) > 1 else {}), "timings_s": stage.timings}))
