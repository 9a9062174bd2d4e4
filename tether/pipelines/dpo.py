"""`tether dpo`: tune a policy directly on preference pairs (Rafailov et al. 2023), against a frozen reference.

One loop, read top to bottom: the reference's sequence log-probs of every pair once →
epochs of length-bucketed batches → the policy's sequence log-probs of chosen and
rejected → the loss (`sigmoid` DPO with cDPO's label smoothing, `ipo`, `hinge`;
`tether.algos`) → log under TRL's names → evaluate → `model/`. The pairs are read
exactly as `tether rm train` reads them (`read_pair_splits`: same formats, held-out
split, truncation and skip rule). A log-prob sums the response tokens only: never the
prompt, never the padding. The reference is the initial policy (`--ref-policy` to name
another), or with LoRA the policy with its adapter disabled.

With `--reward-model` the final policy is also evaluated as PPO's is (`evaluate_policy`:
samples of the policy, KL to the reference, the reward model's score, gold and the
detectors), so that DPO sits on the sweep's frontier beside PPO, RLOO, GRPO and best-of-n.
"""

import random
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from tether.algos import (bradley_terry_accuracy, dpo_hinge_loss, dpo_implicit_reward, dpo_loss, ipo_loss,
                          token_logprobs)
from tether.config import check_fields, opt, require
from tether.data import pad_right, read_prompts
from tether.io import write_json_atomic, write_jsonl_atomic
from tether.models import apply_lora, load_causal_lm, load_tokenizer, resolve_device, save_pretrained_atomic, set_seed
from tether.pipelines.common import (PairFiles, check_finite, cosine_lr, frozen_dtype, frozen_dtype_opt,
                                     length_bucketed_batches, peak_memory_gb, prepare_run_dir, read_pair_splits, set_lr)
from tether.pipelines.policy_eval import evaluate_policy
from tether.pipelines.scoring import RewardFunction
from tether.rollout import DEFAULT_ENGINE, ENGINES, SamplingConfig, make_engine, policy_forward
from tether.runlog import MetricsLogger
from tether.worlds import resolve_gold

LOSSES = ("sigmoid", "ipo", "hinge")


@dataclass
class DPOConfig(PairFiles):
    """Direct preference optimisation of a policy on labelled pairs, with a frozen reference policy."""
    policy: str = opt("", "causal-LM directory of the initial policy (normally the SFT model); also the reference")
    out: str = opt("", "run directory; the policy is written to OUT/model")
    ref_policy: str | None = opt(None, "frozen reference policy (default: --policy; with LoRA the adapter-disabled policy)")
    beta: float = opt(0.1, "beta: the KL coefficient of the implicit reward beta*log(pi/pi_ref); small beta lets the policy drift far", gt=0)
    loss: str = opt("sigmoid", "sigmoid (DPO, Rafailov et al. 2023), ipo (Azar et al. 2023) or hinge (SLiC, Zhao et al. 2023)", choices=LOSSES)
    label_smoothing: float = opt(0.0, "sigmoid only: the assumed share of flipped labels (conservative DPO)", ge=0, lt=0.5)
    epochs: int = opt(1, "passes over the training pairs", ge=1)
    batch_size: int = opt(32, "pairs per optimiser step", ge=1)
    lr: float = opt(1e-6, "peak learning rate (AdamW); 1e-6 as TRL's DPOConfig for 0.1-1B models (the sweep passes its PPO runs' lr)", gt=0)
    warmup_steps: int = opt(10, "linear warm-up steps", ge=0)
    max_grad_norm: float = opt(1.0, "clip the gradient's global norm to this", gt=0)
    lora_r: int = opt(0, "LoRA rank for the policy (0: full fine-tuning); the reference is the adapter-disabled model", ge=0)
    lora_alpha: int = opt(16, "LoRA alpha", ge=1)
    eval_every: int = opt(0, "steps between held-out evaluations of the DPO metrics (0: only at the end)", ge=0)
    reward_model: str | None = opt(None, "reward-model directory: evaluate the final policy as PPO's (proxy reward, KL, "
                                         "detectors) to put it on the sweep's frontier")
    gold: str | None = opt(None, "gold utility of a built-in world for that evaluation (assistant)")
    eval_prompts: str | None = opt(None, "prompts of that evaluation (needed with --reward-model)")
    eval_samples: int = opt(512, "responses sampled by that evaluation", ge=1)
    max_new_tokens: int = opt(48, "longest sampled response in tokens", ge=1)
    temperature: float = opt(1.0, "sampling temperature of the evaluation; its KL uses logits / temperature", gt=0)
    rollout_engine: str = opt(DEFAULT_ENGINE, f"what samples the evaluation: {' or '.join(ENGINES)}")
    seed: int = opt(0, "random seed (data order, split, evaluation samples)")
    device: str = opt("auto", "cpu, cuda, cuda:N or auto")
    dtype: str = frozen_dtype_opt("the frozen models (reference policy, --reward-model, a reward-model gold)",
                                  "; the trained policy is always float32, and with LoRA so is its reference")
    threads: int = opt(0, "torch CPU threads (0: torch's default)", ge=0)

    def __post_init__(self):
        check_fields(self)
        for name in ("policy", "data", "out"):
            require(bool(getattr(self, name)), name, f"--{name.replace('_', '-')} is required")
        require(self.label_smoothing == 0 or self.loss == "sigmoid", "label_smoothing", "only the sigmoid loss has it")
        require(not self.reward_model or bool(self.eval_prompts), "eval_prompts", "the evaluation with --reward-model needs prompts")
        resolve_gold(self.gold)


