"""`tether rm train` and `tether rm eval`: Bradley–Terry reward models and an honest look at them.

Chosen and rejected go through the model together, one packed row per pair: their
shared prefix once, then each side's own tokens; the score is read at each side's
last real token (`tether.models.score_pairs`).
"""

import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from tether.algos import bradley_terry_accuracy, bradley_terry_loss
from tether.config import check_fields, opt, require
from tether.data import collate_pairs, read_preferences, tokenize_pairs
from tether.data.collate import TRUNCATIONS, report_too_long, shared_prefix_length
from tether.data.token_fit import warn_unknown_tokens
from tether.io import write_json_atomic, write_jsonl_atomic
from tether.distributed import (full_state_dict, gathered, init_replica, is_sharded, local_slice, mean_across, no_sync,
                                share_weight, shutdown, wrap)
from tether.models import (PairScorer, apply_lora, load_reward_model, load_tokenizer, resolve_device, reward_model_from_policy,
                           save_pretrained_atomic, score_pairs, set_seed)
from tether.models.loading import enable_gradient_checkpointing
from tether.models.reward import trained_length_rule, training_settings
from tether.pipelines.common import (PairFiles, autocast, check_finite, cosine_lr, dtype_name, frozen_dtype,
                                     frozen_dtype_opt, length_bucketed_batches, micro_batches, peak_memory_gb,
                                     prepare_run_dir, read_pair_splits, set_lr)
from tether.runlog import MetricsLogger, read_metrics


@dataclass
class RMTrainConfig(PairFiles):
    """Train a reward model (sequence classification, one label) with the Bradley–Terry loss."""
    init: str = opt("", "causal-LM directory the reward model is initialised from (normally the SFT policy)")
    out: str = opt("", "run directory; the reward model is written to OUT/model")
    epochs: int = opt(2, "passes over the training pairs", ge=1)
    batch_size: int = opt(32, "pairs per optimiser step (2x rows per forward); at most a quarter of the training "
                              "pairs, so that an epoch has at least 4 steps", ge=1)
    micro_batch_size: int = opt(0, "pairs per forward/backward: gradients accumulate over a batch's micro-batches, so the batch and its loss are unchanged and activation memory scales with this (0: the whole batch at once)", ge=0)
    gradient_checkpointing: bool = opt(False, "recompute activations in the backward pass instead of keeping them (less memory, ~1/3 more compute; same gradients)")
    lr: float = opt(1e-5, "peak learning rate (AdamW); 1e-5 as in TRL's reward_modeling.py example for Qwen2-0.5B, full fine-tuning (the built-in world's tiny model: 1e-3)", gt=0)
    warmup_steps: int = opt(20, "linear warm-up steps; at most a quarter of the run's steps", ge=0)
    weight_decay: float = opt(0.0, "AdamW weight decay", ge=0)
    max_grad_norm: float = opt(1.0, "clip the gradient's global norm to this", gt=0)
    use_margin: bool = opt(True, "use a pair's `margin` field in the loss: -log σ(r_c - r_r - m)")
    lora_r: int = opt(0, "LoRA rank (0: full fine-tuning); the scalar head is always trained in full, adapters are merged on save", ge=0)
    lora_alpha: int = opt(16, "LoRA alpha", ge=1)
    center_rewards_coef: float = opt(0.0, "weight of the centering penalty mean((r_c + r_r)^2) (Eisenstein et al. 2023)", ge=0)
    eval_every: int = opt(50, "steps between evaluations on the held-out pairs", ge=1)
    seed: int = opt(0, "random seed (head init, data order, split)")
    device: str = opt("auto", "cpu, cuda, cuda:N or auto")
    bf16: bool = opt(False, "bfloat16 autocast for forward passes (GPUs with bf16): the trained weights, gradients and optimiser state stay float32 (the master copy)")
    fsdp: bool = opt(False, "with several processes: shard weights, gradients and optimiser state over them (FSDP2) instead of replicating them (DDP)")
    threads: int = opt(0, "torch CPU threads (0: torch's default)", ge=0)

    def __post_init__(self):
        check_fields(self)
        require(bool(self.init), "init", "a model directory to initialise from is required (--init DIR)")
        require(not (self.fsdp and self.lora_r), "fsdp", "LoRA keeps one copy of small adapters; use it without --fsdp")
        require(bool(self.data), "data", "a pairs file is required (--data FILE)")


