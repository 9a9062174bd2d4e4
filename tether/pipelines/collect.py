"""`tether collect`: sample response pairs from a policy and label them (or leave them for `tether label`)."""

import hashlib
import random
import sys
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from tether.config import check_fields, opt, require
from tether.data import encode_prompt, read_prompts
from tether.io import write_jsonl_atomic
from tether.models import load_causal_lm, load_tokenizer, resolve_device, set_seed
from tether.pipelines.common import (dtype_name, frozen_dtype, frozen_dtype_opt, peak_memory_gb, prepare_run_dir,
                                     sample_responses)
from tether.rollout import SamplingConfig
from tether.worlds import RewardModelGold, get_world, resolve_gold
from tether.worlds.reward_model_gold import label_scored_pair

# The world whose simulated rater labels pairs with --labeler gold; the bias options below are its rater's.
WORLD = get_world("assistant")
LabelerBiases = WORLD.labeler_biases


@dataclass
class CollectConfig:
    """Sample two responses per prompt from a policy; label them with a gold labeler (a world's simulated rater or a
    reward model's) or leave them unlabelled."""
    policy: str = opt("", "causal-LM directory to sample from (normally the SFT policy)")
    prompts: str = opt("", "prompts JSONL ({prompt} or {messages} rows)")
    out: str = opt("", "run directory; pairs are written to OUT/pairs.jsonl")
    pairs_per_prompt: int = opt(1, "pairs sampled per prompt", ge=1)
    temperature: float = opt(1.0, "sampling temperature", gt=0)
    top_p: float = opt(1.0, "nucleus sampling threshold (1: off)", gt=0, le=1)
    top_k: int = opt(0, "top-k sampling (0: off)", ge=0)
    max_new_tokens: int = opt(48, "longest response in tokens", ge=1)
    max_resamples: int = opt(3, "times a pair with identical or empty responses is resampled before it is dropped (and counted)", ge=0)
    labeler: str = opt("gold", "gold (the --gold labeler) or none (label later with `tether label`)", choices=("gold", "none"))
    gold: str = opt("assistant", "the gold labeler: a built-in world's simulated rater (assistant) or a reward-model "
                                 "directory, whose scores g label P(y1 > y2) = sigmoid((g1 - g2) / tau)")
    tau: float | None = opt(None, "gold labeler noise: P(y1 > y2) = sigmoid((u1 - u2) / tau)", gt=0,
                            default_text="0.5 for a world, 1 for a reward model (its own Bradley-Terry probability)")
    filler_bonus: float = opt(LabelerBiases.filler_bonus, "gold labeler bias: utility bonus per filler phrase (raters like politeness)")
    filler_cap: int = opt(LabelerBiases.filler_cap, "gold labeler bias: filler phrases that earn the bonus at most", ge=0)
    edgy_refusal_bonus: float = opt(LabelerBiases.edgy_refusal_bonus, "gold labeler bias: bonus for refusing an edgy-sounding benign prompt")
    batch_size: int = opt(128, "prompts per generation batch", ge=1)
    seed: int = opt(0, "random seed (sampling and labels)")
    device: str = opt("auto", "cpu, cuda, cuda:N or auto")
    dtype: str = frozen_dtype_opt("the policy and a reward-model gold (neither is trained)",
                                  "; sampling and gold scores are float32 either way")
    skip_invalid: bool = opt(False, "skip invalid rows of --prompts and report them by reason, instead of stopping at the first")

    def __post_init__(self):
        check_fields(self)
        require(bool(self.policy), "policy", "a policy directory is required (--policy DIR)")
        require(bool(self.prompts), "prompts", "a prompts file is required (--prompts FILE)")
        resolve_gold(self.gold)  # InputError naming the known golds


def make_gold_labeler(cfg):
    biases = LabelerBiases(filler_bonus=cfg.filler_bonus, filler_cap=cfg.filler_cap, edgy_refusal_bonus=cfg.edgy_refusal_bonus)
    return WORLD.labeler(**({} if cfg.tau is None else {"tau": cfg.tau}), biases=biases, seed=cfg.seed)


def pair_id(prompt, y1: str, y2: str) -> str:
    return hashlib.sha1(repr((prompt, y1, y2)).encode()).hexdigest()[:16]


def gold_row(labeler, prompt, y1: str, y2: str, extra: dict) -> dict:
    """A labelled pair with P(chosen ≻ rejected) and the world's annotations (gold utilities, family, styles)."""
    first = labeler.label(prompt, y1, y2)
    chosen, rejected = (y1, y2) if first else (y2, y1)
    return {**extra, "prompt": prompt, "chosen": chosen, "rejected": rejected, "id": pair_id(prompt, y1, y2),
            "labeler": labeler.metadata(), "p_chosen": labeler.prob(prompt, chosen, rejected),
            **WORLD.annotate_pair(prompt, chosen, rejected)}


def scored_row(prompt, y1: str, y2: str, g1: float, g2: float, tau: float, rng: random.Random, labeler: dict,
               extra: dict) -> dict:
    """A pair labelled from a reward-model gold's scores g1, g2 (`label_scored_pair`), which it keeps."""
    first, p_chosen = label_scored_pair(g1, g2, tau, rng)
    chosen, rejected, g_chosen, g_rejected = (y1, y2, g1, g2) if first else (y2, y1, g2, g1)
    return {**extra, "prompt": prompt, "chosen": chosen, "rejected": rejected, "id": pair_id(prompt, y1, y2),
            "labeler": labeler, "p_chosen": p_chosen, "gold_chosen": g_chosen, "gold_rejected": g_rejected}


