"""tether.algos: the math of RLHF as small pure tensor functions (DESIGN §9).

Tensors are (B, T) — batch, time. A `mask` is 1 on response tokens (through EOS)
and 0 elsewhere: prompt positions and the padding after EOS. Imports torch only.
"""

from tether.algos.advantages import gae, last_token_index, per_token_rewards
from tether.algos.kl import (AdaptiveKLController, FixedKLController, best_of_n_kl, kl_exact, kl_k1, kl_k2,
                              kl_k3, kl_of_next_state)
from tether.algos.logprobs import entropy_from_logits, token_logprobs
from tether.algos.losses import bradley_terry_accuracy, bradley_terry_loss, ppo_policy_loss, ppo_value_loss
from tether.algos.stats import explained_variance, masked_mean, masked_var, masked_whiten

__all__ = [
    "bradley_terry_loss",
    "bradley_terry_accuracy",
    "token_logprobs",
    "entropy_from_logits",
    "masked_mean",
    "masked_var",
    "masked_whiten",
    "explained_variance",
    "kl_k1",
    "kl_k2",
    "kl_k3",
    "kl_exact",
    "kl_of_next_state",
    "FixedKLController",
    "AdaptiveKLController",
    "best_of_n_kl",
    "last_token_index",
    "per_token_rewards",
    "gae",
    "ppo_policy_loss",
    "ppo_value_loss",
]