@dataclass
class RMEvalConfig:
    """Evaluate a reward model on labelled pairs: accuracy, loss, calibration, length bias, disagreements."""
    model: str = opt("", "reward-model directory (sequence classification with one label)")
    data: str = opt("", "labelled preference pairs")
    out: str = opt("", "run directory for eval.json and disagreements.jsonl")
    format: str | None = opt(None, "force the pair format: explicit, implicit or conversational")
    max_length: int | None = opt(None, "longest prompt+response in tokens; None: the model's own (tether.json from rm train, else its position limit)", ge=2)
    truncation: str | None = opt(None, "longer pairs: left, right, skip or error; None: the model's own (tether.json, else left)", choices=TRUNCATIONS)
    skip_invalid: bool = opt(False, "skip invalid rows of --data and report them by reason, instead of stopping at the first")
    batch_size: int = opt(64, "pairs per forward", ge=1)
    device: str = opt("auto", "cpu, cuda, cuda:N or auto")
    dtype: str = frozen_dtype_opt("the reward model", " (its scores are float32 either way)")

    def __post_init__(self):
        check_fields(self)
        require(bool(self.model), "model", "a reward-model directory is required (--model DIR)")
        require(bool(self.data), "data", "a pairs file is required (--data FILE)")


MIN_STEPS_PER_EPOCH = 4
MAX_WARMUP_SHARE = 0.25
FEW_STEPS = 20
"""A run with fewer optimiser steps than this has barely moved the reward model from its initialisation."""
SMALL_HELD_OUT = 20
"""Held-out accuracy on fewer pairs than this has a standard error over 0.11 (√(p(1−p)/n) at p = 0.5)."""


