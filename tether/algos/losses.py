"""Losses: the Bradley–Terry reward-model loss and PPO's clipped policy and value losses.

PPO tensors are (B, T); `mask` is 1 on response tokens (through EOS) and 0 on the
prompt and on the padding after EOS. The PPO losses average over all response
tokens of the batch (one token, one vote), and values outside the mask — even
inf or NaN — change neither the loss nor its gradient.
"""

import torch
import torch.nn.functional as F

from tether.algos.shapes import require_same_shape
from tether.algos.stats import masked_aggregate, masked_mean


def bradley_terry_loss(
    r_chosen: torch.Tensor, r_rejected: torch.Tensor, margin: torch.Tensor | float | None = None
) -> torch.Tensor:
    """L = −mean log σ(r_c − r_r − m)  (Bradley & Terry 1952; Ouyang et al. 2022, eq. 1).

    The margin m (Touvron et al. 2023, Llama 2, eq. 2) asks the chosen reward to
    lead by m; None means 0. r_chosen, r_rejected: (B,); margin: (B,) or scalar
    → scalar. logsigmoid keeps differences of ±1000 finite.
    """
    require_same_shape(r_chosen=r_chosen, r_rejected=r_rejected)
    difference = r_chosen - r_rejected
    if margin is not None:
        difference = difference - margin
    return -F.logsigmoid(difference).mean()


def bradley_terry_accuracy(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """Fraction of pairs with r_c > r_r; a tie counts ½. (B,), (B,) → scalar."""
    require_same_shape(r_chosen=r_chosen, r_rejected=r_rejected)
    return ((r_chosen > r_rejected).float() + 0.5 * (r_chosen == r_rejected).float()).mean()


def ppo_policy_loss(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip_eps: float,
    aggregation: str = "token_mean", max_len: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate (Schulman et al. 2017, eq. 7), as a loss to minimise:

        ρ_t = exp(log π_θ − log π_old),   L = mean_m max(−A_t ρ_t, −A_t clip(ρ_t, 1 − ε, 1 + ε))

    mean_m is `masked_aggregate(·, mask, aggregation, max_len)`: the token mean by default, GRPO's
    per-sequence mean or Dr. GRPO's constant normaliser on request; the stats are token means.
    logp, old_logp, advantages, mask: (B, T) → (loss, stats). stats holds detached
    scalars: clipfrac (share of masked tokens where the clipped term is chosen,
    so the gradient is 0 — TRL's definition), approxkl (mean_m ½(log π_θ − log π_old)²,
    as TRL) and ratio_mean.
    """
    require_same_shape(logp=logp, old_logp=old_logp, advantages=advantages, mask=mask)
    present = mask.bool()
    log_ratio = torch.where(present, logp - old_logp, 0)  # masked first: no inf·0 = NaN in the gradient
    advantages = torch.where(present, advantages, 0)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps)
    loss = masked_aggregate(torch.maximum(unclipped, clipped), mask, aggregation, max_len)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((clipped > unclipped).to(ratio.dtype), mask),
            "approxkl": masked_mean(0.5 * log_ratio**2, mask),
            "ratio_mean": masked_mean(ratio, mask),
        }
    return loss, stats


def ppo_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip_range: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss (OpenAI baselines' PPO2, as TRL and CleanRL):

        V_clip = V_old + clip(V − V_old, −c, c),   L = ½ mean_m max((V − R)², (V_clip − R)²)

    values, old_values, returns, mask: (B, T) → (loss, stats); stats holds the
    detached scalar vf_clipfrac (share of masked tokens where the clipped term is chosen).
    """
    require_same_shape(values=values, old_values=old_values, returns=returns, mask=mask)
    present = mask.bool()
    values, old_values, returns = (torch.where(present, x, 0) for x in (values, old_values, returns))
    values_clipped = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    unclipped_loss, clipped_loss = (values - returns) ** 2, (values_clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_loss, clipped_loss), mask)
    with torch.no_grad():
        stats = {"vf_clipfrac": masked_mean((clipped_loss > unclipped_loss).to(loss.dtype), mask)}
    return loss, stats
