"""`tether ppo`: maximise r_φ(x, y) − β·KL(π_θ ‖ π_ref) with PPO (Ziegler et al. 2019; Ouyang et al. 2022).

One loop, read top to bottom: rollout → score → per-token rewards → GAE → PPO
epochs over shuffled minibatches → log → evaluate → checkpoint. The math is in
`tether.algos`; implementation details follow Huang et al. 2024 ("The N+
implementation details of RLHF with PPO"): dropout off, log-probs from
logits / temperature, score at the last real response token, value head
initialised from the reward model, a fresh shuffle per PPO epoch, an explicit
penalty for responses without EOS.
"""

import copy
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from tether.algos import (AdaptiveKLController, FixedKLController, entropy_from_logits, explained_variance, gae,
                          kl_exact, kl_k1, kl_k3, kl_of_next_state, masked_mean, masked_var, masked_whiten,
                          per_token_rewards, ppo_policy_loss, ppo_value_loss)
from tether.config import opt, require
from tether.data import encode_prompt, read_prompts
from tether.data.io import atomic_open, write_json_atomic, write_jsonl_atomic
from tether.distributed import (SINGLE, gather_objects, init_replica, mean_across, no_sync, shutdown, sum_across,
                                unwrap, wrap)
from tether.errors import InputError
from tether.models import (PolicyWithValue, apply_lora, load_causal_lm, load_reward_model, load_tokenizer,
                           save_pretrained_atomic, score_head, set_seed)
from tether.pipelines.common import autocast, check_finite, decode_responses, prepare_run_dir, set_lr
from tether.pipelines.policy_eval import evaluate_policy
from tether.pipelines.scoring import RewardFunction
from tether.rollout import (SamplingConfig, TorchSampler, length_sorted_chunks, no_eos_penalty, over_length_chunks,
                            policy_forward, response_logits, response_logprobs, trim_padding)
from tether.runlog import MetricsLogger, truncate_jsonl
from tether.worlds import resolve_gold

