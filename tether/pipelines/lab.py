"""`tether lab`: the demo's pipeline on your own models, with a reward model as gold.

The synthetic setup of Gao, Schulman & Hilton (2022) and Coste et al. (2023): a gold
reward model stands in for the human. From an SFT policy, a gold reward-model
directory and a prompts file:

split the prompts (train / held out) → collect pairs from the policy on each, labelled
by the gold (P(y1 ≻ y2) = σ((g1 − g2)/τ)) → proxy reward model(s) initialised from the
policy (members 2..N learn the same pairs drawn again from the gold scores they keep)
→ proxy eval → β sweep with best-of-n, gold reward logged beside the proxy → report.

Each stage is the ordinary command's library call (`tether.pipelines.stages`, shared
with `tether demo`); OUT/stages.json records the finished ones, so a lab run started
again with the same settings resumes where it stopped.
"""

import dataclasses
import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from tether.config import check_fields, opt, require
from tether.data import read_prompts
from tether.errors import InputError
from tether.io import write_jsonl_atomic
from tether.pipelines.collect import CollectConfig, rescored_relabel, run_collect
from tether.pipelines.common import prepare_run_dir, split_held_out
from tether.pipelines.ppo import PPOConfig
from tether.pipelines.reward import RMTrainConfig
from tether.pipelines.stages import Stages, sweep_and_report, train_reward_models
from tether.pipelines.sweep import PER_RUN, SweepConfig
from tether.worlds import RewardModelGold, resolve_gold

# PPO and reward-model fields the lab sets itself (PPO's beside the sweep's per-run ones): neither keys of its
# `ppo:` and `rm:` mappings nor options.
LAB_PPO_FIELDS = ("policy", "reward_model", "prompts", "eval_prompts", "gold", "steps", "eval_samples", "eval_every",
                  "max_new_tokens", "seed", "device", "threads")
LAB_RM_FIELDS = ("init", "data", "eval_data", "out", "seed", "device")


@dataclass
class LabConfig:
    """Collect pairs from your SFT policy, label them with a gold reward model, train the proxy reward model on
    them, run the β sweep and best-of-n against it with gold measured beside, and write the report."""
    policy: str = opt("", "SFT policy directory: samples the pairs, initialises the proxy reward model, starts PPO and is its reference")
    gold: str = opt("", "gold reward-model directory (e.g. one trained with `tether rm train`), or a built-in world's name")
    prompts: str = opt("", "prompts file ({prompt} or {messages} rows); a seeded share is held out for evaluation")
    out: str = opt("runs/lab", "lab directory; the report is OUT/sweep/report.html")
    eval_fraction: float = opt(0.2, "share of the prompts held out: the proxy's evaluation pairs and PPO's evaluation prompts", gt=0, lt=1)
    pairs_per_prompt: int = opt(1, "pairs sampled per training prompt (CollectConfig.pairs_per_prompt)", ge=1)
    tau: float | None = opt(None, "gold labeler noise: P(y1 > y2) = sigmoid((g1 - g2) / tau)", gt=0,
                            default_text="1, the gold's own Bradley-Terry probability")
    max_new_tokens: int = opt(48, "longest response in tokens (collect and PPO)", ge=1)
    ensemble: int = opt(1, "proxy reward models; members 2..N learn the pairs drawn again from the gold scores "
                           "(other seeds) and make the sweep's uncertainty-penalty row", ge=1)
    betas: list[float] = opt([0.01, 0.1, 1.0], "KL coefficients of the sweep (SweepConfig.betas)", ge=0)
    ppo_steps: int = opt(40, "PPO iterations per β (PPOConfig.steps)", ge=1)
    eval_samples: int = opt(256, "held-out samples per evaluation (PPOConfig.eval_samples)", ge=1)
    bon_max: int = opt(64, "largest n of best-of-n (a power of two)", ge=1)
    bon_prompts: int = opt(32, "held-out prompts for best-of-n (SweepConfig.bon_prompts)", ge=1)
    seed: int = opt(0, "random seed of every stage")
    threads: int = opt(0, "torch CPU threads (0: torch's default)", ge=0)
    jobs: int = opt(1, "PPO runs of the sweep trained at once (SweepConfig.jobs)", ge=1)
    device: str = opt("auto", "cpu, cuda, cuda:N or auto")
    resume: bool = opt(True, "skip the stages a lab run in --out finished (its settings must be these); "
                             "false: refuse an --out that holds a lab run")
    # Last, so that check_fields has checked the lab's own fields before it builds these from them.
    ppo: PPOConfig = opt({}, "other settings of every PPO run, as `tether ppo` takes them", flag_prefix="ppo-",
                         per_run=LAB_PPO_FIELDS + PER_RUN)
    rm: RMTrainConfig = opt({}, "other settings of the proxy reward model(s), as `tether rm train` takes them",
                            flag_prefix="rm-", per_run=LAB_RM_FIELDS)

    def __post_init__(self):
        for name in ("policy", "gold", "prompts"):
            require(bool(getattr(self, name)), name, f"--{name} is required")
        gold = resolve_gold(self.gold)  # InputError naming the known golds
        self.ppo = stage_settings(self.ppo, PPOConfig, "ppo", self.ppo_fields())
        self.rm = stage_settings(self.rm, RMTrainConfig, "rm", self.rm_fields())
        check_fields(self)
        require(self.bon_max & (self.bon_max - 1) == 0, "bon_max", "must be a power of two")
        require(self.ensemble == 1 or isinstance(gold, RewardModelGold), "ensemble",
                "members learn the pairs drawn again from a reward-model gold's scores; a world's gold has none")

    def ppo_fields(self) -> dict:
        """The LAB_PPO_FIELDS of every PPO run (and `out`, the sweep's): the lab's policy, first proxy reward
        model, prompt split, gold and sizes."""
        out = Path(self.out)
        return {"policy": self.policy, "reward_model": str(out / "rm" / "model"),
                "prompts": str(out / "data" / "train_prompts.jsonl"), "eval_prompts": str(out / "data" / "eval_prompts.jsonl"),
                "gold": self.gold, "steps": self.ppo_steps, "eval_samples": self.eval_samples, "eval_every": self.ppo_steps,
                "max_new_tokens": self.max_new_tokens, "seed": self.seed, "device": self.device, "threads": self.threads,
                "out": str(out / "sweep")}

    def rm_fields(self) -> dict:
        """The LAB_RM_FIELDS of the first proxy reward model (`train_reward_models` sets each member's)."""
        out = Path(self.out)
        return {"init": self.policy, "data": str(out / "collect" / "pairs.jsonl"),
                "eval_data": str(out / "collect_eval" / "pairs.jsonl"), "out": str(out / "rm"), "seed": self.seed,
                "device": self.device}


