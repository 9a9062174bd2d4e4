"""The policy with a value head on its own trunk (shared-trunk actor-critic)."""

from torch import nn

from tether.rollout.logprobs import lm_inputs


class PolicyWithValue(nn.Module):
    """A causal LM plus a linear value head on its last hidden state.

    `value_head` may be initialised from a reward model's scalar head (same trunk
    shape), as in Ziegler et al. 2019 / Huang et al. 2024.
    """

    def __init__(self, policy: nn.Module, value_head: nn.Linear | None = None):
        super().__init__()
        self.policy = policy
        hidden = policy.config.hidden_size if hasattr(policy.config, "hidden_size") else policy.config.n_embd
        self.value_head = value_head if value_head is not None else nn.Linear(hidden, 1)

    def forward(self, input_ids, attention_mask, response_start: int | None = None):
        """-> (logits (B, T, V), or (B, T − P + 1, V) from `response_start` P as `policy_forward`; values (B, T))."""
        out = self.policy(**lm_inputs(self.policy, input_ids, attention_mask, response_start), output_hidden_states=True)
        values = self.value_head(out.hidden_states[-1]).squeeze(-1)
        return out.logits, values
