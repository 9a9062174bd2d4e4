"""`tether sweep`: one run per (method, β) — PPO, RLOO, GRPO, DPO — best-of-n, the reward–KL frontier and the report.

Each run is an ordinary `tether ppo` (PPO, RLOO, GRPO) or `tether dpo` run directory under
OUT/runs/; a run with an `eval.json` is finished and is not redone, a PPO-loop run with a
checkpoint resumes. Every method's KL is measured the same way: samples of the trained
policy against the reference (`evaluate_policy`).
Writes OUT/sweep.json (the schema of `tether.analysis.schema`) and OUT/report.html.
"""

import dataclasses
import json
import math
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from tether.algos import bradley_terry_accuracy
from tether.analysis import REFUSAL_THRESHOLD, SCHEMA_VERSION, frontier_fits, sweep_findings
from tether.analysis.report import write_report
from tether.config import check_fields, opt, require
from tether.data import read_prompts, tokenize_pairs
from tether.io import write_json_atomic
from tether.errors import InputError
from tether.models import load_causal_lm, load_tokenizer, resolve_device, set_seed
from tether.models.reward import trained_length_rule
from tether.pipelines.common import changed_settings, frozen_dtype, prepare_run_dir
from tether.pipelines.policy_eval import best_of_n, evaluate_policy, kl_regularised_optima, sample_grid
from tether.pipelines.dpo import DPOConfig, held_out_pairs, run_dpo
from tether.pipelines.ppo import PPOConfig, run_ppo
from tether.pipelines.reward import pair_scores
from tether.pipelines.scoring import RewardFunction
from tether.rollout import SamplingConfig, make_engine, policy_forward
from tether.runlog import read_metrics
from tether.worlds import RewardModelGold, resolve_gold


# PPO fields the sweep sets for each run itself: neither options of `tether sweep` nor keys of its `ppo:` mapping.
PER_RUN = ("out", "resume", "beta", "adaptive_kl", "kl_target", "ensemble", "advantage", "group_size", "kl_placement",
           "early_stop_benign_refusal", "early_stop_repetition", "early_stop_gold_agreement_drop")


