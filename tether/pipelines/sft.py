"""`tether sft`: supervised fine-tuning of a causal LM on prompt/completion data.

Loss on completion tokens only, summed over each sequence's tokens and averaged
over sequences: L = −(1/B) Σ_b Σ_{t ∈ completion_b} log π(x_t | x_<t). Every token
weighs the same whatever its batch; a per-batch token mean over length-bucketed
batches would up-weight short sequences and bias the policy towards short styles.

Gradients are not clipped by default. With this loss a batch's gradient norm grows
with its sequences' length, and length-bucketed batches of a corpus whose styles
differ in length are nearly one style each: clipping every step (the norms are
10–50 on the built-in world) rescales each batch by 1/‖g‖, which weights short-style
batches above long ones and skews the learned mixture (a two-style corpus, half
short, half long, came out 65–95% short with clipping at 1.0). `--max-grad-norm`
turns clipping on as a safety net for models that need it.

`--average-last F` saves the uniform average of the weights after each of the last
F·steps optimiser steps (stochastic weight averaging, Izmailov et al. 2018) instead of
the last step's weights (`WeightAverage`: torch's `AveragedModel` deep-copies the
model, which FSDP forbids). Each length-bucketed batch pushes the model towards its
own styles, so the style mixture of the last weights depends on the last batches
(on the built-in world at batch 16, one seed's harmful compliance came out 0.20
against the corpus's 0.35 from the last weights, 0.29 from the average of the last
quarter's).
"""

import random
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from tether.algos import token_logprobs
from tether.config import check_fields, opt, require
from tether.data import encode_prompt, encode_response, pad_right, read_sft_examples
from tether.data.collate import TRUNCATIONS, LengthRule
from tether.data.token_fit import warn_unknown_tokens
from tether.distributed import (full_state_dict, full_value, init_replica, is_sharded, local_slice, mean_across,
                                no_sync, share_weight, shutdown, wrap)
from tether.models import load_causal_lm, load_tokenizer, save_pretrained_atomic, set_seed
from tether.models.loading import disable_dropout, enable_gradient_checkpointing
from tether.pipelines.common import (autocast, check_finite, cosine_lr, length_bucketed_batches, micro_batches,
                                     peak_memory_gb, prepare_run_dir, set_lr, split_held_out)
from tether.runlog import MetricsLogger
from tether.worlds import BUILTIN_POLICY, builtin_model_world


@dataclass
class SFTConfig:
    """Supervised fine-tuning on prompt/completion (or conversational `messages`) JSON Lines."""
    data: str = opt("", "training data: JSONL of {prompt, completion} or {messages}")
    out: str = opt("", "run directory; the model is written to OUT/model")
    model: str = opt(BUILTIN_POLICY, f"a local Hugging Face causal-LM directory, or {BUILTIN_POLICY} (the built-in world's small GPT-2, randomly initialised)")
    eval_data: str | None = opt(None, "held-out JSONL for eval loss; default: a split of --data")
    eval_fraction: float = opt(0.02, "fraction of --data held out for eval loss when --eval-data is not given", ge=0, lt=1)
    epochs: int = opt(2, "passes over the training data", ge=1)
    batch_size: int = opt(64, "sequences per optimiser step", ge=1)
    micro_batch_size: int = opt(0, "sequences per forward/backward: gradients accumulate over a batch's micro-batches, so the batch and its loss are unchanged and activation memory scales with this (0: the whole batch at once)", ge=0)
    gradient_checkpointing: bool = opt(False, "recompute activations in the backward pass instead of keeping them (less memory, ~1/3 more compute; same gradients)")
    lr: float = opt(2e-5, "peak learning rate (AdamW); 2e-5 as in TRL's `trl sft` examples for 0.5B models (the built-in world's tiny model: 3e-3, `tether.worlds` tuned values)", gt=0)
    adam_betas: list[float] = opt([0.9, 0.95], "AdamW (beta1, beta2); 0.95 as in nanoGPT and GPT-3, not torch's 0.999", ge=0, lt=1)
    warmup_steps: int = opt(50, "linear warm-up steps", ge=0)
    weight_decay: float = opt(0.0, "AdamW weight decay", ge=0)
    max_grad_norm: float = opt(0.0, "clip the gradient's global norm to this (0: no clipping, the default: see the module docstring)", ge=0)
    average_last: float = opt(0.0, "save the average of the weights over this last fraction of the steps (0: the last weights; see the module docstring)", ge=0, lt=1)
    max_length: int = opt(128, "longest prompt+completion in tokens", ge=2)
    truncation: str = opt("right", "longer rows: right (cut the completion's end), left (cut the prompt's start), skip or error; counted on stderr", choices=TRUNCATIONS)
    skip_invalid: bool = opt(False, "skip invalid rows of --data and --eval-data and report them by reason, instead of stopping at the first")
    seed: int = opt(0, "random seed (init, data order)")
    device: str = opt("auto", "cpu, cuda, cuda:N or auto")
    bf16: bool = opt(False, "bfloat16 autocast for forward passes (GPUs with bf16): the trained weights, gradients and optimiser state stay float32 (the master copy)")
    fsdp: bool = opt(False, "with several processes: shard weights, gradients and optimiser state over them (FSDP2) instead of replicating them (DDP)")
    threads: int = opt(0, "torch CPU threads (0: torch's default)", ge=0)
    log_every: int = opt(50, "steps between metrics rows", ge=1)

    def __post_init__(self):
        check_fields(self)
        require(bool(self.data), "data", "a training file is required (--data FILE.jsonl)")
        require(len(self.adam_betas) == 2, "adam_betas", f"expected two values (beta1 beta2), got {self.adam_betas}")


