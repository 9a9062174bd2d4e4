"""The `sweep.json` schema: its version, the shape of each block, and the validator.

`sweep.json` is what `tether sweep` (and `tether demo`) write and what the report,
and any external tool, reads. Every block is optional except `rows`; numbers are
JSON numbers or null. A file carries `"schema_version": SCHEMA_VERSION`; a file
without the key was written before the key existed, in the layout of version 1.

The file is a `Sweep` (below), whose blocks are the TypedDicts `Pipeline`, `Baseline`, `Row`,
`FitRecord`, `Optimum` and `FindingsRecord`.
"""

import json
import math
from typing import TypedDict

from tether.errors import InputError

SCHEMA_VERSION = 1
"""The layout of `sweep.json` this tether writes and reads; a reader refuses any other."""

NUMBER_FIELDS = ("beta", "n", "kl", "sqrt_kl", "proxy_reward", "gold_reward", "proxy_delta", "gold_delta",
                 "refusal_rate", "benign_refusal_rate", "filler_per_response", "repetition_rate", "mean_length",
                 "distinct_1", "distinct_2", "entropy", "dpo_margin", "dpo_accuracy", "rm_margin", "rm_accuracy",
                 "rm_n_pairs")
"""The row keys that hold a finite number or null."""
ROW_KINDS = {"ppo": "PPO, fixed β", "bon": "best-of-n", "ppo_adaptive": "PPO, adaptive KL",
             "ppo_ensemble": "PPO, RM ensemble", "ppo_early_stop": "PPO, early stop",
             "rloo": "RLOO, fixed β", "grpo": "GRPO, fixed β", "dpo": "DPO"}
FRONTIER_KINDS = ("ppo", "rloo", "grpo", "dpo", "bon")
"""The kinds that are points of a method's frontier: each needs its KL."""
"""Row kind → its name in the report; a row of another kind is shown under its kind."""


class Sample(TypedDict, total=False):
    """One held-out prompt and a policy's response, with the reward model's and the gold labeler's score."""

    prompt: str
    response: str
    proxy: float | None
    gold: float | None


class Row(TypedDict, total=False):
    """One run of the sweep: a PPO, RLOO, GRPO or DPO policy at one β, best-of-n at one n, or a mitigation.

    `kl` is KL(π ‖ π_ref) in nats and `sqrt_kl` its square root; rewards are means over
    held-out prompts and `*_delta` the same minus the SFT policy's (the frontier's y axis).
    Detector keys are those of `tether.analysis.detectors.detector_summary`.
    """

    kind: str  # a key of ROW_KINDS
    label: str  # shown everywhere; unique
    beta: float | None  # β of a PPO, RLOO, GRPO or DPO row
    n: int | None  # n of a best-of-n row
    kl: float | None
    sqrt_kl: float | None
    proxy_reward: float | None
    gold_reward: float | None
    proxy_delta: float | None
    gold_delta: float | None
    refusal_rate: float | None
    benign_refusal_rate: float | None
    filler_per_response: float | None
    repetition_rate: float | None
    mean_length: float | None
    distinct_1: float | None
    distinct_2: float | None
    entropy: float | None
    eos_rate: float | None  # share of responses that ended with EOS
    n_samples: int | None
    n_responses: int | None
    n_benign: int | None
    rm_gold_agreement: float | None  # share of same-prompt sample pairs the reward model orders as gold does
    dpo_margin: float | None  # a DPO row's implicit reward margin β·h on held-out pairs (TRL's eval rewards/margins)
    dpo_accuracy: float | None  # its share of held-out pairs with a positive margin
    rm_margin: float | None  # a DPO row's: the reward model's mean r(chosen) − r(rejected) on the same held-out pairs
    rm_accuracy: float | None  # and its share of them with r(chosen) > r(rejected) (a tie ½, as dpo_accuracy)
    rm_n_pairs: int | None  # the pairs the reward model scored (fewer only where its length rule skips some)
    steps_done: int | None  # PPO iterations run (fewer when the early-stop row stopped)
    early_stop: dict | None  # {"step", "reason"} when the early-stop row stopped
    style_shares: dict[str, float] | None  # the world's style → share of responses
    curve: list[dict] | None  # {"step", "objective/scores", "gold/score", "objective/kl"} per logged step
    samples: list[Sample]
    run_dir: str  # the run's directory, relative to the sweep's


class Baseline(TypedDict, total=False):
    """The SFT policy scored like a row (`kl` 0): a `Row`'s reward and detector keys, and its samples."""

    proxy_reward: float | None
    gold_reward: float | None
    kl: float
    benign_refusal_rate: float | None
    filler_per_response: float | None
    repetition_rate: float | None
    mean_length: float | None
    style_shares: dict[str, float] | None
    samples: list[Sample]


class RewardModelEval(TypedDict, total=False):
    """`tether rm eval`'s eval.json, plus the labeler ceiling and the training history."""

    accuracy: float
    loss: float
    n_pairs: int
    label_ceiling: float  # best accuracy reachable on the noisy labels (older files: "ceiling")
    length_bias: dict[str, float]
    by_category: dict[str, dict[str, dict]]  # field → value → {"accuracy", "n"}
    history: list[dict]  # {"step", "train/loss", "train/accuracy", "eval/loss", "eval/accuracy"}