@dataclass
class SweepConfig:
    """PPO at each β (and adaptive-KL targets, and mitigations) plus best-of-n against one reward model.

    Every PPO setting (the policy, reward model, prompts, steps, lr, ...) is a field of `ppo`, a
    `PPOConfig` shared by all runs; the sweep also samples its baseline and best-of-n with it. Per
    run the sweep sets OUT/runs/NAME as `out`, `resume` (a run with a checkpoint resumes), `beta`
    (from --betas), `adaptive_kl` and `kl_target` (from --kl-targets), and the mitigation rows'
    `ensemble` and `early_stop_*` (from the options of the same names here); elsewhere they keep
    PPOConfig's defaults.
    """
    out: str = opt("", "sweep directory: runs/, sweep.json, report.html")
    methods: list[str] = opt(["ppo", "bon"], "methods on the frontier: ppo, rloo, grpo (the PPO loop with that advantage "
                                             "estimator, group_size samples per prompt, no value function; grpo with k3 in the loss), "
                                             "dpo (on --dpo-data) and bon (best-of-n)")
    betas: list[float] = opt([0.01, 0.05, 0.1, 0.5, 1.0], "fixed KL coefficients, one PPO run each", ge=0)
    rloo_betas: list[float] = opt([], "KL coefficients of the RLOO runs (empty: --betas)", ge=0)
    grpo_betas: list[float] = opt([], "KL coefficients of the GRPO runs (empty: --betas)", ge=0)
    dpo_betas: list[float] = opt([], "beta of the DPO runs (empty: --betas; DPO's beta scales an implicit reward, "
                                     "so its values need not match PPO's)", gt=0)
    group_size: int = opt(4, "rloo and grpo: samples per prompt (PPOConfig.group_size)", ge=2)
    dpo_data: str = opt("", "dpo: the labelled pairs (normally those the reward model learned from)")
    dpo_eval_data: str | None = opt(None, "dpo: held-out labelled pairs for its margins (default: a split of --dpo-data)")
    dpo_epochs: int = opt(1, "dpo: passes over the pairs (DPOConfig.epochs)", ge=1)
    dpo_lr: float | None = opt(None, "dpo: peak learning rate (DPOConfig.lr); None: the PPO runs' lr, for parity", gt=0)
    dpo_batch_size: int = opt(32, "dpo: pairs per step (DPOConfig.batch_size)", ge=1)
    kl_targets: list[float] = opt([], "adaptive-KL runs, one per target KL (Ziegler et al. 2019)", gt=0)
    bon_ns: list[int] = opt([1, 2, 4, 8, 16, 32, 64, 128, 256], "best-of-n sizes (powers of two dividing the largest)", ge=1)
    bon_prompts: int = opt(64, "held-out prompts for best-of-n", ge=1)
    ensemble: list[str] = opt([], "extra reward models of the uncertainty-penalty mitigation row (mean - lambda*std, "
                                  "lambda: --uncertainty-coef)")
    early_stop: bool = opt(False, "add a mitigation row: PPO at the smallest beta that stops when a detector fires")
    early_stop_benign_refusal: float | None = opt(0.3, "early-stop row: stop when the benign refusal rate exceeds this")
    early_stop_repetition: float | None = opt(0.3, "early-stop row: stop when the repetition rate exceeds this")
    early_stop_gold_agreement_drop: float | None = opt(0.2, "early-stop row: stop when the reward model's agreement with gold on the policy's samples drops this much below the initial policy's (needs --gold). "
                                                            "It falls by ~0.15 in the first 10 iterations of the demo's smallest beta, while gold still rises: 0.1 stops before any gain")
    early_stop_every: int = opt(0, "early-stop row: iterations between its detector checks (0: half of --eval-every; a detector can only stop what it sees)", ge=0)
    refusal_threshold: float = opt(REFUSAL_THRESHOLD, "benign refusal rate above which behaviour counts as 'safe but useless'", ge=0, le=1)
    pipeline: dict = opt({}, "numbers of earlier stages to show in the report (YAML only; the demo fills it)")
    jobs: int = opt(1, "PPO runs trained at once, each in its own process with threads/jobs torch threads; "
                       "independent runs keep small models' cores busier than one run with more threads", ge=1)
    ppo: PPOConfig = opt({}, "settings of every PPO run; on the command line as `tether ppo` takes them (--lr, --steps, ...)",
                         per_run=PER_RUN)

    def __post_init__(self):
        require(bool(self.out), "out", "--out is required")
        self.ppo = run_template(self.ppo, self.out)
        check_fields(self)
        unknown = sorted(set(self.methods) - set(METHODS))
        require(not unknown, "methods", f"unknown {', '.join(unknown)}; known: {', '.join(METHODS)}")
        require("dpo" not in self.methods or bool(self.dpo_data), "dpo_data", "method dpo needs --dpo-data (the pairs)")
        n_max = max(self.bon_ns) if self.bon_ns else 1
        require(all(n_max % n == 0 for n in self.bon_ns), "bon_ns", f"each n must divide the largest ({n_max})")


def run_template(ppo, out):
    """The sweep's PPO settings with the per-run fields at PPOConfig's defaults (`out`: the sweep's).

    A mapping (YAML, the command line) may not name a per-run field; a PPOConfig's per-run values are replaced.
    """
    per_run = {f.name: f.default_factory() if f.default is dataclasses.MISSING else f.default
               for f in dataclasses.fields(PPOConfig) if f.name in PER_RUN}
    if isinstance(ppo, PPOConfig):
        return dataclasses.replace(ppo, **{**per_run, "out": out})
    if isinstance(ppo, dict):
        for key in ppo:
            require(str(key).replace("-", "_") not in PER_RUN, f"ppo.{key}",
                    f"set per run by the sweep (per-run fields: {', '.join(PER_RUN)}); see `tether sweep --help`")
        return {**ppo, "out": out}
    return ppo  # check_fields names what was expected


METHODS = ("ppo", "rloo", "grpo", "dpo", "bon")
# The PPO loop's settings that make a method (Ahmadian et al. 2024: the KL in the reward; Shao et al. 2024: k3 in the loss).
CRITIC_FREE = {"rloo": {"advantage": "rloo"}, "grpo": {"advantage": "grpo", "kl_placement": "loss", "kl_estimator": "k3"}}


