"""`tether ppo`: maximise r_φ(x, y) − β·KL(π_θ ‖ π_ref) with PPO (Ziegler et al. 2019; Ouyang et al. 2022),
or with the critic-free RLOO (Ahmadian et al. 2024) and GRPO (Shao et al. 2024): `--advantage rloo|grpo`.

One loop, read top to bottom: rollout → score → per-token rewards → GAE → PPO
epochs over shuffled minibatches → log → evaluate → checkpoint. The math is in
`tether.algos`; implementation details follow Huang et al. 2024 ("The N+
implementation details of RLHF with PPO"): dropout off, log-probs from
logits / temperature, score at the last real response token, value head
initialised from the reward model, a fresh shuffle per PPO epoch, an explicit
penalty for responses without EOS. RLOO and GRPO are a choice of advantage estimator
in the same loop, not a second trainer: `group_size` samples per prompt, no value
function, the sequence's return compared with the other samples of its prompt
(`tether.algos.rloo_advantages`, `grpo_advantages`). The rollout engine is the one `--rollout-engine`
names (`tether.rollout.ENGINES`); the KL penalty is one object per estimator
(`tether.algos.kl_penalty`); the actor–critic is `tether.models.ActorCritic`.
"""

import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from tether.algos import (AdaptiveKLController, FixedKLController, entropy_from_logits, explained_variance, gae,
                          grpo_advantages, masked_mean, masked_whiten, per_token_rewards, ppo_policy_loss,
                          ppo_value_loss, rloo_advantages)
from tether.algos.kl_penalty import KL_IN_LOSS, KL_PENALTIES, KL_PLACEMENTS, kl_penalty
from tether.algos.stats import LOSS_AGGREGATIONS, masked_whiten_with_scale
from tether.config import check_fields, opt, require
from tether.data import encode_prompt, read_prompts
from tether.io import atomic_open, write_json_atomic, write_jsonl_atomic
from tether.distributed import (SINGLE, full_state_dict, gather_objects, init_replica, load_training_state,
                                load_whole, mean_across, no_sync, shutdown, sum_across, training_state, unsharded,
                                unwrap, whole_copy, wrap)
from tether.errors import InputError
from tether.models import ActorCritic, load_tokenizer, save_pretrained_atomic, set_seed
from tether.pipelines.common import (autocast, check_finite, decode_responses, frozen_dtype, frozen_dtype_opt,
                                     peak_memory_gb, prepare_run_dir, set_lr)
from tether.pipelines.policy_eval import evaluate_policy
from tether.pipelines.scoring import RewardFunction
from tether.rollout import (DEFAULT_ENGINE, ENGINES, SamplingConfig, length_sorted_chunks, make_engine, no_eos_penalty,
                            over_length_chunks, response_logits, response_logprobs, trim_padding)
from tether.runlog import MetricsLogger, truncate_jsonl
from tether.worlds import resolve_gold

ADVANTAGES = ("gae", "rloo", "grpo")

# KL per response token (nats) that, reached within the first KL_RUNAWAY_ITERATIONS iterations, means the policy is
# running away from the reference: e.g. a 135M Llama at the built-in world's lr 2e-4 reached 65–85 nats per response
# of ~8 tokens (~10 per token) in 5 iterations (DESIGN §7), a learning rate tuned for a tiny model used on a real one.
KL_RUNAWAY_PER_TOKEN = 1.0
KL_RUNAWAY_ITERATIONS = 10
REPLICA_SEED_STRIDE = 7919  # replica k samples and orders its prompts from seed + 7919·k (a prime): its own stream, rank 0 the single-process one


