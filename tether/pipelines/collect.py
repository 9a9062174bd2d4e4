"""`tether collect`: sample response pairs from a policy and label them (or leave them for `tether label`)."""

import hashlib
import sys
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from tether.config import check_fields, opt, require
from tether.data import encode_prompt, read_prompts
from tether.io import write_jsonl_atomic
from tether.models import load_causal_lm, load_tokenizer, resolve_device, set_seed
from tether.pipelines.common import prepare_run_dir, sample_responses
from tether.rollout import SamplingConfig
from tether.worlds import get_world

# The world whose simulated rater labels pairs with --labeler gold; the bias options below are its rater's.
WORLD = get_world("assistant")
LabelerBiases = WORLD.labeler_biases


@dataclass
class CollectConfig:
    """Sample two responses per prompt from a policy; label them with the world's gold labeler or leave them unlabelled."""
    policy: str = opt("", "causal-LM directory to sample from (normally the SFT policy)")
    prompts: str = opt("", "prompts JSONL ({prompt} or {messages} rows)")
    out: str = opt("", "run directory; pairs are written to OUT/pairs.jsonl")
    pairs_per_prompt: int = opt(1, "pairs sampled per prompt", ge=1)
    temperature: float = opt(1.0, "sampling temperature", gt=0)
    top_p: float = opt(1.0, "nucleus sampling threshold (1: off)", gt=0, le=1)
    top_k: int = opt(0, "top-k sampling (0: off)", ge=0)
    max_new_tokens: int = opt(48, "longest response in tokens", ge=1)
    max_resamples: int = opt(3, "times a pair with identical or empty responses is resampled before it is dropped (and counted)", ge=0)
    labeler: str = opt("gold", "gold (the built-in world's simulated rater) or none (label later with `tether label`)")
    tau: float = opt(0.5, "gold labeler noise: P(y1 > y2) = sigmoid((u1 - u2) / tau)", gt=0)
    filler_bonus: float = opt(LabelerBiases.filler_bonus, "gold labeler bias: utility bonus per filler phrase (raters like politeness)")
    filler_cap: int = opt(LabelerBiases.filler_cap, "gold labeler bias: filler phrases that earn the bonus at most", ge=0)
    edgy_refusal_bonus: float = opt(LabelerBiases.edgy_refusal_bonus, "gold labeler bias: bonus for refusing an edgy-sounding benign prompt")
    batch_size: int = opt(128, "prompts per generation batch", ge=1)
    seed: int = opt(0, "random seed (sampling and labels)")
    device: str = opt("auto", "cpu, cuda, cuda:N or auto")
    skip_invalid: bool = opt(False, "skip invalid rows of --prompts and report them by reason, instead of stopping at the first")

    def __post_init__(self):
        check_fields(self)
        require(bool(self.policy), "policy", "a policy directory is required (--policy DIR)")
        require(bool(self.prompts), "prompts", "a prompts file is required (--prompts FILE)")
        require(self.labeler in ("gold", "none"), "labeler", f"must be gold or none, got {self.labeler!r}")


def make_gold_labeler(cfg):
    biases = LabelerBiases(filler_bonus=cfg.filler_bonus, filler_cap=cfg.filler_cap, edgy_refusal_bonus=cfg.edgy_refusal_bonus)
    return WORLD.labeler(tau=cfg.tau, biases=biases, seed=cfg.seed)


def pair_id(prompt, y1: str, y2: str) -> str:
    return hashlib.sha1(repr((prompt, y1, y2)).encode()).hexdigest()[:16]


def gold_row(labeler, prompt, y1: str, y2: str, extra: dict) -> dict:
    """A labelled pair with P(chosen ≻ rejected) and the world's annotations (gold utilities, family, styles)."""
    first = labeler.label(prompt, y1, y2)
    chosen, rejected = (y1, y2) if first else (y2, y1)
    return {**extra, "prompt": prompt, "chosen": chosen, "rejected": rejected, "id": pair_id(prompt, y1, y2),
            "labeler": labeler.metadata(), "p_chosen": labeler.prob(prompt, chosen, rejected),
            **WORLD.annotate_pair(prompt, chosen, rejected)}


def relabel(rows: list[dict], labeler) -> list[dict]:
    """The same pairs (gold-labelled rows of `tether collect`) labelled again by another labeler,
    e.g. a rater pool with other biases: the responses stay, chosen and rejected are drawn anew."""
    annotations = {"prompt", "chosen", "rejected", "id", "labeler", "p_chosen", "gold_chosen", "gold_rejected", "family",
                   "style_chosen", "style_rejected"}
    return [gold_row(labeler, r["prompt"], r["chosen"], r["rejected"], {k: v for k, v in r.items() if k not in annotations})
            for r in rows]


def run_collect(cfg: CollectConfig) -> dict:
    device = resolve_device(cfg.device)
    tokenizer = load_tokenizer(cfg.policy, field="policy")
    model = load_causal_lm(cfg.policy, device, field="policy")
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
    if cfg.labeler == "gold":
        labeler = make_gold_labeler(cfg)
        rows = [gold_row(labeler, r.prompt, y1, y2, r.extra) for r, y1, y2 in pairs]
    else:
        rows = [{**r.extra, "prompt": r.prompt, "response_a": y1, "response_b": y2, "id": pair_id(r.prompt, y1, y2),
                 "labeler": None} for r, y1, y2 in pairs]
    write_jsonl_atomic(out / "pairs.jsonl", rows)
    return {"n_pairs": len(rows), "dropped_identical": len(todo), "path": str(out / "pairs.jsonl")}
