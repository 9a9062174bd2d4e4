"""KL estimators, KL-penalty controllers and the KL of best-of-n sampling.

The per-token estimators take log π(x_t) and log π_ref(x_t) of tokens sampled
from π and return one estimate of KL(π ‖ π_ref) per token (Schulman 2020,
"Approximating KL divergence"). Their sum over a response estimates the
sequence-level KL; they are elementwise, so any shape works.
"""

import math

import torch


def kl_k1(logp: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """k1 = log π − log π_ref = −log r, r = π_ref/π (Schulman 2020).

    Unbiased for KL(π ‖ π_ref) under x ~ π; single samples can be negative.
    """
    return logp - logp_ref


def kl_k2(logp: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """k2 = ½ (log π − log π_ref)² = ½ (log r)² (Schulman 2020).

    Never negative and of low variance; biased, but close to KL when π and π_ref
    are near (its expectation is an f-divergence that agrees with KL to second order).
    """
    return 0.5 * (logp - logp_ref) ** 2


def kl_k3(logp: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """k3 = (r − 1) − log r, r = π_ref/π = exp(log π_ref − log π) (Schulman 2020).

    Unbiased for KL(π ‖ π_ref) under x ~ π (E_π[r − 1] = 0) and never negative
    (log r ≤ r − 1). Written as expm1(d) − d, d = log r, to keep digits near 0.
    No clamp: d above ~88 overflows float32 to inf, which a NaN/inf check reports.
    """
    log_ratio = logp_ref - logp
    return torch.expm1(log_ratio) - log_ratio



def kl_exact(logits: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """KL(π(·|s_t) ‖ π_ref(·|s_t)) = Σ_v π(v) (log π(v) − log π_ref(v)) at each position, summed over the vocabulary.

    logits, ref_logits: (..., V) → (...). The conditional expectation of k1 given the
    state: summed over a sampled response it is an unbiased, lower-variance estimate of
    the sequence KL (Rao–Blackwellised k1), and it is differentiable in the policy's logits.
    """
    logp, logp_ref = torch.log_softmax(logits.float(), -1), torch.log_softmax(ref_logits.float(), -1)
    return (logp.exp() * (logp - logp_ref)).sum(-1)


def kl_of_next_state(kl: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """out_t = kl_{t+1}·mask_{t+1}, 0 in the last column: the exact KL that action t leads to.

    With exact per-state KLs in the reward, the return of action a_t holds the KL of
    the states after it; KL_t itself is fixed before a_t is drawn and its gradient
    enters the loss directly. (B, T) → (B, T).
    """
    nxt = (kl * mask)[:, 1:]
    return torch.cat([nxt, torch.zeros_like(kl[:, :1])], dim=1) * mask


class FixedKLController:
    """The KL coefficient β of r − β·KL, held constant (Ziegler et al. 2019)."""

    def __init__(self, beta: float):
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        self.value = float(beta)

    def update(self, current_kl, n_steps: int) -> None:
        """β never changes; the arguments match AdaptiveKLController.update."""

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])


class AdaptiveKLController:
    """β steered so the measured KL tracks a target (Ziegler et al. 2019, eq. 2):

        e = clip(KL / target − 1, −max_error, max_error)      (max_error = 0.2 in the paper)
        β ← β · (1 + e · n_steps / horizon)

    `current_kl` is the mean sequence-level KL of the last batch, `n_steps` the
    number of samples (episodes) it held.
    """

    def __init__(self, init_beta: float, target: float, horizon: float, max_error: float = 0.2):
        if init_beta < 0 or target <= 0 or horizon <= 0 or max_error <= 0:
            raise ValueError(
                f"need init_beta >= 0, target > 0, horizon > 0, max_error > 0; "
                f"got {init_beta}, {target}, {horizon}, {max_error}"
            )
        self.value, self.target = float(init_beta), float(target)
        self.horizon, self.max_error = float(horizon), float(max_error)

    def update(self, current_kl, n_steps: int) -> None:
        error = min(max(float(current_kl) / self.target - 1, -self.max_error), self.max_error)
        self.value *= 1 + error * n_steps / self.horizon

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])


def best_of_n_kl(n):
    """KL(π_bon ‖ π) = log n − (n − 1)/n for best-of-n sampling from π.

    An upper bound, exact when the n samples are distinct (Stiennon et al. 2020;
    Gao, Schulman & Hilton 2022). n: int (→ float) or tensor (elementwise). n = 1 gives 0.
    """
    if isinstance(n, torch.Tensor):
        n = n.double() if not n.is_floating_point() else n
        return torch.log(n) - (n - 1) / n
    if n < 1:
        raise ValueError(f"best-of-n needs n >= 1, got {n}")
    return math.log(n) - (n - 1) / n