@dataclass
class PPOConfig:
    """PPO against a reward model with a per-token KL penalty to a frozen reference policy."""
    policy: str = opt("", "causal-LM directory of the initial policy (normally the SFT model)")
    reward_model: str = opt("", "reward-model directory (sequence classification, one label)")
    prompts: str = opt("", "training prompts JSONL")
    out: str = opt("", "run directory")
    eval_prompts: str | None = opt(None, "held-out prompts for periodic evaluation (default: the training prompts)")
    ref_policy: str | None = opt(None, "frozen reference policy (default: --policy; with LoRA the adapter-disabled policy)")
    ensemble: list[str] = opt([], "extra reward models; the score is mean - uncertainty_coef * std over all (Coste et al. 2023)")
    uncertainty_coef: float = opt(1.0, "lambda in mean - lambda * std over the reward-model ensemble (no effect without --ensemble)", ge=0)
    gold: str | None = opt(None, "gold to log beside the proxy reward: a built-in world's name (assistant) or a reward-model directory")
    steps: int = opt(100, "PPO iterations (one rollout batch each)", ge=1)
    batch_size: int = opt(64, "rollouts per iteration", ge=1)
    minibatch_size: int = opt(64, "rollouts per optimiser step", ge=1)
    micro_batch_size: int = opt(32, "rollouts per forward/backward (gradient accumulation inside a minibatch) and per chunk of the scoring pass", ge=1)
    ppo_epochs: int = opt(2, "passes over each rollout batch, each with a fresh shuffle", ge=1)
    lr: float = opt(3e-6, "learning rate (Adam); 3e-6 as in TRL's PPO runs of Pythia-1B on TL;DR (OpenRLHF's default: 1e-6 for the actor, 9e-6 for the critic; the built-in world's tiny model: 2e-4)", gt=0)
    adam_eps: float = opt(1e-5, "Adam epsilon (1e-5, as in CleanRL and OpenAI's baselines, not torch's 1e-8)", gt=0)
    anneal_lr: bool = opt(False, "decay the learning rate linearly to 0 over the run (CleanRL's anneal_lr): less drift at large beta, slower hacking at small beta")
    beta: float = opt(0.05, "KL coefficient (initial value when adaptive_kl)", ge=0)
    adaptive_kl: bool = opt(False, "adapt beta towards kl_target (Ziegler et al. 2019)")
    kl_target: float = opt(1.0, "target KL per sequence for the adaptive controller", gt=0)
    kl_horizon: int = opt(10000, "horizon of the adaptive controller, in rollouts", ge=1)
    kl_estimator: str = opt("exact", "per-token KL: k1 = log p - log p_ref or k3 = (r - 1) - log r of the sampled token (in the reward); "
                                  "exact = the KL over the whole vocabulary at each state (in the reward for later states, its own gradient in the loss): far less noise, so a large beta holds the policy near the reference", choices=tuple(KL_PENALTIES))
    kl_placement: str = opt("reward", "where the KL penalty acts: reward (r_t = -beta*kl_t, any estimator) or loss "
                                      "(beta*mean k3 of the current policy in the loss, GRPO's; k3 only); beta means the same in both", choices=KL_PLACEMENTS)
    advantage: str = opt("gae", "advantage estimator: gae (PPO, with a value function), rloo (leave-one-out baseline over "
                                "group_size samples per prompt, Ahmadian et al. 2024) or grpo (group-normalised, Shao et al. 2024); "
                                "rloo and grpo keep no value function", choices=ADVANTAGES)
    group_size: int = opt(1, "samples per prompt (k): each iteration takes batch_size/k prompts, each sampled k times; "
                             "rloo and grpo need k >= 2", ge=1)
    grpo_scale: bool = opt(True, "grpo: divide by the group's std (Shao et al. 2024); false: only centre it (Dr. GRPO, Liu et al. 2025)")
    loss_aggregation: str = opt("token_mean", "how the policy loss averages tokens: token_mean (every token one vote), "
                                              "seq_mean (every response one vote, GRPO) or constant (sum / (rows * max_new_tokens), Dr. GRPO)", choices=LOSS_AGGREGATIONS)
    gamma: float = opt(1.0, "discount", ge=0, le=1)
    lam: float = opt(0.95, "GAE lambda", ge=0, le=1)
    clip_eps: float = opt(0.2, "policy ratio clip", gt=0)
    clip_value: float = opt(0.2, "value clip range", gt=0)
    vf_coef: float = opt(0.1, "value loss weight", ge=0)
    max_grad_norm: float = opt(1.0, "gradient clipping norm", gt=0)
    whiten_advantages: bool = opt(True, "whiten advantages over the batch's response tokens (gae and rloo; grpo's are normalised per group)")
    whiten_rewards: bool = opt(False, "whiten per-token rewards before GAE")
    score_clip: float | None = opt(None, "clip reward-model scores to [-c, c]", gt=0)
    missing_eos_penalty: float | None = opt(-1.0, "score given to a response that hits max_new_tokens without EOS (None: keep the model's score)")
    temperature: float = opt(1.0, "sampling temperature; log-probs use logits / temperature", gt=0)
    max_new_tokens: int = opt(48, "longest response in tokens", ge=1)
    rollout_engine: str = opt(DEFAULT_ENGINE, f"what samples the rollouts and evaluations: {' or '.join(ENGINES)} (tether.rollout.ENGINES)")
    value_model: str = opt("critic", "critic: a separate model initialised from the reward model; shared: a value head on the policy trunk (cheaper, but value-loss gradients move the policy)", choices=("critic", "shared"))
    lora_r: int = opt(0, "LoRA rank for the policy (0: full fine-tuning); the reference is the adapter-disabled model", ge=0)
    lora_alpha: int = opt(16, "LoRA alpha", ge=1)
    eval_every: int = opt(10, "iterations between evaluations on the held-out prompts (0: only at the end)", ge=0)
    eval_samples: int = opt(512, "held-out responses per evaluation (the KL estimate is noisy below ~500)", ge=1)
    samples_every: int = opt(10, "iterations between rows in samples.jsonl (0: none)", ge=0)
    save_every: int = opt(25, "iterations between checkpoints (0: none)", ge=0)
    resume: bool = opt(False, "continue from OUT/checkpoints/last.pt")
    early_stop_benign_refusal: float | None = opt(None, "stop when the held-out benign refusal rate exceeds this (keeps the last good policy)")
    early_stop_repetition: float | None = opt(None, "stop when the held-out repetition rate exceeds this")
    early_stop_gold_agreement_drop: float | None = opt(None, "stop when the reward model's agreement with gold on the policy's own samples falls this far below its value on the initial policy")
    seed: int = opt(0, "random seed")
    device: str = opt("auto", "cpu, cuda, cuda:N or auto")
    bf16: bool = opt(False, "bfloat16 autocast for the PPO loss forward passes (GPUs with bf16): the policy's and critic's weights, gradients and optimiser state stay float32 (the master copy)")
    dtype: str = frozen_dtype_opt("the frozen models (reference policy, reward models, a reward-model gold)",
                                  "; the trained policy and critic are always float32 (see --bf16)")
    gradient_checkpointing: bool = opt(False, "recompute the policy's and critic's activations in the backward pass instead of keeping them (less memory, ~1/3 more compute; same gradients)")
    threads: int = opt(0, "torch CPU threads (0: torch's default)", ge=0)
    fsdp: bool = opt(False, "with several processes: shard weights, gradients and optimiser state over them (FSDP2) instead of replicating them (DDP)")
    skip_invalid: bool = opt(False, "skip invalid rows of --prompts and --eval-prompts and report them by reason, instead of stopping at the first")

    def __post_init__(self):
        check_fields(self)
        for name in ("policy", "reward_model", "prompts", "out"):
            require(bool(getattr(self, name)), name, f"--{name.replace('_', '-')} is required")
        require(self.kl_placement == "reward" or self.kl_estimator in KL_IN_LOSS, "kl_estimator",
                f"the KL in the loss is k3 (GRPO's); {self.kl_estimator} there has no useful gradient")
        require(self.advantage == "gae" or self.group_size >= 2, "group_size",
                f"{self.advantage} compares samples of one prompt: needs group_size >= 2, got {self.group_size}")
        require(self.batch_size % self.group_size == 0, "group_size",
                f"batch_size {self.batch_size} is not a multiple of group_size {self.group_size}")
        require(not (self.kl_estimator == "exact" and self.whiten_rewards), "whiten_rewards",
                "whitened rewards lose the scale that the exact KL's loss term is matched to; use one or the other")
        require(self.batch_size % self.minibatch_size == 0, "minibatch_size",
                f"batch_size {self.batch_size} is not a multiple of minibatch_size {self.minibatch_size}")
        require(self.minibatch_size % self.micro_batch_size == 0, "micro_batch_size",
                f"minibatch_size {self.minibatch_size} is not a multiple of micro_batch_size {self.micro_batch_size}")
        require(not (self.fsdp and self.lora_r), "fsdp", "LoRA keeps one copy of small adapters; use it without --fsdp")
        resolve_gold(self.gold)  # InputError naming the known golds