def pair_loss(cfg: DPOConfig, chosen, rejected, ref_chosen, ref_rejected) -> torch.Tensor:
    """The configured loss of sequence log-probs (B,) each."""
    if cfg.loss == "sigmoid":
        return dpo_loss(chosen, rejected, ref_chosen, ref_rejected, cfg.beta, cfg.label_smoothing)
    return (ipo_loss if cfg.loss == "ipo" else dpo_hinge_loss)(chosen, rejected, ref_chosen, ref_rejected, cfg.beta)


def sequence_logprobs(model, sequences: list[list[int]], prompt_lens: list[int], pad_id: int) -> torch.Tensor:
    """log π(y|x) = Σ_t log π(y_t | x, y_<t) over the response tokens only, for each prompt + response row.

    sequences: token lists (prompt then response); prompt_lens: where each response starts → (B,).
    Rows are right-padded; token t's log-prob is read from the logit at t − 1 (`token_logprobs`).
    """
    device = next(model.parameters()).device
    ids, attn = (t.to(device) for t in pad_right(sequences, pad_id))
    logp = token_logprobs(model(input_ids=ids, attention_mask=attn).logits, ids)  # (B, T − 1): token t + 1
    columns = torch.arange(1, ids.shape[1], device=device)
    starts = torch.tensor(prompt_lens, device=device).unsqueeze(1)
    response = (columns >= starts) & attn[:, 1:].bool()  # (B, T − 1): response tokens, no prompt, no padding
    return torch.where(response, logp, 0).sum(1)


