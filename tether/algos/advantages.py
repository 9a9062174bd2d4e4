"""Per-token rewards and generalised advantage estimation over response tokens.

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