class PromptStream:
    """Endless shuffled passes over the prompts; its state (epoch order, position, RNG) is checkpointed."""

    def __init__(self, n: int, seed: int):
        self.n, self.rng = n, random.Random(seed)
        self.order, self.pos = [], 0

    def take(self, k: int) -> list[int]:
        out = []
        while len(out) < k:
            if self.pos == len(self.order):
                self.order, self.pos = list(range(self.n)), 0
                self.rng.shuffle(self.order)
            out.append(self.order[self.pos])
            self.pos += 1
        return out

    def state_dict(self):
        return {"order": self.order, "pos": self.pos, "rng": self.rng.getstate()}

    def load_state_dict(self, state):
        self.order, self.pos = state["order"], state["pos"]
        self.rng.setstate(state["rng"])


def rng_state(generator, stream) -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "generator": generator.get_state(), "stream": stream.state_dict()}


def save_checkpoint(path: Path, step, model, optimizer, kl_ctl, generator, stream, early_stop_state, replica) -> None:
    """Atomic (write, fsync, rename): everything needed for a resumed run to equal an uninterrupted one.

    Models, optimiser and KL controller are the same on every replica (under FSDP, gathered whole to
    rank 0); RNG states and prompt positions are per replica, gathered to rank 0, which alone writes.
    """
    rng_states = gather_objects(rng_state(generator, stream), replica)
    model_state, optimizer_state = training_state(model, optimizer)
    if not replica.is_main:
        return
    state = {"step": step, "model": {k: v for k, v in model_state.items() if not k.startswith("ref.")},
             "optimizer": optimizer_state, "kl_ctl": kl_ctl.state_dict(),
             "rng": rng_states, "early_stop": early_stop_state}
    with atomic_open(path, "wb") as f:
        torch.save(state, f)


def load_checkpoint(path: Path, model, optimizer, kl_ctl, generator, stream, replica) -> tuple[int, dict]:
    if not path.is_file():
        raise InputError("no checkpoint to resume from", path=path, field="resume")
    state = torch.load(path, weights_only=False, map_location="cpu")
    if len(state["rng"]) != replica.world_size:
        raise InputError(f"checkpoint was written by {len(state['rng'])} process(es); resume with as many, "
                         f"not {replica.world_size}", path=path, field="resume")
    load_training_state(model, optimizer, state["model"], state["optimizer"])
    kl_ctl.load_state_dict(state["kl_ctl"])
    rng = state["rng"][replica.rank]
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    generator.set_state(rng["generator"])
    stream.load_state_dict(rng["stream"])
    return state["step"], state["early_stop"]