SAMPLED_KL = {"k1": kl_k1, "k3": kl_k3}
REF_CACHE_BYTES = 512 * 2**20  # the exact KL keeps the reference's response distributions up to this size, else recomputes them


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
    uncertainty_coef: float = opt(0.0, "lambda in mean - lambda * std over the reward-model ensemble")
    gold: str | None = opt(None, "gold utility of a built-in world to log beside the proxy reward (assistant)")
    steps: int = opt(100, "PPO iterations (one rollout batch each)")
    batch_size: int = opt(64, "rollouts per iteration")
    minibatch_size: int = opt(64, "rollouts per optimiser step")
    micro_batch_size: int = opt(32, "rollouts per forward/backward (gradient accumulation inside a minibatch) and per chunk of the scoring pass")
    ppo_epochs: int = opt(2, "passes over each rollout batch, each with a fresh shuffle")
    lr: float = opt(2e-4, "learning rate (Adam)")
    anneal_lr: bool = opt(False, "decay the learning rate linearly to 0 over the run (CleanRL's anneal_lr): less drift at large beta, slower hacking at small beta")
    beta: float = opt(0.05, "KL coefficient (initial value when adaptive_kl)")
    adaptive_kl: bool = opt(False, "adapt beta towards kl_target (Ziegler et al. 2019)")
    kl_target: float = opt(1.0, "target KL per sequence for the adaptive controller")
    kl_horizon: int = opt(10000, "horizon of the adaptive controller, in rollouts")
    kl_estimator: str = opt("exact", "per-token KL: k1 = log p - log p_ref or k3 = (r - 1) - log r of the sampled token (in the reward); "
                                  "exact = the KL over the whole vocabulary at each state (in the reward for later states, its own gradient in the loss): far less noise, so a large beta holds the policy near the reference")
    gamma: float = opt(1.0, "discount")
    lam: float = opt(0.95, "GAE lambda")
    clip_eps: float = opt(0.2, "policy ratio clip")
    clip_value: float = opt(0.2, "value clip range")
    vf_coef: float = opt(0.1, "value loss weight")
    max_grad_norm: float = opt(1.0, "gradient clipping norm")
    whiten_advantages: bool = opt(True, "whiten advantages over the batch's response tokens")
    whiten_rewards: bool = opt(False, "whiten per-token rewards before GAE")
    score_clip: float | None = opt(None, "clip reward-model scores to [-c, c]")
    missing_eos_penalty: float | None = opt(-1.0, "score given to a response that hits max_new_tokens without EOS (None: keep the model's score)")
    temperature: float = opt(1.0, "sampling temperature; log-probs use logits / temperature")
    max_new_tokens: int = opt(48, "longest response in tokens")
    value_model: str = opt("critic", "critic: a separate model initialised from the reward model; shared: a value head on the policy trunk (cheaper, but value-loss gradients move the policy)")
    lora_r: int = opt(0, "LoRA rank for the policy (0: full fine-tuning); the reference is the adapter-disabled model")
    lora_alpha: int = opt(16, "LoRA alpha")
    eval_every: int = opt(10, "iterations between evaluations on the held-out prompts (0: only at the end)")
    eval_samples: int = opt(512, "held-out responses per evaluation (the KL estimate is noisy below ~500)")
    samples_every: int = opt(10, "iterations between rows in samples.jsonl")
    save_every: int = opt(25, "iterations between checkpoints (0: none)")
    resume: bool = opt(False, "continue from OUT/checkpoints/last.pt")
    early_stop_benign_refusal: float | None = opt(None, "stop when the held-out benign refusal rate exceeds this (keeps the last good policy)")
    early_stop_repetition: float | None = opt(None, "stop when the held-out repetition rate exceeds this")
    early_stop_gold_agreement_drop: float | None = opt(None, "stop when the reward model's agreement with gold on the policy's own samples falls this far below its value on the initial policy")
    seed: int = opt(0, "random seed")
    device: str = opt("auto", "cpu, cuda, cuda:N or auto")
    bf16: bool = opt(False, "bfloat16 autocast for the PPO loss forward passes (GPUs with bf16; weights stay fp32)")
    threads: int = opt(0, "torch CPU threads (0: torch's default)")

    def __post_init__(self):
        for name in ("policy", "reward_model", "prompts", "out"):
            require(bool(getattr(self, name)), name, f"--{name.replace('_', '-')} is required")
        require(self.kl_estimator in (*SAMPLED_KL, "exact"), "kl_estimator", f"must be k1, k3 or exact, got {self.kl_estimator!r}")
        require(not (self.kl_estimator == "exact" and self.whiten_rewards), "whiten_rewards",
                "whitened rewards lose the scale that the exact KL's loss term is matched to; use one or the other")
        require(self.value_model in ("shared", "critic"), "value_model", f"must be shared or critic, got {self.value_model!r}")
        require(self.beta >= 0, "beta", f"must be >= 0, got {self.beta}")
        require(self.temperature > 0, "temperature", "must be > 0")
        require(self.batch_size % self.minibatch_size == 0, "minibatch_size",
                f"batch_size {self.batch_size} is not a multiple of minibatch_size {self.minibatch_size}")
        require(self.minibatch_size % self.micro_batch_size == 0, "micro_batch_size",
                f"minibatch_size {self.minibatch_size} is not a multiple of micro_batch_size {self.micro_batch_size}")
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


