"""PPO's KL penalty, one object per estimator: its part of the reward, its loss term, its cache.

The reward of response token t is r_t = −β·kl_t, plus the score at the last token
(Ziegler et al. 2019). Which kl_t, how much of it is reward and whether the loss
carries a term of its own is the estimator's business, so a trainer asks the
penalty (`KL_PENALTIES[name]`) and never branches on the estimator's name:

- `SampledKL` (k1, k3): the estimator of the sampled token (Schulman 2020), all of it
  in the reward, no loss term.
- `ExactKL`: KL(π(·|s_t) ‖ π_ref(·|s_t)) over the whole vocabulary at each state
  (Rao–Blackwellised k1: far less noise, so a large β holds the policy near the
  reference). KL_t is fixed before a_t is drawn, so the reward of action t holds
  KL_{t+1} (`kl_of_next_state`) and KL_t's own gradient is a loss term; together they
  are the gradient of β·Σ_t KL_t. The loss term needs the reference's response
  distributions again: the scoring pass keeps them when the batch's fit in
  `ref_cache_bytes`, else the loss recomputes them.
- `LossKL` (k3, placement "loss"): none of it in the reward; the loss carries β·mean_m k3
  of the current policy's tokens against the reference (GRPO, Shao et al. 2024, eq. 3-4).

`kl_penalty(estimator, placement)` names the object: placement "reward" is one of the first
two (k1, k3, exact), placement "loss" the last (k3 only: k1's gradient is 0 in expectation).
In every method β weighs the same per-token KL against the reward model's score.

Shapes: B rollouts, R response tokens, V vocabulary; `mask` (B, R) is 1 on response
tokens through EOS; `dist`, `ref_dist` (B, R, V) are the logits / temperature that
score the response tokens.
"""

import torch

from tether.algos.kl import kl_exact, kl_k1, kl_k3, kl_of_next_state
from tether.algos.stats import masked_mean

REF_CACHE_BYTES = 512 * 2**20  # the exact KL keeps the reference's response distributions up to this size, else recomputes them


class SampledKL:
    """kl_t = estimator(log π(y_t), log π_ref(y_t)) of the sampled token, all of it reward; no loss term.

    estimator: `kl_k1` or `kl_k3` (elementwise, so it runs on the whole batch after the scoring pass).
    """

    def __init__(self, estimator):
        self.estimator = estimator

    def scoring_outputs(self, dist: torch.Tensor, ref_dist: torch.Tensor, batch_bytes: int) -> dict:
        """Nothing per state: the sampled tokens' log-probs are all this estimator reads."""
        return {}

    def token_kl(self, logp, ref_logp, scored: dict, mask) -> tuple[torch.Tensor, torch.Tensor]:
        """(kl (B, R), its part in the reward (B, R)): both the estimator's value, 0 outside the mask."""
        kl = self.estimator(logp, ref_logp) * mask
        return kl, kl

    def loss_term(self, logp, ref_logp, dist, ref_dist, mask, beta: float, advantage_scale) -> tuple[float, dict]:
        """No term of its own: (0.0, {})."""
        return 0.0, {}


class ExactKL:
    """kl_t = KL(π(·|s_t) ‖ π_ref(·|s_t)) (`kl_exact`); the reward holds KL_{t+1}, the loss β·KL_t's own gradient.

    ref_cache_bytes: the largest batch of reference distributions (B·R·V float32) the scoring pass keeps for the loss.
    """

    def __init__(self, ref_cache_bytes: int = REF_CACHE_BYTES):
        self.ref_cache_bytes = ref_cache_bytes

    def scoring_outputs(self, dist: torch.Tensor, ref_dist: torch.Tensor, batch_bytes: int) -> dict:
        """Per chunk of the scoring pass: {"state_kl": (b, R')} and, when the whole batch's reference
        distributions (`batch_bytes`) fit in the cache, {"ref_dist": (b, R', V)}."""
        cached = {"ref_dist": ref_dist} if batch_bytes <= self.ref_cache_bytes else {}
        return {"state_kl": kl_exact(dist, ref_dist)} | cached

    def token_kl(self, logp, ref_logp, scored: dict, mask) -> tuple[torch.Tensor, torch.Tensor]:
        """(KL_t · mask (B, R), KL_{t+1} · mask (B, R) for the reward) from the scoring pass's `state_kl`."""
        kl = scored["state_kl"] * mask
        return kl, kl_of_next_state(kl, mask)

    def loss_term(self, logp, ref_logp, dist, ref_dist, mask, beta: float, advantage_scale) -> tuple[torch.Tensor, dict]:
        """(β·mean_m KL_t / s, {"kl": mean_m KL_t}): the direct gradient of β·Σ_t KL_t in the units of the
        advantages, s being the scale whitening divided them by. dist, ref_dist: callables returning
        (b, R, V), evaluated here only (the other estimators never build them)."""
        kl = masked_mean(kl_exact(dist(), ref_dist()), mask)
        return beta * kl / advantage_scale, {"kl": kl}


class LossKL(SampledKL):
    """kl_t = k3 of the sampled token, none of it in the reward; the loss carries β·mean_m k3(log π_θ, log π_ref) / s
    (GRPO's KL term, Shao et al. 2024, eq. 3-4), s being the scale whitening divided the advantages by.

    estimator: elementwise (`kl_k3`), differentiable in the current policy's log-probs. Scores as `SampledKL`.
    """

    def token_kl(self, logp, ref_logp, scored: dict, mask) -> tuple[torch.Tensor, torch.Tensor]:
        """(kl (B, R), 0 (B, R)): the estimator's value for the logs, nothing of it in the reward."""
        kl = self.estimator(logp, ref_logp) * mask
        return kl, torch.zeros_like(kl)

    def loss_term(self, logp, ref_logp, dist, ref_dist, mask, beta: float, advantage_scale) -> tuple[torch.Tensor, dict]:
        """(β·mean_m k3_t / s, {"kl": mean_m k3_t}) of the current policy's log-probs `logp` (B, R)."""
        kl = masked_mean(self.estimator(logp, ref_logp), mask)
        return beta * kl / advantage_scale, {"kl": kl}


KL_PENALTIES = {"k1": SampledKL(kl_k1), "k3": SampledKL(kl_k3), "exact": ExactKL()}
KL_IN_LOSS = {"k3": LossKL(kl_k3)}
KL_PLACEMENTS = ("reward", "loss")


def kl_penalty(estimator: str, placement: str = "reward"):
    """The penalty object of an estimator placed in the reward (`KL_PENALTIES`) or in the loss (`KL_IN_LOSS`);
    KeyError for a pair that has none."""
    return (KL_PENALTIES if placement == "reward" else KL_IN_LOSS)[estimator]