@dataclass
class Experience:
    """One scored rollout batch: what PPO's update epochs and the metrics read.

    B rollouts, P the prompt width (prompts LEFT-padded), R the response width, V the vocabulary.
    Response-aligned tensors (B, R) hold response token j in column j. Where `response_mask` is 0
    (the padding after EOS) `kl`, `rewards`, `advantages` and `returns` are 0; the others hold
    numbers there that every reader masks out.

    sequences: (B, P + R) prompt then response token ids; attention_mask (B, P + R) 1 on real tokens.
    prompt_len: P, the column where the responses start.
    response_mask: (B, R) float, 1 on response tokens through EOS.
    old_logprobs, ref_logprobs: (B, R) log π_old(y_j), log π_ref(y_j) under logits / temperature.
    old_values: (B, R) V(state before response token j), from `ActorCritic` (0 without a value function).
    entropy: (B, R) entropy of π_old at each response state.
    Rows k·g … k·g + k − 1 answer the same prompt (k = group_size).
    raw_scores: (B,) the reward model's score; scores: (B,) after the no-EOS penalty and clipping.
    score_std: (B,) the reward-model ensemble's std (0 for one model).
    kl: (B, R) the KL penalty's per-token KL (its estimator's).
    rewards: (B, R) −β·(KL part of the reward) per token, the score at the last real token.
    advantages, returns: (B, R) GAE's; for rloo/grpo the sequence's advantage and return Σ_t rewards_t on each of
        its tokens. Advantages whitened when configured (not grpo's).
    advantage_scale: () what whitening divided the advantages by (1 without whitening).
    beta: the KL coefficient β this batch was scored with.
    ref_dist: (B, R, V) the reference's response distributions (logits / temperature), kept by the
        exact KL penalty within its cache budget; None otherwise.
    """
    sequences: torch.Tensor
    attention_mask: torch.Tensor
    prompt_len: int
    response_mask: torch.Tensor
    old_logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    old_values: torch.Tensor
    entropy: torch.Tensor
    raw_scores: torch.Tensor
    scores: torch.Tensor
    score_std: torch.Tensor
    kl: torch.Tensor
    rewards: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    advantage_scale: torch.Tensor
    beta: float
    ref_dist: torch.Tensor | None


@torch.no_grad()
def make_experience(model, reward_fn, rollout, prompts, texts, beta, cfg) -> Experience:
    """Score a rollout: old log-probs and values (teacher forcing), reference log-probs, rewards, advantages.

    Everything is over response tokens only: the response mask is 1 through EOS, so the prompt
    and the padding after EOS never touch KL, rewards, advantages or losses. The
    forward passes run on length-sorted chunks of micro_batch_size rollouts, each cut
    to the columns it needs (`over_length_chunks`), which also bounds their memory.
    The KL penalty (`cfg.kl_estimator`, `cfg.kl_placement`) decides the KL, its part in the reward and what it keeps.
    """
    penalty = kl_penalty(cfg.kl_estimator, cfg.kl_placement)
    seqs, attn, mask = rollout.sequences, rollout.attention_mask, rollout.response_mask.float()
    P = rollout.prompt_ids.shape[1]
    ref_dist_bytes = len(seqs) * mask.shape[1] * model.policy.config.vocab_size * 4

    def teacher_forced(s, a, p, rows):
        logits, values = model(s, a, p)
        ref_logits = model.ref_logits(s, a, p)
        dist, ref_dist = response_logits(logits, s, p, cfg.temperature), response_logits(ref_logits, s, p, cfg.temperature)
        score, score_std = reward_fn(s, a, [prompts[i] for i in rows], [texts[i] for i in rows])
        return {"old_logp": response_logprobs(logits, s, p, cfg.temperature), "old_values": values,
                "ref_logp": response_logprobs(ref_logits, s, p, cfg.temperature), "entropy": entropy_from_logits(dist),
                "raw_scores": score, "score_std": score_std} | penalty.scoring_outputs(dist, ref_dist, ref_dist_bytes)

    tf = over_length_chunks(teacher_forced, seqs, attn, P, cfg.micro_batch_size)
    scores = no_eos_penalty(tf["raw_scores"], rollout.ended_with_eos, cfg.missing_eos_penalty)
    if cfg.score_clip is not None:
        scores = scores.clamp(-cfg.score_clip, cfg.score_clip)
    kl, kl_in_reward = penalty.token_kl(tf["old_logp"], tf["ref_logp"], tf, mask)
    rewards = per_token_rewards(scores, kl_in_reward, beta, mask)  # −β·KL per token, the score at the last real token
    if cfg.whiten_rewards:
        rewards = masked_whiten(rewards, mask, shift_mean=False)
    advantages, returns = estimate_advantages(rewards, tf["old_values"], mask, cfg)
    advantage_scale = torch.ones(())
    if cfg.whiten_advantages and cfg.advantage != "grpo":
        advantages, advantage_scale = masked_whiten_with_scale(advantages, mask)
    return Experience(sequences=seqs, attention_mask=attn, prompt_len=P, response_mask=mask,
                      old_logprobs=tf["old_logp"], ref_logprobs=tf["ref_logp"], old_values=tf["old_values"],
                      entropy=tf["entropy"], raw_scores=tf["raw_scores"], scores=scores, score_std=tf["score_std"],
                      kl=kl, rewards=rewards, advantages=advantages, returns=returns, advantage_scale=advantage_scale,
                      beta=beta, ref_dist=tf.get("ref_dist"))