def size_for_data(n_train: int, batch_size: int, epochs: int, warmup_steps: int) -> tuple[int, int, int]:
    """(batch, total steps, warm-up steps) that a few pairs allow.

    batch = min(batch_size, max(1, n_train // MIN_STEPS_PER_EPOCH)); total = ⌈n_train / batch⌉ · epochs;
    warm-up = min(warmup_steps, ⌊MAX_WARMUP_SHARE · total⌋), so the learning rate reaches its peak.
    """
    batch = min(batch_size, max(1, n_train // MIN_STEPS_PER_EPOCH))
    total = -(-n_train // batch) * epochs
    return batch, total, min(warmup_steps, int(MAX_WARMUP_SHARE * total))


def small_data_warnings(n_train: int, n_held: int, batch: int, total: int, epochs: int) -> list[str]:
    """What `rm train` warns about before training: a handful of optimiser steps, a held-out split too small to mean much."""
    warnings = []
    if total < FEW_STEPS:
        warnings.append(f"{total} optimiser steps only ({n_train} pairs, batch {batch}, {epochs} epochs): the reward "
                        f"model barely moves from its initialisation; raise --epochs or add pairs")
    if 0 < n_held < SMALL_HELD_OUT:
        warnings.append(f"{n_held} held-out pairs: accuracy moves in steps of {1 / n_held:.2f} and its standard error "
                        f"is about {(0.25 / n_held) ** 0.5:.2f}; hold out {SMALL_HELD_OUT} or more (--eval-data FILE)")
    return warnings


@torch.no_grad()
def pair_scores(model, tokens, batch_size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(r_chosen, r_rejected) for all pairs, in order. Chosen and rejected share one forward per batch."""
    model.eval()
    chosen, rejected = [], []
    for i in range(0, len(tokens.chosen_ids), batch_size):
        batch = collate_pairs(tokens.chosen_ids[i:i + batch_size], tokens.rejected_ids[i:i + batch_size], model.config.pad_token_id)
        r_chosen, r_rejected = score_pairs(model, {k: v.to(device) for k, v in batch.items()})
        chosen.append(r_chosen.float().cpu())
        rejected.append(r_rejected.float().cpu())
    return torch.cat(chosen), torch.cat(rejected)


def margins_tensor(margins, use_margin: bool):
    if not use_margin or all(m is None for m in margins):
        return None
    return torch.tensor([m or 0.0 for m in margins], dtype=torch.float32)


def accumulate_rm_gradients(scorer, tokens, idx: list[int], n_global: int, cfg, pad_id: int, device, replica,
                            step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Backward of this replica's pairs `idx` of a global batch of `n_global`, in micro-batches of
    cfg.micro_batch_size pairs; returns its shares of the global batch's loss and accuracy (detached).

    Micro-batch m's mean loss L_m (Bradley–Terry, plus the centering penalty, both means over its pairs)
    is weighted by W·n_m/N (`share_weight`), so the summed gradients, averaged over W replicas, are those
    of the global mean (1/N) Σ_m n_m·L_m.
    """
    chunks = micro_batches(idx, cfg.micro_batch_size)
    loss_total, accuracy_total = torch.zeros((), device=device), torch.zeros((), device=device)
    for k, chunk in enumerate(chunks):
        batch = collate_pairs([tokens.chosen_ids[i] for i in chunk], [tokens.rejected_ids[i] for i in chunk], pad_id)
        margin = margins_tensor([tokens.margins[i] for i in chunk], cfg.use_margin)
        with no_sync(scorer, active=k < len(chunks) - 1):
            with autocast(device, cfg.bf16):
                r_chosen, r_rejected = (r.float() for r in scorer({key: v.to(device) for key, v in batch.items()}))
            loss = bradley_terry_loss(r_chosen, r_rejected, None if margin is None else margin.to(device))
            if cfg.center_rewards_coef:
                loss = loss + cfg.center_rewards_coef * ((r_chosen + r_rejected) ** 2).mean()
            check_finite(loss, step)
            weight = share_weight(len(chunk), n_global, replica)
            (loss * weight).backward()
        loss_total += loss.detach() * weight
        accuracy_total += bradley_terry_accuracy(r_chosen.detach(), r_rejected.detach()) * weight
    return loss_total, accuracy_total


def run_rm_train(cfg: RMTrainConfig) -> dict:
    """Train, evaluate every `eval_every` steps, write OUT/model, curves and metrics.

    Under torchrun each process takes its share of every global batch of `batch_size` pairs.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    replica = init_replica(cfg.device)
    device = replica.device
    tokenizer = load_tokenizer(cfg.init, field="init")
    rng = random.Random(cfg.seed)
    pairs, held, train_tok, held_tok = read_pair_splits(cfg, tokenizer, rng)
    warn_unknown_tokens(cfg.data, train_tok.chosen_ids + train_tok.rejected_ids, tokenizer.unk_token_id, "rm train")
    out = prepare_run_dir(cfg.out, cfg) if replica.is_main else Path(cfg.out)
    set_seed(cfg.seed)
    model = reward_model_from_policy(cfg.init, tokenizer.pad_token_id, device)
    if cfg.lora_r:
        peft_model = apply_lora(model, cfg.lora_r, cfg.lora_alpha, "SEQ_CLS")
        model = peft_model.get_base_model()  # adapters are injected in place: same modules, same pooling
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    scorer = wrap(PairScorer(model), replica, cfg.fsdp)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)  # one kernel for all parameters
    # A batch is padded to its longest row, so pairs are bucketed by the length of their packed row.
    lengths = [len(c) + len(r) - shared_prefix_length(c, r) for c, r in zip(train_tok.chosen_ids, train_tok.rejected_ids)]
    batch_size, total, warmup_steps = size_for_data(len(lengths), cfg.batch_size, cfg.epochs, cfg.warmup_steps)
    if replica.is_main:
        if (batch_size, warmup_steps) != (cfg.batch_size, cfg.warmup_steps):
            print(f"tether rm train: {len(lengths)} training pairs: batch {batch_size} (--batch-size {cfg.batch_size}), "
                  f"warm-up {warmup_steps} steps (--warmup-steps {cfg.warmup_steps})", file=sys.stderr)
        for warning in small_data_warnings(len(lengths), len(held), batch_size, total, cfg.epochs):
            print(f"tether rm train: warning: {warning}", file=sys.stderr)
    logger = MetricsLogger(out, enabled=replica.is_main)
    step, eval_metrics = 0, {}
    bar = tqdm(total=total, desc="rm train", unit="step", dynamic_ncols=True, disable=not replica.is_main)
    for _ in range(cfg.epochs):
        for global_idx in length_bucketed_batches(lengths, batch_size, rng):
            idx = local_slice(global_idx, replica)
            model.train()
            set_lr(optimizer, cosine_lr(step, total, warmup_steps, cfg.lr))
            optimizer.zero_grad(set_to_none=True)
            loss, accuracy = accumulate_rm_gradients(scorer, train_tok, idx, len(global_idx), cfg, tokenizer.pad_token_id,
                                                     device, replica, step)
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            step += 1
            bar.update(1)
            row = mean_across({"train/loss": loss.item(),  # weighted: the global batch's means
                               "train/accuracy": accuracy.item()}, replica)
            row["memory/peak_gb"] = peak_memory_gb(device)
            # a sharded model needs every replica in its forward
            if held_tok is not None and (replica.is_main or is_sharded(model)) and (step % cfg.eval_every == 0 or step == total):
                with gathered(scorer):
                    rc, rr = pair_scores(model, held_tok, 2 * (cfg.micro_batch_size or batch_size), device)
                eval_metrics = {"eval/loss": bradley_terry_loss(rc, rr).item(), "eval/accuracy": bradley_terry_accuracy(rc, rr).item()}
                row.update(eval_metrics)
                bar.set_postfix(acc=f"{eval_metrics['eval/accuracy']:.3f}")
            logger.log(step, row)
    bar.close()
    logger.close()
    model.eval()
    if cfg.lora_r:
        model = peft_model.merge_and_unload()
    state = full_state_dict(model)
    if replica.is_main:
        save_pretrained_atomic(out / "model", model, tokenizer, state, training_settings(cfg.max_length, cfg.truncation))
        from tether.analysis.plots import plot_rm_curves
        plot_rm_curves(read_metrics(out / "metrics.jsonl"), out / "curves.png")
    shutdown(replica)
    return {"steps": step, "n_train": len(pairs), "n_eval": len(held), "batch_size": batch_size,
            "warmup_steps": warmup_steps, **eval_metrics, "memory/peak_gb": peak_memory_gb(device)}


def expected_calibration_error(p_chosen: torch.Tensor, n_bins: int = 10) -> float:
    """ECE of P(chosen ≻ rejected) = σ(r_c − r_r) against the labels (all 1): Σ_bins |bin|/N · |acc − conf|.

    Each pair is folded to the side the model prefers (confidence ≥ 0.5), as is usual
    for binary calibration (Guo et al. 2017).
    """
    conf = torch.maximum(p_chosen, 1 - p_chosen)
    correct = (p_chosen >= 0.5).float()
    bins = torch.clamp(((conf - 0.5) * 2 * n_bins).long(), max=n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        sel = bins == b
        if sel.any():
            ece += sel.float().mean().item() * abs(correct[sel].mean().item() - conf[sel].mean().item())
    return ece


def pearson(x: list[float], y: list[float]) -> float | None:
    x, y = torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return None
    return torch.corrcoef(torch.stack([x, y]))[0, 1].item()


def length_bias(r_chosen, r_rejected, chosen_lens, rejected_lens) -> dict:
    """How often the longer response wins under the labels vs under the model, and corr(reward, length)."""
    longer_chosen = torch.tensor(chosen_lens) > torch.tensor(rejected_lens)
    differ = torch.tensor(chosen_lens) != torch.tensor(rejected_lens)
    model_prefers_chosen = r_chosen > r_rejected
    model_longer_wins = (model_prefers_chosen == longer_chosen)[differ].float()
    return {
        "longer_wins_labels": longer_chosen[differ].float().mean().item() if differ.any() else None,
        "longer_wins_model": model_longer_wins.mean().item() if differ.any() else None,
        "reward_length_corr": pearson(r_chosen.tolist() + r_rejected.tolist(), list(chosen_lens) + list(rejected_lens)),
    }


def category_breakdown(pairs, correct: torch.Tensor, max_values: int = 20) -> dict:
    """Accuracy per value of every string field the pairs carry with few distinct values (family, style, ...)."""
    fields = {}
    for p, ok in zip(pairs, correct.tolist()):
        for key, value in p.extra.items():
            if isinstance(value, str):
                fields.setdefault(key, {}).setdefault(value, []).append(ok)
    return {key: {v: {"accuracy": sum(oks) / len(oks), "n": len(oks)} for v, oks in sorted(values.items())}
            for key, values in fields.items() if 1 < len(values) <= max_values}


def evaluate_pairs(model, tokenizer, pairs, max_length, truncation, batch_size, device, path=None) -> tuple[dict, list[dict]]:
    """eval.json's numbers and the disagreements (most confident first) for `pairs`."""
    tokens = tokenize_pairs(pairs, tokenizer, max_length, truncation, path=path)
    report_too_long("pairs", tokens.too_long, len(pairs), max_length, truncation, path)
    r_chosen, r_rejected = pair_scores(model, tokens, batch_size, device)
    p_chosen = torch.sigmoid(r_chosen - r_rejected)
    correct = r_chosen > r_rejected
    resp_len = lambda ids, n_prompt: len(ids) - n_prompt
    chosen_lens = [resp_len(c, n) for c, n in zip(tokens.chosen_ids, tokens.prompt_lens)]
    rejected_lens = [resp_len(r, n) for r, n in zip(tokens.rejected_ids, tokens.prompt_lens)]
    kept = [pairs[i] for i in tokens.pair_indices]
    metrics = {
        "accuracy": bradley_terry_accuracy(r_chosen, r_rejected).item(),
        "loss": bradley_terry_loss(r_chosen, r_rejected).item(),
        "n_pairs": len(r_chosen),
        "ece": expected_calibration_error(p_chosen),
        "mean_margin": (r_chosen - r_rejected).mean().item(),
        "reward_mean": torch.cat([r_chosen, r_rejected]).mean().item(),
        "reward_std": torch.cat([r_chosen, r_rejected]).std().item(),
        "length_bias": length_bias(r_chosen, r_rejected, chosen_lens, rejected_lens),
        "by_category": category_breakdown(kept, correct),
    }
    label_probs = [p.extra.get("p_chosen") for p in kept]
    if all(isinstance(x, (int, float)) for x in label_probs):
        # Best achievable accuracy on noisy labels: E[max(p, 1 − p)] under the labeler's own P(chosen ≻ rejected).
        metrics["label_ceiling"] = sum(max(x, 1 - x) for x in label_probs) / len(label_probs)
    wrong = (~correct).nonzero().flatten().tolist()
    wrong.sort(key=lambda i: p_chosen[i].item())
    disagreements = [disagreement_row(kept[i], r_chosen[i].item(), r_rejected[i].item(), p_chosen[i].item()) for i in wrong]
    return metrics, disagreements


def disagreement_row(pair, r_chosen: float, r_rejected: float, p_chosen: float) -> dict:
    """A pair the model orders against its label, with its other fields; the labeler's own P(chosen ≻ rejected),
    if the pair carries one (`tether collect` writes `p_chosen`), is kept as `label_p_chosen`."""
    extra = {("label_p_chosen" if key == "p_chosen" else key): value for key, value in pair.extra.items()}
    return {**extra, "prompt": pair.prompt, "chosen": pair.chosen, "rejected": pair.rejected,
            "reward_chosen": r_chosen, "reward_rejected": r_rejected, "p_chosen": p_chosen}


def run_rm_eval(cfg: RMEvalConfig) -> dict:
    """Score `cfg.data`'s pairs; write OUT/eval.json (with the weight dtype and peak memory) and disagreements.jsonl."""
    device = resolve_device(cfg.device)
    dtype = frozen_dtype(cfg.dtype, device)
    tokenizer = load_tokenizer(cfg.model)
    model = load_reward_model(cfg.model, device, dtype=dtype)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    max_length, truncation = trained_length_rule(cfg.model, model.config, cfg.max_length, cfg.truncation)
    pairs = read_preferences(cfg.data, cfg.format, skip_invalid=cfg.skip_invalid)
    metrics, disagreements = evaluate_pairs(model, tokenizer, pairs, max_length, truncation, cfg.batch_size, device, cfg.data)
    metrics |= {"dtype": dtype_name(dtype), "memory/peak_gb": peak_memory_gb(device)}
    out = prepare_run_dir(cfg.out, cfg)
    write_json_atomic(out / "eval.json", metrics)
    write_jsonl_atomic(out / "disagreements.jsonl", disagreements)
    print(json.dumps({k: v for k, v in metrics.items() if k != "by_category"}, indent=2))
    return metrics
