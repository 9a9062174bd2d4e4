"""tether.algos: the math of RLHF as small pure tensor functions (DESIGN §9).

Tensors are (B, T) — batch, time. A `mask` is 1 on response tokens (through EOS)
and 0 elsewhere: prompt positions and the padding after EOS. Imports torch only.
"""

from tether.algos.advantages import gae, grpo_advantages, last_token_index, per_token_rewards, rloo_advantages
from tether.algos.kl import (AdaptiveKLController, FixedKLController, best_of_n_kl, kl_exact, kl_k1, kl_k2,
                              kl_k3, kl_of_next_state)
from tether.algos.logprobs import entropy_from_logits, token_logprobs
from tether.algos.losses import bradley_terry_accuracy, bradley_terry_loss, ppo_policy_loss, ppo_value_loss
from tether.algos.preference import dpo_hinge_loss, dpo_implicit_reward, dpo_loss, ipo_loss, logratio_margin
from tether.algos.stats import explained_variance, masked_aggregate, masked_mean, masked_var, masked_whiten

__all__ = [
    "bradley_terry_loss",
    "bradley_terry_accuracy",
    "token_logprobs",
    "entropy_from_logits",
    "masked_mean",
    "masked_var",
    "masked_whiten",
    "masked_aggregate",
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
    "rloo_advantages",
    "grpo_advantages",
    "logratio_margin",
    "dpo_implicit_reward",
    "dpo_loss",
    "ipo_loss",
    "dpo_hinge_loss",
]