def reward_model_metadata(gold: RewardModelGold, tau: float, seed: int) -> dict:
    """What a row labelled by a reward-model gold records about its labeler."""
    return {"name": "reward-model-gold", "model": gold.name, "tau": tau, "seed": seed}


def reward_model_rows(gold: RewardModelGold, pairs: list[tuple], tau: float, seed: int) -> list[dict]:
    """(record, y1, y2) pairs labelled by a reward-model gold: every response scored in one batched pass,
    then one draw per pair, in order, from random.Random(seed)."""
    rng, meta = random.Random(seed), reward_model_metadata(gold, tau, seed)
    prompts = [r.prompt for r, _, _ in pairs]
    scores = gold.utilities(prompts + prompts, [y1 for _, y1, _ in pairs] + [y2 for _, _, y2 in pairs])
    return [scored_row(r.prompt, y1, y2, g1, g2, tau, rng, meta, r.extra)
            for (r, y1, y2), g1, g2 in zip(pairs, scores[:len(pairs)], scores[len(pairs):])]


def rescored_relabel(rows: list[dict], gold: RewardModelGold, tau: float, seed: int) -> list[dict]:
    """Rows a reward-model gold labelled, drawn again from random.Random(seed) and the gold scores they keep
    (the same P(chosen ≻ rejected), a fresh draw of the rater's noise); no model is run."""
    rng, meta = random.Random(seed), reward_model_metadata(gold, tau, seed)
    kept = {"prompt", "chosen", "rejected", "id", "labeler", "p_chosen", "gold_chosen", "gold_rejected"}
    return [scored_row(r["prompt"], r["chosen"], r["rejected"], r["gold_chosen"], r["gold_rejected"], tau, rng, meta,
                       {k: v for k, v in r.items() if k not in kept}) for r in rows]


def relabel(rows: list[dict], labeler) -> list[dict]:
    """The same pairs (gold-labelled rows of `tether collect`) labelled again by another labeler,
    e.g. a rater pool with other biases: the responses stay, chosen and rejected are drawn anew."""
    annotations = {"prompt", "chosen", "rejected", "id", "labeler", "p_chosen", "gold_chosen", "gold_rejected", "family",
                   "style_chosen", "style_rejected"}
    return [gold_row(labeler, r["prompt"], r["chosen"], r["rejected"], {k: v for k, v in r.items() if k not in annotations})
            for r in rows]


def run_collect(cfg: CollectConfig) -> dict:
    """Sample and label the pairs, write OUT/pairs.jsonl; return their count, the weight dtype and peak memory."""
    device = resolve_device(cfg.device)
    dtype = frozen_dtype(cfg.dtype, device)
    gold = resolve_gold(cfg.gold, device=device, dtype=dtype) if cfg.labeler == "gold" else None
    tokenizer = load_tokenizer(cfg.policy, field="policy")
    model = load_causal_lm(cfg.policy, device, field="policy", dtype=dtype)
    records = read_prompts(cfg.prompts, skip_invalid=cfg.skip_invalid)
    out = prepare_run_dir(cfg.out, cfg)
    set_seed(cfg.seed)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_k=cfg.top_k,
                              top_p=cfg.top_p, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    todo = [r for r in records for _ in range(cfg.pairs_per_prompt)]
    pairs: list[tuple] = []
    bar = tqdm(total=len(todo), desc="collect", unit="pair", dynamic_ncols=True)
    for _ in range(1 + cfg.max_resamples):
        if not todo:
            break
        ids = [encode_prompt(tokenizer, r.prompt) for r in todo for _ in range(2)]
        texts, _ = sample_responses(model, tokenizer, ids, sampling, generator, cfg.batch_size)
        retry = []
        for k, record in enumerate(todo):
            y1, y2 = texts[2 * k], texts[2 * k + 1]
            if y1 == y2 or not y1.strip() or not y2.strip():
                retry.append(record)  # identical or empty responses carry no preference
            else:
                pairs.append((record, y1, y2))
                bar.update(1)
        todo = retry
    bar.close()
    if todo:
        print(f"collect: dropped {len(todo)} prompt(s) whose two responses were identical or empty after "
              f"{cfg.max_resamples} resamples", file=sys.stderr)
    if isinstance(gold, RewardModelGold):
        rows = reward_model_rows(gold, pairs, cfg.tau or gold.tau, cfg.seed)
    elif gold is not None:
        labeler = make_gold_labeler(cfg)
        rows = [gold_row(labeler, r.prompt, y1, y2, r.extra) for r, y1, y2 in pairs]
    else:
        rows = [{**r.extra, "prompt": r.prompt, "response_a": y1, "response_b": y2, "id": pair_id(r.prompt, y1, y2),
                 "labeler": None} for r, y1, y2 in pairs]
    write_jsonl_atomic(out / "pairs.jsonl", rows)
    return {"n_pairs": len(rows), "dropped_identical": len(todo), "path": str(out / "pairs.jsonl"),
            "dtype": dtype_name(dtype), "memory/peak_gb": peak_memory_gb(device)}