class Pipeline(TypedDict, total=False):
    """Numbers of the stages before the sweep; any other stage is {name: number}, nested dicts flattened a.b."""

    sft: dict
    reward_model: RewardModelEval
    timings_s: dict[str, float]  # stage → wall seconds


class FitRecord(TypedDict, total=False):
    """`tether.analysis.frontier.Fit.as_dict()`."""

    kind: str  # "rl" or "bon"
    alpha: float
    beta: float
    r2: float | None
    n_points: int
    d_max: float | None
    peak_d: float | None
    peak_kl: float | None
    peak_reward: float | None


class Optimum(TypedDict, total=False):
    """π* ∝ π_ref·exp(r/β) at one β, from reweighted best-of-n samples (`frontier.kl_regularised_optimum`)."""

    beta: float
    kl: float
    sqrt_kl: float
    kl_limit: float  # log n: the estimate cannot go above it
    proxy_reward: float | None
    gold_reward: float | None
    proxy_delta: float | None
    gold_delta: float | None


class FindingsRecord(TypedDict, total=False):
    """`tether.analysis.findings.sweep_findings`: what the sweep reports, stored for other tools."""

    safe_but_useless_beta: float | None
    best_gold_beta: float | None
    refusal_threshold: float
    predicted_peak_sqrt_kl: dict[str, float | None]


class Sweep(TypedDict, total=False):
    """The whole file; only `rows` is required."""

    schema_version: int  # SCHEMA_VERSION
    world: str | None  # the built-in world that gave gold rewards
    gold_model: str | None  # or the reward model that did ("reward model NAME"; `RewardModelGold.name`)
    seed: int | None
    pipeline: Pipeline
    sft_baseline: Baseline
    rows: list[Row]
    fits: dict[str, FitRecord]  # "{gold|proxy}_{rl|bon|rloo|grpo|dpo}" (rl: PPO)
    optimum: list[Optimum]
    findings: FindingsRecord


def is_number(x) -> bool:
    """A finite int or float, not a bool."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_version(data: dict) -> None:
    version = data.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise InputError(f"sweep.json schema version {version!r} is not one this tether reads "
                         f"(it reads version {SCHEMA_VERSION})", field="schema_version")


def _check_numbers(row: dict, keys, where: str) -> None:
    for key in keys:
        if row.get(key) is not None and not is_number(row[key]):
            raise InputError(f"expected a finite number or null, got {row[key]!r}", field=f"{where}.{key}")


def _check_rows(rows) -> None:
    if not isinstance(rows, list):
        raise InputError("expected a list of runs", field="rows")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise InputError(f"expected an object, got {type(row).__name__}", field=f"rows[{i}]")
        for key in ("kind", "label"):
            if not isinstance(row.get(key), str) or not row[key]:
                raise InputError("expected a non-empty string", field=f"rows[{i}].{key}")
        _check_numbers(row, NUMBER_FIELDS, f"rows[{i}]")
        if row["kind"] in FRONTIER_KINDS and row.get("kl") is None and row.get("sqrt_kl") is None:
            raise InputError(f"a {row['kind']} row needs kl or sqrt_kl", field=f"rows[{i}].kl")
    labels = [row["label"] for row in rows]
    if len(set(labels)) != len(labels):
        raise InputError(f"labels must be unique, got {labels}", field="rows[].label")


def _check_optimum(optimum) -> None:
    if optimum is not None and not isinstance(optimum, list):
        raise InputError(f"expected a list or null, got {type(optimum).__name__}", field="optimum")
    for i, row in enumerate(optimum or []):
        if not isinstance(row, dict):
            raise InputError(f"expected an object, got {type(row).__name__}", field=f"optimum[{i}]")
        for key in ("beta", "kl"):
            if not is_number(row.get(key)):
                raise InputError(f"expected a finite number, got {row.get(key)!r}", field=f"optimum[{i}].{key}")
        _check_numbers(row, NUMBER_FIELDS + ("kl_limit",), f"optimum[{i}]")


def _check_fits(fits: dict) -> None:
    for name, fit in fits.items():
        if not isinstance(fit, dict) or fit.get("kind") not in ("rl", "bon"):
            raise InputError('expected a fit with "kind" "rl" or "bon"', field=f"fits.{name}")
        for key in ("alpha", "beta"):
            if not is_number(fit.get(key)):
                raise InputError(f"expected a finite number, got {fit.get(key)!r}", field=f"fits.{name}.{key}")


def check_sweep(data) -> None:
    """Raise InputError naming the field (`rows[3].kl`) when `data` does not follow the schema above,
    or when its `schema_version` is not SCHEMA_VERSION."""
    if not isinstance(data, dict):
        raise InputError(f"expected a JSON object, got {type(data).__name__}", field="sweep")
    _check_version(data)
    _check_rows(data.get("rows"))
    _check_optimum(data.get("optimum"))
    for key in ("pipeline", "sft_baseline", "fits", "findings"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            raise InputError(f"expected an object or null, got {type(data[key]).__name__}", field=key)
    _check_fits(data.get("fits") or {})


def read_sweep(path) -> Sweep:
    """The content of a `sweep.json` file, checked by `check_sweep`; InputError names the file."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read a sweep.json: {e}", path=path) from e
    try:
        check_sweep(data)
    except InputError as e:
        raise InputError(e.message, path=path, field=e.field) from e
    return data
