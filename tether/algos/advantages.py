"""Per-token rewards, generalised advantage estimation, and the critic-free group baselines (RLOO, GRPO).

Tensors are (B, T); `mask` is 1 on response tokens (through EOS) and 0 on the
prompt and on the padding after EOS. A row's response is one contiguous run of
ones; it may start after column 0 (a prompt region) and end before the last
column (padding after an early EOS).
"""

import torch

from tether.algos.shapes import require_same_shape


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Column of the last 1 in each row: max_t { t : mask[b, t] = 1 }.

    mask: (B, T) → (B,) int64. Reads the mask itself, never a length (a row of
    length L that starts after a prompt does not end at L − 1). Raises
    ValueError for a row with no response token, which has no last token.
    """
    present = mask.bool()
    if not present.any(dim=1).all():
        empty_rows = (~present.any(dim=1)).nonzero().flatten().tolist()
        raise ValueError(f"every row needs a response token; empty rows: {empty_rows}")
    columns = torch.arange(mask.shape[1], device=mask.device)
    return torch.where(present, columns, -1).amax(dim=1)


def per_token_rewards(scores: torch.Tensor, kl: torch.Tensor, beta: float, mask: torch.Tensor) -> torch.Tensor:
    """r_t = −β·kl_t on every response token, plus the score at the last response token.

    The per-token form of R(x, y) = r(x, y) − β log π(y|x)/π_ref(y|x) (Stiennon
    et al. 2020, eq. 1; Ziegler et al. 2019). scores: (B,), kl and mask: (B, T)
    → (B, T). The score lands at last_token_index(mask) — the EOS itself, never
    one slot after it; everything outside the mask is 0.
    """
    require_same_shape(kl=kl, mask=mask)
    rewards = torch.where(mask.bool(), -beta * kl, 0)
    last = last_token_index(mask).unsqueeze(1)  # (B, 1)
    return rewards.scatter_add(1, last, scores.to(rewards.dtype).reshape(-1, 1))


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, eq. 16), backwards over time:

        δ_t = r_t + γ V_{t+1} − V_t,    A_t = δ_t + γλ A_{t+1},    R_t = A_t + V_t

    with V_{t+1} = A_{t+1} = 0 after the last response token, also when the mask
    ends before the final column: values on padding never leak in. rewards,
    values, mask: (B, T) → (advantages, returns), each (B, T), 0 outside the mask.
    """
    require_same_shape(rewards=rewards, values=values, mask=mask)
    present = mask.bool()
    rewards, values = torch.where(present, rewards, 0), torch.where(present, values, 0)
    next_value = next_advantage = torch.zeros_like(values[:, 0])
    advantages = []
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_advantage = torch.where(present[:, t], delta + gamma * lam * next_advantage, 0)
        next_value = values[:, t]
        advantages.append(next_advantage)
    advantages = torch.stack(advantages[::-1], dim=1)
    return advantages, advantages + values


def _groups(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """(B,) → (B/k, k): row g holds the k samples of prompt g (the batch lists each prompt's k samples together)."""
    if scores.dim() != 1 or group_size < 1 or scores.shape[0] % group_size:
        raise ValueError(f"scores {tuple(scores.shape)} do not split into groups of {group_size}")
    return scores.reshape(-1, group_size)


def rloo_advantages(scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """A_i = R_i − 1/(k−1) Σ_{j≠i} R_j: each sample's return against the mean of the others of its prompt
    (REINFORCE Leave-One-Out; Kool et al. 2019, Ahmadian et al. 2024, eq. 6). Equals k/(k−1)·(R_i − mean_j R_j).

    scores: (B,) sequence returns, samples of one prompt adjacent (B = G·k) → (B,). k ≥ 2: with one
    sample there is no other to compare with.
    """
    if group_size < 2:
        raise ValueError(f"RLOO needs at least 2 samples per prompt, got group_size {group_size}")
    groups = _groups(scores, group_size)
    others_mean = (groups.sum(1, keepdim=True) - groups) / (group_size - 1)
    return (groups - others_mean).reshape(-1)


def grpo_advantages(scores: torch.Tensor, group_size: int, scale: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """A_i = (R_i − mean_g R) / (std_g R + eps): group-normalised returns (Shao et al. 2024, DeepSeekMath, §4.1.2;
    std unbiased and eps = 1e-4 as TRL). scale=False keeps A_i = R_i − mean_g R (Dr. GRPO, Liu et al. 2025, §3.2:
    dividing by the std weights easy and hard prompts up).

    scores: (B,) sequence returns, samples of one prompt adjacent (B = G·k) → (B,). A group whose returns are all
    equal has advantage 0 (its std is 0, hence eps).
    """
    groups = _groups(scores, group_size)
    centred = groups - groups.mean(1, keepdim=True)
    if scale:
        std = groups.std(1, keepdim=True) if group_size > 1 else torch.zeros_like(groups)
        centred = centred / (std + eps)
    return centred.reshape(-1)