class ActorCritic(torch.nn.Module):
    """Policy logits and per-token values; the reference is a separate frozen model or the LoRA-disabled policy."""

    def __init__(self, cfg: PPOConfig, device):
        super().__init__()
        policy = load_causal_lm(cfg.policy, device, field="policy")
        rm = load_reward_model(cfg.reward_model, device, field="reward_model")
        if cfg.lora_r:
            policy = apply_lora(policy, cfg.lora_r, cfg.lora_alpha, "CAUSAL_LM")
            self.ref = None
        else:
            self.ref = load_causal_lm(cfg.ref_policy or cfg.policy, device, field="ref_policy").requires_grad_(False)
        if cfg.value_model == "shared":
            if rm.config.hidden_size == getattr(policy.config, "hidden_size", None):
                head = copy.deepcopy(score_head(rm))  # value head initialised from the reward model's head
            else:
                head = None
            self.actor = PolicyWithValue(policy, head).to(device)
            self.critic = None
        else:
            self.actor, self.critic = policy, copy.deepcopy(rm).train()  # critic initialised from the reward model
        self.policy = policy

    def forward(self, sequences, attention_mask, response_start: int):
        """-> (logits of the rows that score the response (B, T − P + 1, V), values (B, T))."""
        if self.critic is None:
            return self.actor(sequences, attention_mask, response_start)
        from tether.models.reward import token_scores
        return (policy_forward(self.policy, sequences, attention_mask, response_start),
                token_scores(self.critic, sequences, attention_mask))

    @torch.no_grad()
    def ref_logits(self, sequences, attention_mask, response_start: int):
        if self.ref is not None:
            return policy_forward(self.ref, sequences, attention_mask, response_start)
        with self.policy.disable_adapter():
            return policy_forward(self.policy, sequences, attention_mask, response_start)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.ref is not None:
            self.ref.eval()  # the reference stays frozen: no grad, eval mode
        return self

    def trainable_parameters(self):
        return [p for p in self.parameters() if p.requires_grad]


def rng_state(generator, stream) -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "generator": generator.get_state(), "stream": stream.state_dict()}