def run_specs(cfg: SweepConfig) -> list[tuple[str, dict, dict]]:
    """(run name, per-run fields, row fields) for every trained run of the sweep: PPO-loop runs' fields go to a
    PPOConfig, the "dpo" rows' (kind dpo) to a DPOConfig."""
    specs = [(f"beta_{b:g}", {"beta": b}, {"kind": "ppo", "beta": b, "label": f"β={b:g}"})
             for b in cfg.betas if "ppo" in cfg.methods]
    for method, fields in CRITIC_FREE.items():
        if method in cfg.methods:
            specs += [(f"{method}_beta_{b:g}", {"beta": b, "group_size": cfg.group_size, **fields},
                       {"kind": method, "beta": b, "label": f"{method.upper()} β={b:g}"})
                      for b in getattr(cfg, f"{method}_betas") or cfg.betas]
    if "dpo" in cfg.methods:
        specs += [(f"dpo_beta_{b:g}", {"beta": b}, {"kind": "dpo", "beta": b, "label": f"DPO β={b:g}"})
                  for b in cfg.dpo_betas or cfg.betas]
    specs += [(f"adaptive_{t:g}", {"adaptive_kl": True, "kl_target": t, "beta": min(cfg.betas or [0.1])},
               {"kind": "ppo_adaptive", "beta": None, "kl_target": t, "label": f"adaptive KL→{t:g}"}) for t in cfg.kl_targets]
    beta0 = min(cfg.betas) if cfg.betas else 0.05
    if cfg.ensemble:
        specs.append((f"ensemble_beta_{beta0:g}", {"beta": beta0, "ensemble": cfg.ensemble},
                      {"kind": "ppo_ensemble", "beta": beta0, "label": f"ensemble −{cfg.ppo.uncertainty_coef:g}·std, β={beta0:g}"}))
    if cfg.early_stop:
        specs.append((f"early_stop_beta_{beta0:g}",
                      {"beta": beta0, "early_stop_benign_refusal": cfg.early_stop_benign_refusal,
                       "early_stop_repetition": cfg.early_stop_repetition,
                       "early_stop_gold_agreement_drop": cfg.early_stop_gold_agreement_drop if cfg.ppo.gold else None,
                       "eval_every": cfg.early_stop_every or max(1, cfg.ppo.eval_every // 2)},
                      {"kind": "ppo_early_stop", "beta": beta0, "label": f"early stop, β={beta0:g}"}))
    return specs


def ppo_config(cfg: SweepConfig, run_dir: Path, per_run: dict) -> PPOConfig:
    """The PPOConfig of one run: the sweep's `ppo` with the run's directory and per-run fields."""
    return dataclasses.replace(cfg.ppo, out=str(run_dir), **per_run)


def dpo_config(cfg: SweepConfig, run_dir: Path, beta: float) -> DPOConfig:
    """The DPOConfig of one DPO row: the sweep's pairs, its policy as policy and reference, evaluated as the PPO runs."""
    ppo = cfg.ppo
    return DPOConfig(policy=ppo.policy, data=cfg.dpo_data, eval_data=cfg.dpo_eval_data, out=str(run_dir), beta=beta,
                     epochs=cfg.dpo_epochs, lr=cfg.dpo_lr or ppo.lr, batch_size=cfg.dpo_batch_size, reward_model=ppo.reward_model,
                     gold=ppo.gold, eval_prompts=ppo.eval_prompts or ppo.prompts, eval_samples=ppo.eval_samples,
                     max_new_tokens=ppo.max_new_tokens, temperature=ppo.temperature, rollout_engine=ppo.rollout_engine,
                     seed=ppo.seed, device=ppo.device, dtype=ppo.dtype, threads=ppo.threads)


def run_config(cfg: SweepConfig, run_dir: Path, per_run: dict, fields: dict):
    """The config of one trained run: a DPOConfig for a dpo row, else a PPOConfig."""
    return dpo_config(cfg, run_dir, per_run["beta"]) if fields["kind"] == "dpo" else ppo_config(cfg, run_dir, per_run)


def finished_run(cfg: PPOConfig | DPOConfig) -> dict | None:
    """A finished run's eval.json, or None when the run has not finished.

    A run is reused only if it was made with the same settings (`changed_settings`: where
    it lives, the device and the thread count may differ); other settings are an error.
    """
    out = Path(cfg.out)
    saved = out / "config.yaml"
    if saved.is_file():
        changed = changed_settings(saved, cfg)
        if changed:
            raise InputError(f"this run was made with other settings ({', '.join(changed)}); "
                             "use another --out or delete the run", path=out, field=changed[0])
    if (out / "eval.json").is_file():
        print(f"sweep: {out.name} finished earlier, not redone")
        return json.loads((out / "eval.json").read_text())
    return None


def train_run(cfg: PPOConfig | DPOConfig) -> dict:
    """Run DPO, or the PPO loop resumed from the run's checkpoint if it has one."""
    if isinstance(cfg, DPOConfig):
        return run_dpo(cfg)
    return run_ppo(dataclasses.replace(cfg, resume=(Path(cfg.out) / "checkpoints" / "last.pt").is_file()))


def quiet_worker() -> None:
    """A parallel run's process: no progress bar (bars of several processes garble a terminal)."""
    sys.stderr = open(os.devnull, "w")


def expected_cost(cfg: PPOConfig) -> tuple[int, int]:
    """A sort key, larger for longer runs: reward models scored per rollout, then evaluations made.

    Starting the longest runs first keeps every worker busy to the end instead of
    leaving one long run alone on a core.
    """
    if isinstance(cfg, DPOConfig):
        return 0, 0  # a DPO run takes seconds
    return len(cfg.ensemble), cfg.steps // (cfg.eval_every or cfg.steps)


def train_runs(configs: list[PPOConfig], jobs: int) -> list[dict]:
    """The result of every config, in order: finished runs are read back, the others trained in turn
    or `jobs` at a time in worker processes.

    Workers split the CPU threads: each run gets max(1, threads // jobs). A worker's
    error is raised here, with its message, once the runs in progress have ended.
    """
    results = [finished_run(c) for c in configs]  # settings mismatches fail here, before any training
    todo = sorted((k for k, r in enumerate(results) if r is None), key=lambda k: expected_cost(configs[k]), reverse=True)
    if jobs == 1 or len(todo) <= 1:
        for k in todo:
            print(f"sweep: run {Path(configs[k].out).name}", flush=True)
            results[k] = train_run(configs[k])
        return results
    threads = max(1, (configs[0].threads or torch.get_num_threads()) // jobs)
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch thread pools
    print(f"sweep: {len(todo)} runs, {jobs} at a time ({threads} thread(s) each)", flush=True)
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=quiet_worker) as pool:
        futures = {pool.submit(train_run, dataclasses.replace(configs[k], threads=threads)): k for k in todo}
        for n, done in enumerate(tqdm(as_completed(futures), total=len(futures), desc="sweep runs", unit="run")):
            k = futures[done]
            if done.exception() is not None:
                pool.shutdown(cancel_futures=True)  # start no other run; those in progress end first
            results[k] = done.result()
            tqdm.write(f"sweep: run {Path(configs[k].out).name} finished ({n + 1}/{len(futures)})")
    return results


def learning_curve(run_dir: Path) -> list[dict]:
    keys = ("objective/scores", "objective/kl", "gold/score", "eval/proxy_reward", "eval/gold_reward", "eval/kl",
            "eval/benign_refusal_rate", "objective/beta", "rewards/margins", "rewards/accuracies")
    return [{"step": r["step"], **{k: r[k] for k in keys if k in r}} for r in read_metrics(run_dir / "metrics.jsonl")]


def dpo_margins(result: dict) -> dict:
    """A DPO run's eval.json as a row: its held-out implicit reward margin β·h and accuracy as `dpo_margin` and
    `dpo_accuracy` (beside the reward model's `proxy_reward`); the other held-out DPO metrics dropped."""
    row = {k: v for k, v in result.items() if not k.startswith("eval/")}
    if "eval/rewards/margins" in result:
        row |= {"dpo_margin": result["eval/rewards/margins"], "dpo_accuracy": result["eval/rewards/accuracies"]}
    return row


def reward_model_margins(dpo: DPOConfig, tokenizer, reward_fn: RewardFunction) -> dict:
    """The reward model's margin r(x, y_w) − r(x, y_l) on the held-out pairs of DPO's `dpo_margin`
    (`held_out_pairs`), scored as `rm eval` scores pairs (its trained length rule, `pair_scores`): `rm_margin`
    (the mean), `rm_accuracy` (the share with r_w > r_l, a tie ½, as `dpo_accuracy`) and `rm_n_pairs`; {} without
    held-out pairs. It does not depend on β: computed once per sweep and shown beside every DPO row."""
    pairs = held_out_pairs(dpo, tokenizer)
    if not pairs:
        return {}
    model, rm_tokenizer = reward_fn.model, reward_fn.tokenizers[0]
    max_length, truncation = trained_length_rule(dpo.reward_model, model.config, None, None, field="reward_model")
    tokens = tokenize_pairs(pairs, rm_tokenizer, max_length, truncation, path=dpo.eval_data or dpo.data)
    r_chosen, r_rejected = pair_scores(model, tokens, dpo.batch_size, reward_fn.device)
    return {"rm_margin": (r_chosen - r_rejected).mean().item(),
            "rm_accuracy": bradley_terry_accuracy(r_chosen, r_rejected).item(), "rm_n_pairs": len(r_chosen)}


def with_deltas(row: dict, baseline: dict) -> dict:
    row["sqrt_kl"] = math.sqrt(max(row["kl"], 0.0))
    row["proxy_delta"] = row["proxy_reward"] - baseline["proxy_reward"]
    if row.get("gold_reward") is not None and baseline.get("gold_reward") is not None:
        row["gold_delta"] = row["gold_reward"] - baseline["gold_reward"]
    return row


def run_sweep(cfg: SweepConfig) -> dict:
    ppo = cfg.ppo
    if ppo.threads:
        torch.set_num_threads(ppo.threads)
    out = prepare_run_dir(cfg.out, cfg)
    device = resolve_device(ppo.device)
    set_seed(ppo.seed)
    tokenizer = load_tokenizer(ppo.policy, field="policy")
    sft = load_causal_lm(ppo.policy, device, field="policy").requires_grad_(False)
    eval_records = read_prompts(ppo.eval_prompts or ppo.prompts, skip_invalid=ppo.skip_invalid)
    frozen = frozen_dtype(ppo.dtype, device)
    reward_fn = RewardFunction([ppo.reward_model], tokenizer, device, dtype=frozen)  # as the PPO runs score
    gold = resolve_gold(ppo.gold, device=device, dtype=frozen)
    sampling = SamplingConfig(max_new_tokens=ppo.max_new_tokens, temperature=ppo.temperature,
                              eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    engine = make_engine(ppo.rollout_engine)  # the PPO runs' engine
    print("sweep: evaluating the SFT policy")
    baseline = evaluate_policy(sft, lambda s, a, p: policy_forward(sft, s, a, p), reward_fn, tokenizer, eval_records,
                               ppo.eval_samples, sampling, gold, engine=engine, seed=ppo.seed, batch_size=ppo.batch_size)
    baseline_samples = baseline.pop("samples")
    rows = []
    specs = run_specs(cfg)
    configs = [run_config(cfg, out / "runs" / name, overrides, fields) for name, overrides, fields in specs]
    results = train_runs(configs, cfg.jobs)
    dpo = next((c for c in configs if isinstance(c, DPOConfig)), None)
    rm_margins = reward_model_margins(dpo, tokenizer, reward_fn) if dpo is not None else {}
    for (name, _, fields), result in zip(specs, results):
        run_dir = out / "runs" / name
        result.pop("samples", None)
        samples = [json.loads(l) for l in (run_dir / "eval_samples.jsonl").read_text().splitlines() if l.strip()]
        beside = rm_margins if fields["kind"] == "dpo" else {}
        rows.append(with_deltas({**fields, **dpo_margins(result), **beside, "curve": learning_curve(run_dir), "samples": samples[:16],
                                 "run_dir": str(run_dir.relative_to(out))}, baseline))
    optima = []
    if cfg.bon_ns and "bon" in cfg.methods:
        print(f"sweep: best-of-n for n in {cfg.bon_ns}")
        grid = sample_grid(sft, reward_fn, tokenizer, eval_records, max(cfg.bon_ns), cfg.bon_prompts, sampling,
                           engine=engine, seed=ppo.seed)
        rows += [with_deltas(row, baseline) for row in best_of_n(grid, cfg.bon_ns, gold)]
        optima = [with_deltas(row, baseline) for row in kl_regularised_optima(grid, cfg.betas, gold)]
    data = {
        "schema_version": SCHEMA_VERSION, "world": None if isinstance(gold, RewardModelGold) else ppo.gold,
        "gold_model": gold.name if isinstance(gold, RewardModelGold) else None, "pipeline": cfg.pipeline,
        "sft_baseline": {**baseline, "samples": baseline_samples[:16]},
        "rows": rows, "fits": {name: fit.as_dict() for name, fit in frontier_fits(rows).items()},
        "findings": sweep_findings(rows, cfg.refusal_threshold),
        "optimum": optima,
    }
    write_json_atomic(out / "sweep.json", data)
    write_report(out / "report.html", data)
    print(f"sweep: report written to {out / 'report.html'}")
    return data