class WeightAverage:
    """Uniform running mean of a model's parameters: m ← m + (θ − m)/n after the n-th update.

    Kept on the parameters' own tensors (shards under FSDP), starting from their current values.
    """

    def __init__(self, model):
        self.params = list(model.parameters())
        self.means = [p.detach().clone() for p in self.params]
        self.count = 1

    @torch.no_grad()
    def update(self) -> None:
        self.count += 1
        for mean, param in zip(self.means, self.params):
            mean.lerp_(param, 1 / self.count)

    @torch.no_grad()
    def copy_to_model(self) -> None:
        for mean, param in zip(self.means, self.params):
            param.copy_(mean)


def init_policy(model: str, seed: int, device):
    """(model, tokenizer) from a directory, or a built-in world's freshly initialised model ("builtin:NAME")."""
    world = builtin_model_world(model)
    if world is not None:
        tokenizer = world.build_tokenizer()
        set_seed(seed)
        return disable_dropout(world.build_model(tokenizer)).to(device), tokenizer
    return load_causal_lm(model, device), load_tokenizer(model)


def tokenize_sft(examples, tokenizer, max_length: int, path, truncation: str = "error") -> list[tuple[list[int], int]]:
    """(prompt + completion token ids, prompt length) per example. A row over max_length is cut by
    `truncate_to_fit` ("right", "left"), left out ("skip") or an error naming the line ("error");
    the rows over it are counted in one line on stderr (`LengthRule`)."""
    rule = LengthRule(max_length, truncation, path)
    rows = []
    for ex in examples:
        fitted = rule.fit(encode_prompt(tokenizer, ex.prompt), [encode_response(tokenizer, ex.completion, prompt=ex.prompt)],
                          ex.source_line, ("completion",))
        if fitted is not None:
            prompt_ids, (completion,) = fitted
            rows.append((prompt_ids + completion, len(prompt_ids)))
    rule.report("rows", len(examples))
    return rows


def sft_batch(rows, pad_id: int, device):
    """Right-padded ids, attention mask and completion-token mask for one batch."""
    ids, attn = pad_right([r[0] for r in rows], pad_id)
    completion = attn.clone()
    for b, (_, prompt_len) in enumerate(rows):
        completion[b, :prompt_len] = 0
    return ids.to(device), attn.to(device), completion.to(device)


def sft_loss(model, ids, attn, completion_mask) -> torch.Tensor:
    """−(1/B) Σ_b Σ_t completion_mask·log π(x_t | x_<t) (per-sequence normalisation; see module docstring)."""
    logits = model(input_ids=ids, attention_mask=attn).logits
    logp = token_logprobs(logits, ids)  # (B, T-1): position t scores token t+1
    return -(logp * completion_mask[:, 1:]).sum() / ids.shape[0]


def accumulate_sft_gradients(model, rows, n_global: int, cfg, pad_id: int, device, replica, step: int) -> torch.Tensor:
    """Backward of this replica's rows of a global batch of `n_global`, in micro-batches of cfg.micro_batch_size;
    returns its share of the global batch's loss (a detached scalar: reading it is left to the caller).

    Micro-batch m's mean loss L_m is weighted by w_m = W·n_m/N (`share_weight`), so the gradients summed over
    micro-batches, then averaged over the W replicas, are those of the global mean (1/N) Σ_m n_m·L_m
    (the rows of one micro-batch are padded to its longest; padding adds nothing to a row's sum).
    """
    chunks = micro_batches(rows, cfg.micro_batch_size)
    total = torch.zeros((), device=device)
    for k, chunk in enumerate(chunks):
        with no_sync(model, active=k < len(chunks) - 1), autocast(device, cfg.bf16):
            loss = sft_loss(model, *sft_batch(chunk, pad_id, device))
            check_finite(loss, step)
            weight = share_weight(len(chunk), n_global, replica)
            (loss * weight).backward()
        total += loss.detach() * weight
    return total