def estimate_advantages(rewards, values, mask, cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns), (B, R) each, by `cfg.advantage`: GAE over the tokens, or — rloo, grpo — the sequence's
    return R = Σ_t r_t (score − β·its KL in the reward; γ = 1 as both papers) against the other samples of its
    prompt, the same advantage on each of its response tokens."""
    if cfg.advantage == "gae":
        return gae(rewards, values, mask, cfg.gamma, cfg.lam)
    returns = rewards.sum(1)  # (B,)
    if cfg.advantage == "rloo":
        advantages = rloo_advantages(returns, cfg.group_size)
    else:
        advantages = grpo_advantages(returns, cfg.group_size, scale=cfg.grpo_scale)
    return advantages.unsqueeze(1) * mask, returns.unsqueeze(1) * mask


def group_prompts(stream: "PromptStream", n_rollouts: int, group_size: int) -> list[int]:
    """n_rollouts/k prompts from the stream, each listed k times in a row: [p0, p0, p1, p1, …] for k = 2."""
    return [i for i in stream.take(n_rollouts // group_size) for _ in range(group_size)]


def epoch_minibatches(batch_size: int, minibatch_size: int, generator) -> list[torch.Tensor]:
    """A fresh random permutation of the batch, cut into minibatches (called once per PPO epoch)."""
    perm = torch.randperm(batch_size, generator=generator, device=generator.device)
    return list(perm.view(batch_size // minibatch_size, minibatch_size))


def minibatch_loss(model, exp: Experience, idx: torch.Tensor, cfg) -> tuple[torch.Tensor, dict]:
    """PPO loss of the rows `idx`: clipped surrogate (`cfg.loss_aggregation` over `idx`) + vf_coef · clipped value
    loss (token mean; gae only),
    + the KL penalty's loss term (the exact KL's: β·KL / advantage scale). The rows are cut to the columns they need."""
    seqs, attn, P, R = trim_padding(exp.sequences[idx], exp.attention_mask[idx], exp.prompt_len)
    rows = lambda x: x[idx, :R]  # response-aligned (B, R, …) tensors of these rows, trimmed alike
    mask = rows(exp.response_mask)
    logits, values = model(seqs, attn, P)
    logp = response_logprobs(logits, seqs, P, cfg.temperature)
    pg_loss, pg_stats = ppo_policy_loss(logp, rows(exp.old_logprobs), rows(exp.advantages), mask, cfg.clip_eps,
                                        cfg.loss_aggregation, cfg.max_new_tokens)
    loss, value_parts = pg_loss, {}
    if cfg.advantage == "gae":  # rloo and grpo keep no value function
        vf_loss, vf_stats = ppo_value_loss(values, rows(exp.old_values), rows(exp.returns), mask, cfg.clip_value)
        loss, value_parts = loss + cfg.vf_coef * vf_loss, {"vf": vf_loss, **vf_stats}
    dist = lambda: response_logits(logits, seqs, P, cfg.temperature)
    ref_dist = lambda: (rows(exp.ref_dist) if exp.ref_dist is not None  # cached by the scoring pass, else recomputed
                        else response_logits(unwrap(model).ref_logits(seqs, attn, P), seqs, P, cfg.temperature))
    kl_loss, kl_parts = kl_penalty(cfg.kl_estimator, cfg.kl_placement).loss_term(
        logp, rows(exp.ref_logprobs), dist, ref_dist, mask, exp.beta, exp.advantage_scale)
    return loss + kl_loss, {"pg": pg_loss, **pg_stats, **value_parts, **kl_parts}


def ppo_update(model, optimizer, exp: Experience, cfg, generator, step: int, replica=SINGLE,
               kept: str | None = None) -> dict:
    """PPO epochs, each over a fresh shuffle; gradient accumulation over micro-batches; mean stats.

    Each replica holds batch_size/W rollouts and takes minibatch_size/W of them per
    optimiser step. Every micro-batch's token-mean loss is weighted by its share of the
    global minibatch's response tokens, so the gradient is the global token mean (with
    loss_aggregation seq_mean or constant, by its share of the rows, whose mean those are). A
    minibatch is cut into micro-batches of similar length (the gradient is their sum,
    whatever the order), so each pads little.
    """
    model.train()
    stats: dict[str, list[float]] = {}
    local_batch, local_mb = cfg.batch_size // replica.world_size, cfg.minibatch_size // replica.world_size
    n_micro = local_mb // cfg.micro_batch_size
    params = unwrap(model).trainable_parameters()
    lengths = exp.attention_mask.sum(1)
    for _ in range(cfg.ppo_epochs):
        for mb in epoch_minibatches(local_batch, local_mb, generator):
            optimizer.zero_grad(set_to_none=True)
            units = (lambda rows: exp.response_mask[rows].sum()) if cfg.loss_aggregation == "token_mean" else len
            global_units = sum_across(float(units(mb)), replica)
            for k, micro in enumerate(length_sorted_chunks(mb, lengths, cfg.micro_batch_size)):
                with no_sync(model, active=k < n_micro - 1), autocast(exp.sequences.device, cfg.bf16):
                    loss, parts = minibatch_loss(model, exp, micro, cfg)
                    loss = loss * units(micro) * replica.world_size / global_units
                    check_finite(loss, step, "PPO loss", kept)
                    loss.backward()
                for key, value in parts.items():
                    stats.setdefault(key, []).append(value.item())
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)  # the global norm, of the shards under FSDP
            optimizer.step()
    return {k: float(np.mean(v)) for k, v in stats.items()}


def step_metrics(exp: Experience, stats: dict, rollout) -> dict:
    """One iteration's metrics under TRL's names (the value function's only where there is one)."""
    mask, kl_seq, beta = exp.response_mask, exp.kl.sum(1), exp.beta
    value_metrics = lambda: {"loss/value": stats["vf"], "val/clipfrac": stats["vf_clipfrac"],
                             "val/explained_variance": explained_variance(exp.old_values, exp.returns, mask).item()}
    return {
        "objective/kl": kl_seq.mean().item(), "objective/entropy": (exp.entropy * mask).sum(1).mean().item(),
        "objective/scores": exp.raw_scores.mean().item(),
        "objective/rlhf_reward": (exp.scores - beta * kl_seq).mean().item(),
        "objective/non_score_reward": (-beta * kl_seq).mean().item(), "objective/beta": beta,
        "objective/score_std": exp.score_std.mean().item(),
        "policy/clipfrac": stats["clipfrac"], "policy/approxkl": stats["approxkl"],
        "policy/entropy": masked_mean(exp.entropy, mask).item(),
        "loss/policy": stats["pg"], "val/ratio": stats["ratio_mean"],
        "val/eos_rate": rollout.ended_with_eos.float().mean().item(), "val/mean_length": mask.sum(1).mean().item(),
    } | ({"loss/kl": stats["kl"]} if "kl" in stats else {}) | (value_metrics() if "vf" in stats else {})


def eval_metrics(ev: dict) -> dict:
    """An evaluation's numbers as metrics rows carry them: eval/<name>."""
    return {f"eval/{k}": v for k, v in ev.items() if isinstance(v, (int, float))}


def early_stopping(cfg: PPOConfig) -> bool:
    return any(x is not None for x in (cfg.early_stop_benign_refusal, cfg.early_stop_repetition,
                                       cfg.early_stop_gold_agreement_drop))


def early_stop_reason(cfg: PPOConfig, ev: dict, first_agreement: float | None) -> str | None:
    """The first configured detector that fires on an evaluation, as a sentence; None if none does."""
    if cfg.early_stop_benign_refusal is not None and (ev.get("benign_refusal_rate") or 0) > cfg.early_stop_benign_refusal:
        return f"benign refusal rate {ev['benign_refusal_rate']:.2f} > {cfg.early_stop_benign_refusal}"
    if cfg.early_stop_repetition is not None and ev["repetition_rate"] > cfg.early_stop_repetition:
        return f"repetition rate {ev['repetition_rate']:.2f} > {cfg.early_stop_repetition}"
    agreement = ev.get("rm_gold_agreement")
    if cfg.early_stop_gold_agreement_drop is not None and agreement is not None and first_agreement is not None \
            and first_agreement - agreement > cfg.early_stop_gold_agreement_drop:
        return f"reward-model/gold agreement fell from {first_agreement:.2f} to {agreement:.2f}"
    return None


def check_split(cfg: PPOConfig, replica) -> None:
    """Each replica holds batch_size/W rollouts and minibatch_size/W per step, whole micro-batches of them."""
    w = replica.world_size
    require(cfg.batch_size % w == 0 and cfg.minibatch_size % w == 0, "batch_size",
            f"batch_size {cfg.batch_size} and minibatch_size {cfg.minibatch_size} must divide over {w} processes")
    require((cfg.batch_size // w) % cfg.group_size == 0, "group_size",
            f"batch_size/processes = {cfg.batch_size // w} is not a multiple of group_size {cfg.group_size}")
    require((cfg.minibatch_size // w) % cfg.micro_batch_size == 0, "micro_batch_size",
            f"minibatch_size/processes = {cfg.minibatch_size // w} is not a multiple of micro_batch_size {cfg.micro_batch_size}")


def kl_runaway_warning(iteration: int, kl: float, mean_length: float, lr: float, beta: float) -> str | None:
    """One line when the mean KL per response token, kl / mean_length, exceeds KL_RUNAWAY_PER_TOKEN within the
    first KL_RUNAWAY_ITERATIONS iterations (`iteration` counts from 1); None otherwise."""
    per_token = kl / max(mean_length, 1.0)
    if iteration > KL_RUNAWAY_ITERATIONS or per_token <= KL_RUNAWAY_PER_TOKEN:
        return None
    return (f"ppo: warning: KL to the reference is {per_token:.2f} nats per token ({kl:.1f} per response of "
            f"{mean_length:.1f} tokens) after {iteration} iteration(s) at lr {lr:g}, beta {beta:g}: the policy is "
            f"running away from the reference; for a real model try a smaller --lr (1e-6 to 3e-6) or a larger --beta")


def write_samples(samples_file, step: int, prompts, texts, scores: torch.Tensor, n: int = 4) -> None:
    """The first `n` (prompt, response, score) rows of an iteration, appended to samples.jsonl."""
    for p, r, score in list(zip(prompts, texts, scores.tolist()))[:n]:
        samples_file.write(json.dumps({"step": step, "prompt": p, "response": r, "score": score}) + "\n")
    samples_file.flush()


def run_ppo(cfg: PPOConfig) -> dict:
    """Train; write OUT/model, metrics.jsonl, samples.jsonl, eval.json and checkpoints; return the final evaluation.
    Resuming a finished run (one with eval.json) changes nothing and returns its evaluation."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    engine = make_engine(cfg.rollout_engine)
    replica = init_replica(cfg.device)
    device = replica.device
    check_split(cfg, replica)
    tokenizer = load_tokenizer(cfg.policy, field="policy")
    prompts = read_prompts(cfg.prompts, skip_invalid=cfg.skip_invalid)
    eval_prompts = read_prompts(cfg.eval_prompts, skip_invalid=cfg.skip_invalid) if cfg.eval_prompts else prompts
    prompt_ids = [encode_prompt(tokenizer, p.prompt) for p in prompts]
    out = prepare_run_dir(cfg.out, cfg) if replica.is_main else Path(cfg.out)
    if cfg.resume and (out / "eval.json").is_file():  # settings checked above: the same run, already done
        print(f"ppo: {out} finished earlier (eval.json); nothing to resume", file=sys.stderr)
        shutdown(replica)
        return json.loads((out / "eval.json").read_text(encoding="utf-8"))
    set_seed(cfg.seed)
    frozen = frozen_dtype(cfg.dtype, device)
    reward_fn = RewardFunction([cfg.reward_model, *cfg.ensemble], tokenizer, device, cfg.uncertainty_coef, dtype=frozen)
    value_model = cfg.value_model if cfg.advantage == "gae" else "none"
    model = ActorCritic.load(cfg.policy, reward_fn.model, device, ref_dir=cfg.ref_policy, value_model=value_model,
                             lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha, ref_dtype=frozen)
    if cfg.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    # FSDP shards what is trained (policy, critic); the frozen reference stays whole on every replica (and the
    # reward models, outside `model`): no gradients or optimiser state, bf16 on a GPU (--dtype), no collectives.
    ddp_model = wrap(model, replica, cfg.fsdp, replicated=(model.ref,) if model.ref is not None else ())
    gold = resolve_gold(cfg.gold, device=device, dtype=frozen)
    optimizer = torch.optim.Adam(model.trainable_parameters(), lr=cfg.lr, eps=cfg.adam_eps, fused=True)
    kl_ctl = AdaptiveKLController(cfg.beta, cfg.kl_target, cfg.kl_horizon) if cfg.adaptive_kl else FixedKLController(cfg.beta)
    sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                              eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    replica_seed = cfg.seed + REPLICA_SEED_STRIDE * replica.rank
    generator = torch.Generator(device=device).manual_seed(replica_seed)
    stream = PromptStream(len(prompts), replica_seed)
    local_batch = cfg.batch_size // replica.world_size
    ckpt_path = out / "checkpoints" / "last.pt"
    start, early = 0, {"first_agreement": None, "good_state": None, "stopped": None}
    if cfg.resume:
        start, early = load_checkpoint(ckpt_path, model, optimizer, kl_ctl, generator, stream, replica)
    logger = MetricsLogger(out, enabled=replica.is_main, resume_from_step=start if cfg.resume else None)
    if cfg.resume and replica.is_main:
        truncate_jsonl(out / "samples.jsonl", start)
    samples_file = (out / "samples.jsonl").open("a" if cfg.resume else "w", encoding="utf-8") if replica.is_main else None
    # Sampling and scoring run on the whole weights (`unsharded`, one gather; nothing under DDP): a replica's
    # sampling loop stops when its own rows have ended, so replicas call the model a different number of times.
    def evaluate():
        with unsharded(model):
            return evaluate_policy(model.policy, model.ref_logits, reward_fn, tokenizer, eval_prompts, cfg.eval_samples,
                                   sampling, gold, engine=engine, seed=cfg.seed, batch_size=cfg.batch_size,
                                   chunk_size=cfg.micro_batch_size)
    if early_stopping(cfg) and start == 0:  # the detectors' baseline and the fallback policy: the initial one
        ev = evaluate()
        early["first_agreement"] = ev.get("rm_gold_agreement")
        early["good_state"] = whole_copy(model.policy)
        logger.log(0, eval_metrics(ev))
    warned = False  # the KL run-away warning is printed once
    bar = tqdm(range(start, cfg.steps), desc="ppo", unit="it", initial=start, total=cfg.steps, dynamic_ncols=True,
               disable=not replica.is_main)
    for step in bar:
        # 1. Rollout: sample responses; masks end at EOS.
        t0 = time.perf_counter()
        batch_idx = group_prompts(stream, local_batch, cfg.group_size)
        model.eval()
        with unsharded(model):
            rollout = engine.generate(model.policy, [prompt_ids[i] for i in batch_idx], sampling, generator)
            texts = decode_responses(tokenizer, rollout)
            batch_prompts = [prompts[i].prompt for i in batch_idx]
            t1 = time.perf_counter()
            # 2–4. Score, per-token rewards (−β·KL, score at the last token), advantages (GAE, RLOO or GRPO).
            beta = kl_ctl.value
            exp = make_experience(model, reward_fn, rollout, batch_prompts, texts, beta, cfg)
        t2 = time.perf_counter()
        # 5. Update: PPO epochs over shuffled minibatches.
        if cfg.anneal_lr:
            set_lr(optimizer, cfg.lr * (1 - step / cfg.steps))
        kept = f"the last checkpoint is kept: {ckpt_path}" if ckpt_path.is_file() else None
        stats = ppo_update(ddp_model, optimizer, exp, cfg, generator, step, replica, kept)
        t3 = time.perf_counter()
        # 6. Log: metrics averaged over replicas; the KL controller sees the global mean KL.
        metrics = step_metrics(exp, stats, rollout) | {"policy/lr": optimizer.param_groups[0]["lr"],
                                                       "time/rollout": t1 - t0, "time/score": t2 - t1, "time/train": t3 - t2}
        if gold is not None:
            metrics["gold/score"] = float(np.mean(gold.utilities(batch_prompts, texts)))
        metrics = mean_across(metrics, replica) | {"memory/peak_gb": peak_memory_gb(device)}
        kl_ctl.update(metrics["objective/kl"], cfg.batch_size)
        warning = None if warned else kl_runaway_warning(step + 1, metrics["objective/kl"], metrics["val/mean_length"],
                                                         metrics["policy/lr"], beta)
        if warning and replica.is_main:
            tqdm.write(warning)
        warned = warned or warning is not None
        # 7. Evaluate on held-out prompts; an early-stop detector that fires ends the loop.
        if cfg.eval_every and (step + 1) % cfg.eval_every == 0 and step + 1 < cfg.steps:
            ev = evaluate()
            metrics.update(eval_metrics(ev))
            reason = early_stop_reason(cfg, ev, early["first_agreement"])
            if reason is not None:
                early["stopped"] = {"step": step + 1, "reason": reason}
            else:
                early["good_state"] = whole_copy(model.policy)
        logger.log(step + 1, metrics)
        bar.set_postfix(score=f"{metrics['objective/scores']:.2f}", kl=f"{metrics['objective/kl']:.2f}", beta=f"{beta:.3g}")
        if samples_file and cfg.samples_every and (step + 1) % cfg.samples_every == 0:
            write_samples(samples_file, step + 1, batch_prompts, texts, exp.raw_scores)
        if early["stopped"]:
            break
        # 8. Checkpoint.
        if cfg.save_every and (step + 1) % cfg.save_every == 0:
            save_checkpoint(ckpt_path, step + 1, model, optimizer, kl_ctl, generator, stream, early, replica)
    bar.close()
    if samples_file:
        samples_file.close()
    if early["stopped"] and replica.is_main:
        print(f"ppo: early stop at iteration {early['stopped']['step']}: {early['stopped']['reason']}; "
              "keeping the policy of the last evaluation that passed")
    if early["stopped"] and early["good_state"] is not None:
        load_whole(model.policy, early["good_state"])
    final = evaluate()
    final["early_stop"] = early["stopped"]
    final["steps_done"] = early["stopped"]["step"] if early["stopped"] else cfg.steps
    logger.log(final["steps_done"], eval_metrics(final))
    logger.close()
    state = full_state_dict(model.policy)  # gathered to rank 0 under FSDP
    if replica.is_main:
        policy = model.policy.merge_and_unload() if cfg.lora_r else model.policy
        save_pretrained_atomic(out / "model", policy, tokenizer, state)
        write_jsonl_atomic(out / "eval_samples.jsonl", final["samples"])
        write_json_atomic(out / "eval.json", {k: v for k, v in final.items() if k != "samples"})
    shutdown(replica)
    final.pop("samples")
    return final