def pair_logprobs(model, tokens, idx: list[int], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(log π(y_w|x), log π(y_l|x)), (B,) each, of the pairs `idx`: chosen and rejected in one forward."""
    seqs = [tokens.chosen_ids[i] for i in idx] + [tokens.rejected_ids[i] for i in idx]
    lens = [tokens.prompt_lens[i] for i in idx] * 2
    logps = sequence_logprobs(model, seqs, lens, pad_id)
    return logps[:len(idx)], logps[len(idx):]


def reference_model(policy, ref, lora: bool):
    """A context in which `policy`'s forward is the reference's: the adapter disabled with LoRA; else `ref` itself."""
    return policy.disable_adapter() if lora else torch.no_grad()


@torch.no_grad()
def all_pair_logprobs(model, tokens, batch_size: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(log π(y_w|x), log π(y_l|x)) of every pair, (N,) each, `batch_size` pairs per forward, no gradient
    (the reference's once before training; the policy's on the held-out pairs)."""
    chosen, rejected = [], []
    for i in range(0, len(tokens.chosen_ids), batch_size):
        c, r = pair_logprobs(model, tokens, list(range(i, min(i + batch_size, len(tokens.chosen_ids)))), pad_id)
        chosen.append(c)
        rejected.append(r)
    return torch.cat(chosen), torch.cat(rejected)


def dpo_metrics(cfg: DPOConfig, loss, chosen, rejected, ref_chosen, ref_rejected, prefix: str = "") -> dict:
    """TRL's DPO metrics: rewards/{chosen, rejected, accuracies, margins} (r̂ = β log π/π_ref), logps/{chosen, rejected}."""
    r_chosen, r_rejected = dpo_implicit_reward(chosen, ref_chosen, cfg.beta), dpo_implicit_reward(rejected, ref_rejected, cfg.beta)
    values = {"loss": loss, "rewards/chosen": r_chosen.mean(), "rewards/rejected": r_rejected.mean(),
              "rewards/accuracies": bradley_terry_accuracy(r_chosen, r_rejected),
              "rewards/margins": (r_chosen - r_rejected).mean(), "logps/chosen": chosen.mean(), "logps/rejected": rejected.mean()}
    return {prefix + k: float(v) for k, v in values.items()}


@torch.no_grad()
def held_out_metrics(cfg, policy, tokens, ref_logps, pad_id) -> dict:
    """The DPO metrics of the held-out pairs, eval/-prefixed."""
    policy.eval()
    chosen, rejected = all_pair_logprobs(policy, tokens, 2 * cfg.batch_size, pad_id)
    loss = pair_loss(cfg, chosen, rejected, *ref_logps)
    return dpo_metrics(cfg, loss, chosen, rejected, *ref_logps, prefix="eval/")


def held_out_pairs(cfg: DPOConfig, tokenizer) -> list:
    """The held-out pairs whose DPO metrics `run_dpo` reports (eval/…; the sweep's `dpo_margin`): the split that
    `read_pair_splits` draws first from random.Random(cfg.seed), as `run_dpo` draws it, less the pairs its length
    rule skipped. They depend on the pair files, the split and the seed, not on β."""
    _, held, _, held_tok = read_pair_splits(cfg, tokenizer, random.Random(cfg.seed))
    return [held[i] for i in held_tok.pair_indices] if held_tok else []


def run_dpo(cfg: DPOConfig) -> dict:
    """Train; write OUT/model, metrics.jsonl, eval.json (and eval_samples.jsonl with --reward-model); return eval.json."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    frozen = frozen_dtype(cfg.dtype, device)
    tokenizer = load_tokenizer(cfg.policy, field="policy")
    pad_id = tokenizer.pad_token_id
    rng = random.Random(cfg.seed)
    pairs, held, train_tok, held_tok = read_pair_splits(cfg, tokenizer, rng)
    eval_records = read_prompts(cfg.eval_prompts) if cfg.reward_model else None
    out = prepare_run_dir(cfg.out, cfg)
    set_seed(cfg.seed)
    policy = load_causal_lm(cfg.policy, device, field="policy")
    ref = None if cfg.lora_r else load_causal_lm(cfg.ref_policy or cfg.policy, device, field="ref_policy", dtype=frozen).requires_grad_(False)
    if cfg.lora_r:
        policy = apply_lora(policy, cfg.lora_r, cfg.lora_alpha, "CAUSAL_LM")
    ref_forward = policy if ref is None else ref
    with reference_model(policy, ref, bool(cfg.lora_r)):  # the reference's log-probs, once
        ref_train = all_pair_logprobs(ref_forward, train_tok, 2 * cfg.batch_size, pad_id)
        ref_held = all_pair_logprobs(ref_forward, held_tok, 2 * cfg.batch_size, pad_id) if held_tok else None
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    lengths = [len(c) + len(r) for c, r in zip(train_tok.chosen_ids, train_tok.rejected_ids)]
    total = -(-len(lengths) // cfg.batch_size) * cfg.epochs
    logger = MetricsLogger(out)
    step, metrics = 0, {}
    bar = tqdm(total=total, desc="dpo", unit="step", dynamic_ncols=True)
    for _ in range(cfg.epochs):
        for idx in length_bucketed_batches(lengths, cfg.batch_size, rng):
            policy.train()
            chosen, rejected = pair_logprobs(policy, train_tok, idx, pad_id)
            ref_chosen, ref_rejected = ref_train[0][idx], ref_train[1][idx]
            loss = pair_loss(cfg, chosen, rejected, ref_chosen, ref_rejected)
            check_finite(loss, step, "DPO loss")
            set_lr(optimizer, cosine_lr(step, total, cfg.warmup_steps, cfg.lr))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            step += 1
            bar.update(1)
            row = dpo_metrics(cfg, loss.detach(), chosen.detach(), rejected.detach(), ref_chosen, ref_rejected)
            row["memory/peak_gb"] = peak_memory_gb(device)
            if held_tok is not None and ((cfg.eval_every and step % cfg.eval_every == 0) or step == total):
                metrics = held_out_metrics(cfg, policy, held_tok, ref_held, pad_id)
                row.update(metrics)
            bar.set_postfix(loss=f"{row['loss']:.3f}", margin=f"{row['rewards/margins']:.2f}")
            logger.log(step, row)
    bar.close()
    policy.eval()
    result = {"steps_done": step, "n_train": len(pairs), "n_eval": len(held), **metrics}
    if cfg.reward_model:
        result |= evaluate_on_prompts(cfg, policy, ref, tokenizer, eval_records, device, frozen)
        write_jsonl_atomic(out / "eval_samples.jsonl", result.pop("samples"))
        logger.log(step, {f"eval/{k}": v for k, v in result.items() if isinstance(v, (int, float))})
    logger.close()
    save_pretrained_atomic(out / "model", policy.merge_and_unload() if cfg.lora_r else policy, tokenizer)
    write_json_atomic(out / "eval.json", result)
    return result


def evaluate_on_prompts(cfg: DPOConfig, policy, ref, tokenizer, records, device, frozen: torch.dtype) -> dict:
    """`evaluate_policy` of the trained policy: its samples, their KL to the reference, proxy and gold reward
    (the reward model and a reward-model gold with `frozen` weights)."""
    reward_fn = RewardFunction([cfg.reward_model], tokenizer, device, dtype=frozen)
    sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                              eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)

    def ref_logits(s, a, p):
        with reference_model(policy, ref, bool(cfg.lora_r)):
            return policy_forward(policy if ref is None else ref, s, a, p).float()

    return evaluate_policy(policy, ref_logits, reward_fn, tokenizer, records, cfg.eval_samples, sampling,
                           resolve_gold(cfg.gold, device=device, dtype=frozen), engine=make_engine(cfg.rollout_engine),
                           seed=cfg.seed)