@torch.no_grad()
def eval_loss(model, rows, pad_id, batch_size, device) -> float:
    """Mean completion NLL per sequence over `rows`."""
    model.eval()
    total = 0.0
    for i in range(0, len(rows), batch_size):
        batch = rows[i:i + batch_size]
        total += sft_loss(model, *sft_batch(batch, pad_id, device)).item() * len(batch)
    return total / max(1, len(rows))


def run_sft(cfg: SFTConfig) -> dict:
    """Train, write OUT/model (a transformers directory) and OUT/metrics.jsonl; return final metrics.

    Under torchrun each process takes its share of every global batch of `batch_size` sequences.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    replica = init_replica(cfg.device)
    device = replica.device
    model, tokenizer = init_policy(cfg.model, cfg.seed, device)
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    ddp_model = wrap(model, replica, cfg.fsdp)
    train = tokenize_sft(read_sft_examples(cfg.data, skip_invalid=cfg.skip_invalid), tokenizer, cfg.max_length, cfg.data,
                         cfg.truncation)
    warn_unknown_tokens(cfg.data, [ids for ids, _ in train], tokenizer.unk_token_id, "sft")
    rng = random.Random(cfg.seed)
    if cfg.eval_data:
        held = tokenize_sft(read_sft_examples(cfg.eval_data, skip_invalid=cfg.skip_invalid), tokenizer, cfg.max_length,
                            cfg.eval_data, cfg.truncation)
    else:
        held, train = split_held_out(train, cfg.eval_fraction, rng)
    out = prepare_run_dir(cfg.out, cfg) if replica.is_main else Path(cfg.out)
    set_seed(cfg.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=tuple(cfg.adam_betas), fused=True)
    lengths = [len(r[0]) for r in train]
    steps_per_epoch = -(-len(train) // cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    average_from = total - round(cfg.average_last * total)  # weights after later steps are averaged
    averaged = None
    logger = MetricsLogger(out, enabled=replica.is_main)
    step, metrics = 0, {}
    bar = tqdm(total=total, desc="sft", unit="step", dynamic_ncols=True, disable=not replica.is_main)
    for epoch in range(cfg.epochs):
        model.train()
        for global_idx in length_bucketed_batches(lengths, cfg.batch_size, rng):
            batch_idx = local_slice(global_idx, replica)
            set_lr(optimizer, cosine_lr(step, total, cfg.warmup_steps, cfg.lr))
            optimizer.zero_grad(set_to_none=True)
            loss = accumulate_sft_gradients(ddp_model, [train[i] for i in batch_idx], len(global_idx), cfg,
                                            tokenizer.pad_token_id, device, replica, step)
            clipped_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm) if cfg.max_grad_norm else None
            optimizer.step()
            step += 1
            if step > average_from:
                if averaged is None:
                    averaged = WeightAverage(model)
                else:
                    averaged.update()
            bar.update(1)
            if step % cfg.log_every == 0:  # the norm before any clipping; computed only for the rows logged
                grad_norm = clipped_norm if clipped_norm is not None else torch.nn.utils.get_total_norm(
                    [p.grad for p in model.parameters() if p.grad is not None])
                row = mean_across({"train/loss": loss.item(),  # the global batch's mean
                                   "train/grad_norm": full_value(grad_norm)}, replica)
                logger.log(step, {**row, "train/lr": optimizer.param_groups[0]["lr"], "train/epoch": epoch,
                                  "memory/peak_gb": peak_memory_gb(device)})
                bar.set_postfix(loss=f"{row['train/loss']:.3f}")
        if averaged is not None and epoch == cfg.epochs - 1:
            averaged.copy_to_model()
        if held and (replica.is_main or is_sharded(model)):  # a sharded model needs every replica in its forward
            metrics = {"eval/loss": eval_loss(model, held, tokenizer.pad_token_id, cfg.micro_batch_size or cfg.batch_size, device), "train/epoch": epoch + 1}
            logger.log(step, metrics)
    bar.close()
    logger.close()
    model.eval()
    state = full_state_dict(model)
    if replica.is_main:
        save_pretrained_atomic(out / "model", model, tokenizer, state)
    shutdown(replica)
    return {"train/loss": loss.item(), **metrics, "steps": step, "memory/peak_gb": peak_memory_gb(device)}