def save_checkpoint(path: Path, step, model, optimizer, kl_ctl, generator, stream, early_stop_state, replica) -> None:
    """Atomic (write, fsync, rename): everything needed for a resumed run to equal an uninterrupted one.

    Models, optimiser and KL controller are the same on every replica; RNG states and
    prompt positions are per replica, gathered to rank 0, which alone writes.
    """
    rng_states = gather_objects(rng_state(generator, stream), replica)
    if not replica.is_main:
        return
    state = {"step": step, "model": {k: v for k, v in model.state_dict().items() if not k.startswith("ref.")},
             "optimizer": optimizer.state_dict(), "kl_ctl": kl_ctl.state_dict(),
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
    model.load_state_dict(state["model"], strict=False)
    optimizer.load_state_dict(state["optimizer"])
    kl_ctl.load_state_dict(state["kl_ctl"])
    rng = state["rng"][replica.rank]
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    generator.set_state(rng["generator"])
    stream.load_state_dict(rng["stream"])
    return state["step"], state["early_stop"]


def per_token_kl(cfg, exact_kl, old_logp, ref_logp, mask) -> tuple[torch.Tensor, torch.Tensor]:
    """(KL per response token, the part of it that goes into the reward), both 0 outside the mask.

    exact_kl: `kl_exact` of the policy's and the reference's response distributions (B, R);
    computed (and used) only with the exact estimator.

    k1/k3 score the sampled token and all of it is reward. The exact KL of each state
    goes into the reward of the action before it (`kl_of_next_state`); its own gradient
    is a loss term (`minibatch_loss`), so the total is the gradient of β·KL with less noise.
    """
    if cfg.kl_estimator != "exact":
        kl = SAMPLED_KL[cfg.kl_estimator](old_logp, ref_logp) * mask
        return kl, kl
    kl = exact_kl * mask
    return kl, kl_of_next_state(kl, mask)


@torch.no_grad()
def make_experience(model, reward_fn, rollout, prompts, texts, beta, cfg) -> dict:
    """Score a rollout: old log-probs and values (teacher forcing), reference log-probs, rewards, advantages.

    Everything is over response tokens only: `mask` is 1 through EOS, so the prompt
    and the padding after EOS never touch KL, rewards, advantages or losses. The
    forward passes run on length-sorted chunks of micro_batch_size rollouts, each cut
    to the columns it needs (`over_length_chunks`), which also bounds their memory.
    """
    seqs, attn, mask = rollout.sequences, rollout.attention_mask, rollout.response_mask.float()
    P = rollout.prompt_ids.shape[1]
    vocab_bytes = len(seqs) * mask.shape[1] * model.policy.config.vocab_size * 4
    keep_ref_dist = cfg.kl_estimator == "exact" and vocab_bytes <= REF_CACHE_BYTES

    def teacher_forced(s, a, p, rows):
        logits, values = model(s, a, p)
        ref_logits = model.ref_logits(s, a, p)
        dist, ref_dist = response_logits(logits, s, p, cfg.temperature), response_logits(ref_logits, s, p, cfg.temperature)
        score, score_std = reward_fn(s, a, [prompts[i] for i in rows], [texts[i] for i in rows])
        out = {"old_logp": response_logprobs(logits, s, p, cfg.temperature), "old_values": values[:, p - 1:-1],
               "ref_logp": response_logprobs(ref_logits, s, p, cfg.temperature), "entropy": entropy_from_logits(dist),
               "raw_scores": score, "score_std": score_std}
        if cfg.kl_estimator == "exact":
            out["exact_kl"] = kl_exact(dist, ref_dist)
        return out | ({"ref_dist": ref_dist} if keep_ref_dist else {})

    tf = over_length_chunks(teacher_forced, seqs, attn, P, cfg.micro_batch_size)
    old_logp, old_values = tf["old_logp"], tf["old_values"]  # V(state before each response token)
    scores = no_eos_penalty(tf["raw_scores"], rollout.ended_with_eos, cfg.missing_eos_penalty)
    if cfg.score_clip is not None:
        scores = scores.clamp(-cfg.score_clip, cfg.score_clip)
    kl, kl_in_reward = per_token_kl(cfg, tf.get("exact_kl"), old_logp, tf["ref_logp"], mask)
    rewards = per_token_rewards(scores, kl_in_reward, beta, mask)  # −β·KL per token, the score at the last real token
    if cfg.whiten_rewards:
        rewards = masked_whiten(rewards, mask, shift_mean=False)
    advantages, returns = gae(rewards, old_values, mask, cfg.gamma, cfg.lam)
    advantage_scale = torch.ones(())  # what whitening divided the advantages by
    if cfg.whiten_advantages:
        advantage_scale = torch.sqrt(masked_var(advantages, mask) + 1e-8)
        advantages = masked_whiten(advantages, mask)
    return {"seqs": seqs, "attn": attn, "mask": mask, "prompt_len": P, "old_logp": old_logp, "old_values": old_values,
            "ref_logp": tf["ref_logp"], "raw_scores": tf["raw_scores"], "scores": scores, "score_std": tf["score_std"],
            "kl": kl, "rewards": rewards, "advantages": advantages, "advantage_scale": advantage_scale, "beta": beta,
            "returns": returns, "entropy": tf["entropy"], "ref_dist": tf.get("ref_dist")}


def epoch_minibatches(batch_size: int, minibatch_size: int, generator) -> list[torch.Tensor]:
    """A fresh random permutation of the batch, cut into minibatches (called once per PPO epoch)."""
    perm = torch.randperm(batch_size, generator=generator, device=generator.device)
    return list(perm.view(batch_size // minibatch_size, minibatch_size))


def minibatch_loss(model, exp: dict, idx: torch.Tensor, cfg) -> tuple[torch.Tensor, dict]:
    """PPO loss of the rows `idx`: clipped surrogate + vf_coef · clipped value loss (token means over `idx`),
    + β·KL / advantage scale with the exact KL estimator. The rows are cut to the columns they need."""
    seqs, attn, P, R = trim_padding(exp["seqs"][idx], exp["attn"][idx], exp["prompt_len"])
    rows = lambda key: exp[key][idx, :R]  # response-aligned (B, R, …) tensors of these rows, trimmed alike
    mask = rows("mask")
    logits, values = model(seqs, attn, P)
    logp = response_logprobs(logits, seqs, P, cfg.temperature)
    pg_loss, pg_stats = ppo_policy_loss(logp, rows("old_logp"), rows("advantages"), mask, cfg.clip_eps)
    vf_loss, vf_stats = ppo_value_loss(values[:, P - 1:-1], rows("old_values"), rows("returns"), mask, cfg.clip_value)
    loss, parts = pg_loss + cfg.vf_coef * vf_loss, {"pg": pg_loss, "vf": vf_loss, **pg_stats, **vf_stats}
    if cfg.kl_estimator == "exact":  # the direct gradient of β·Σ_t KL_t, in the units of the whitened advantages
        if exp["ref_dist"] is not None:
            ref_dist = rows("ref_dist")
        else:
            ref_dist = response_logits(unwrap(model).ref_logits(seqs, attn, P), seqs, P, cfg.temperature)
        kl = kl_exact(response_logits(logits, seqs, P, cfg.temperature), ref_dist)
        parts["kl"] = masked_mean(kl, mask)
        loss = loss + exp["beta"] * parts["kl"] / exp["advantage_scale"]
    return loss, parts


def ppo_update(model, optimizer, exp: dict, cfg, generator, step: int, replica=SINGLE) -> dict:
    """PPO epochs, each over a fresh shuffle; gradient accumulation over micro-batches; mean stats.

    Each replica holds batch_size/W rollouts and takes minibatch_size/W of them per
    optimiser step. Every micro-batch's token-mean loss is weighted by its share of the
    global minibatch's response tokens, so the gradient is the global token mean. A
    minibatch is cut into micro-batches of similar length (the gradient is their sum,
    whatever the order), so each pads little.
    """
    model.train()
    stats: dict[str, list[float]] = {}
    local_batch, local_mb = cfg.batch_size // replica.world_size, cfg.minibatch_size // replica.world_size
    n_micro = local_mb // cfg.micro_batch_size
    params = unwrap(model).trainable_parameters()
    lengths = exp["attn"].sum(1)
    for _ in range(cfg.ppo_epochs):
        for mb in epoch_minibatches(local_batch, local_mb, generator):
            optimizer.zero_grad(set_to_none=True)
            global_tokens = sum_across(exp["mask"][mb].sum().item(), replica)
            for k, micro in enumerate(length_sorted_chunks(mb, lengths, cfg.micro_batch_size)):
                with no_sync(model, active=k < n_micro - 1), autocast(exp["seqs"].device, cfg.bf16):
                    loss, parts = minibatch_loss(model, exp, micro, cfg)
                    loss = loss * exp["mask"][micro].sum() * replica.world_size / global_tokens
                    check_finite(loss, step, "PPO loss")
                    loss.backward()
                for key, value in parts.items():
                    stats.setdefault(key, []).append(value.item())
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
    return {k: float(np.mean(v)) for k, v in stats.items()}


def step_metrics(exp: dict, stats: dict, beta: float, rollout) -> dict:
    """One iteration's metrics under TRL's names."""
    mask, kl_seq = exp["mask"], exp["kl"].sum(1)
    return {
        "objective/kl": kl_seq.mean().item(), "objective/entropy": (exp["entropy"] * mask).sum(1).mean().item(),
        "objective/scores": exp["raw_scores"].mean().item(),
        "objective/rlhf_reward": (exp["scores"] - beta * kl_seq).mean().item(),
        "objective/non_score_reward": (-beta * kl_seq).mean().item(), "objective/beta": beta,
        "objective/score_std": exp["score_std"].mean().item(),
        "policy/clipfrac": stats["clipfrac"], "policy/approxkl": stats["approxkl"],
        "policy/entropy": masked_mean(exp["entropy"], mask).item(),
        "loss/policy": stats["pg"], "loss/value": stats["vf"], "val/clipfrac": stats["vf_clipfrac"],
        "val/ratio": stats["ratio_mean"],
        "val/explained_variance": explained_variance(exp["old_values"], exp["returns"], mask).item(),
        "val/eos_rate": rollout.ended_with_eos.float().mean().item(), "val/mean_length": mask.sum(1).mean().item(),
    } | ({"loss/kl": stats["kl"]} if "kl" in stats else {})


def eval_metrics(ev: dict) -> dict:
    """An evaluation's numbers as metrics rows carry them: eval/<name>."""
    return {f"eval/{k}": v for k, v in ev.items() if isinstance(v, (int, float))}


def snapshot(module: torch.nn.Module) -> dict:
    """A copy of the module's weights (the policy to fall back to when early stopping fires)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


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
    require((cfg.minibatch_size // w) % cfg.micro_batch_size == 0, "micro_batch_size",
            f"minibatch_size/processes = {cfg.minibatch_size // w} is not a multiple of micro_batch_size {cfg.micro_batch_size}")


def run_ppo(cfg: PPOConfig) -> dict:
    """Train; write OUT/model, metrics.jsonl, samples.jsonl, eval.json and checkpoints; return the final evaluation."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    replica = init_replica(cfg.device)
    device = replica.device
    check_split(cfg, replica)
    tokenizer = load_tokenizer(cfg.policy, field="policy")
    prompts = read_prompts(cfg.prompts)
    eval_prompts = read_prompts(cfg.eval_prompts) if cfg.eval_prompts else prompts
    prompt_ids = [encode_prompt(tokenizer, p.prompt) for p in prompts]
    out = prepare_run_dir(cfg.out, cfg) if replica.is_main else Path(cfg.out)
    set_seed(cfg.seed)
    model = ActorCritic(cfg, device)
    ddp_model = wrap(model, replica)
    reward_fn = RewardFunction([cfg.reward_model, *cfg.ensemble], tokenizer, device, cfg.uncertainty_coef)
    gold = resolve_gold(cfg.gold)
    optimizer = torch.optim.Adam(model.trainable_parameters(), lr=cfg.lr, eps=1e-5, fused=True)
    kl_ctl = AdaptiveKLController(cfg.beta, cfg.kl_target, cfg.kl_horizon) if cfg.adaptive_kl else FixedKLController(cfg.beta)
    sampler = TorchSampler()
    sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                              eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    generator = torch.Generator(device=device).manual_seed(cfg.seed + 7919 * replica.rank)  # own samples per replica
    stream = PromptStream(len(prompts), cfg.seed + 7919 * replica.rank)
    local_batch = cfg.batch_size // replica.world_size
    ckpt_path = out / "checkpoints" / "last.pt"
    start, early = 0, {"first_agreement": None, "good_state": None, "stopped": None}
    if cfg.resume:
        start, early = load_checkpoint(ckpt_path, model, optimizer, kl_ctl, generator, stream, replica)
    logger = MetricsLogger(out, enabled=replica.is_main, resume_from_step=start if cfg.resume else None)
    if cfg.resume and replica.is_main:
        truncate_jsonl(out / "samples.jsonl", start)
    samples_file = (out / "samples.jsonl").open("a" if cfg.resume else "w", encoding="utf-8") if replica.is_main else None
    evaluate = lambda: evaluate_policy(model.policy, model.ref_logits, reward_fn, tokenizer, eval_prompts,
                                       cfg.eval_samples, sampling, gold, seed=cfg.seed, batch_size=cfg.batch_size,
                                       chunk_size=cfg.micro_batch_size)
    if early_stopping(cfg) and start == 0:  # the detectors' baseline and the fallback policy: the initial one
        ev = evaluate()
        early["first_agreement"] = ev.get("rm_gold_agreement")
        early["good_state"] = snapshot(model.policy)
        logger.log(0, eval_metrics(ev))
    bar = tqdm(range(start, cfg.steps), desc="ppo", unit="it", initial=start, total=cfg.steps, dynamic_ncols=True,
               disable=not replica.is_main)
    for step in bar:
        # 1. Rollout: sample responses; masks end at EOS.
        t0 = time.perf_counter()
        batch_idx = stream.take(local_batch)
        model.eval()
        rollout = sampler.generate(model.policy, [prompt_ids[i] for i in batch_idx], sampling, generator)
        texts = decode_responses(tokenizer, rollout)
        batch_prompts = [prompts[i].prompt for i in batch_idx]
        t1 = time.perf_counter()
        if cfg.anneal_lr:
            set_lr(optimizer, cfg.lr * (1 - step / cfg.steps))
        # 2–3. Score, per-token rewards (−β·KL, score at the last token), GAE.
        beta = kl_ctl.value
        exp = make_experience(model, reward_fn, rollout, batch_prompts, texts, beta, cfg)
        t2 = time.perf_counter()
        # 4. PPO epochs over shuffled minibatches.
        stats = ppo_update(ddp_model, optimizer, exp, cfg, generator, step, replica)
        t3 = time.perf_counter()
        # 5. Log: metrics averaged over replicas; the KL controller sees the global mean KL.
        metrics = step_metrics(exp, stats, beta, rollout) | {"policy/lr": optimizer.param_groups[0]["lr"],
                                                             "time/rollout": t1 - t0, "time/score": t2 - t1, "time/train": t3 - t2}
        if gold is not None:
            metrics["gold/score"] = float(np.mean(gold.utilities(batch_prompts, texts)))
        metrics = mean_across(metrics, replica)
        kl_ctl.update(metrics["objective/kl"], cfg.batch_size)
        if cfg.eval_every and (step + 1) % cfg.eval_every == 0 and step + 1 < cfg.steps:
            ev = evaluate()
            metrics.update(eval_metrics(ev))
            reason = early_stop_reason(cfg, ev, early["first_agreement"])
            if reason is not None:
                early["stopped"] = {"step": step + 1, "reason": reason}
            else:
                early["good_state"] = snapshot(model.policy)
        logger.log(step + 1, metrics)
        bar.set_postfix(score=f"{metrics['objective/scores']:.2f}", kl=f"{metrics['objective/kl']:.2f}", beta=f"{beta:.3g}")
        if samples_file and cfg.samples_every and (step + 1) % cfg.samples_every == 0:
            for p, r, s in list(zip(batch_prompts, texts, exp["raw_scores"].tolist()))[:4]:
                samples_file.write(json.dumps({"step": step + 1, "prompt": p, "response": r, "score": s}) + "\n")
            samples_file.flush()
        if early["stopped"]:
            break
        if cfg.save_every and (step + 1) % cfg.save_every == 0:
            save_checkpoint(ckpt_path, step + 1, model, optimizer, kl_ctl, generator, stream, early, replica)
    bar.close()
    if samples_file:
        samples_file.close()
    if early["stopped"] and replica.is_main:
        print(f"ppo: early stop at iteration {early['stopped']['step']}: {early['stopped']['reason']}; "
              "keeping the policy of the last evaluation that passed")
    if early["stopped"] and early["good_state"] is not None:
        model.policy.load_state_dict(early["good_state"])
    final = evaluate()
    final["early_stop"] = early["stopped"]
    final["steps_done"] = early["stopped"]["step"] if early["stopped"] else cfg.steps
    logger.log(final["steps_done"], eval_metrics(final))
    logger.close()
    if replica.is_main:
        policy = model.policy.merge_and_unload() if cfg.lora_r else model.policy
        save_pretrained_atomic(out / "model", policy, tokenizer)
        write_jsonl_atomic(out / "eval_samples.jsonl", final["samples"])
        write_json_atomic(out / "eval.json", {k: v for k, v in final.items() if k != "samples"})
    shutdown(replica)
    final.pop("samples")
    return final