def stage_settings(settings, cls, key: str, lab_fields: dict):
    """The LabConfig field `key` before check_fields builds the `cls` from it: the user's mapping, which may name
    none of the fields the lab sets itself (the field's `per_run`), with the lab's values of those
    (`lab_fields`); a `cls` gets them."""
    if isinstance(settings, cls):
        return dataclasses.replace(settings, **lab_fields)
    if isinstance(settings, dict):
        known = {f.name for f in dataclasses.fields(cls)} - set(LabConfig.__dataclass_fields__[key].metadata["per_run"])
        for name in settings:
            require(str(name).replace("-", "_") in known, f"{key}.{name}",
                    f"not a setting of the lab's {key} (it takes: {', '.join(sorted(known))})")
        return {**settings, **lab_fields}
    return settings  # check_fields names what was expected


def split_prompts(path, out: Path, fraction: float, seed: int) -> dict:
    """OUT/train_prompts.jsonl and OUT/eval_prompts.jsonl: a seeded `fraction` of the prompt rows held out."""
    rows = [{"prompt": r.prompt, **r.extra} for r in read_prompts(path)]
    held, train = split_held_out(rows, fraction, random.Random(seed))
    require(bool(held) and bool(train), "eval_fraction",
            f"{len(rows)} prompts leave {len(held)} held out and {len(train)} to train on; both need one")
    write_jsonl_atomic(out / "train_prompts.jsonl", train)
    write_jsonl_atomic(out / "eval_prompts.jsonl", held)
    return {"train": len(train), "eval": len(held)}


def relabel_members(pairs: Path, gold, tau: float, n: int, seed: int, out: Path) -> list[str]:
    """Pairs files of ensemble members 2..n: the collected pairs drawn again from their gold scores, seed + k."""
    rows = [json.loads(line) for line in pairs.read_text(encoding="utf-8").splitlines() if line.strip()]
    paths = []
    for k in range(1, n):
        paths.append(str(out / f"pairs_rm_{k}.jsonl"))
        write_jsonl_atomic(paths[-1], rescored_relabel(rows, gold, tau, seed + k))
    return paths


def run_lab(cfg: LabConfig) -> dict:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if not cfg.resume and Path(cfg.out, "stages.json").is_file():
        raise InputError("holds a lab run; use another --out, or resume it (--resume true)", path=cfg.out, field="out")
    out = prepare_run_dir(cfg.out, cfg)
    data = out / "data"
    stage = Stages("lab", out / "stages.json")
    gold = resolve_gold(cfg.gold)
    tau = cfg.tau or (gold.tau if isinstance(gold, RewardModelGold) else None)
    stage("split prompts", split_prompts, cfg.prompts, data, cfg.eval_fraction, cfg.seed)
    common = dict(policy=cfg.policy, gold=cfg.gold, tau=tau, max_new_tokens=cfg.max_new_tokens, device=cfg.device)
    collect = stage("collect", run_collect, CollectConfig(
        prompts=str(data / "train_prompts.jsonl"), out=str(out / "collect"), pairs_per_prompt=cfg.pairs_per_prompt,
        seed=cfg.seed, **common))
    stage("collect eval pairs", run_collect, CollectConfig(
        prompts=str(data / "eval_prompts.jsonl"), out=str(out / "collect_eval"), seed=cfg.seed + 1, **common))
    pairs = out / "collect" / "pairs.jsonl"
    members = [str(pairs)]
    if cfg.ensemble > 1:
        members += stage("relabel ensemble pairs", relabel_members, pairs, gold, tau, cfg.ensemble, cfg.seed, data)
    rm_settings = {name: value for name, value in dataclasses.asdict(cfg.rm).items() if name not in LAB_RM_FIELDS}
    rm_dirs, rm_eval = train_reward_models(stage, cfg.policy, members, out / "collect_eval" / "pairs.jsonl", out,
                                           cfg.seed, cfg.device, **rm_settings)
    return sweep_and_report(stage, SweepConfig(
        out=str(out / "sweep"), ppo=dataclasses.replace(cfg.ppo, reward_model=rm_dirs[0]), betas=cfg.betas, bon_ns=[2 ** i for i in range(cfg.bon_max.bit_length())],
        ensemble=rm_dirs[1:], bon_prompts=cfg.bon_prompts, jobs=cfg.jobs,
        pipeline={"collect": collect, "reward_model": dict(rm_eval), "timings_s": stage.timings}))
