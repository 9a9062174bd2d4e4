"""The PPO actor–critic: policy, value function and frozen reference in one module.

The value function is a separate critic initialised from the reward model, or a
value head on the policy's own trunk initialised from the reward model's head
(Ziegler et al. 2019; Huang et al. 2024), or none at all for the critic-free
methods (RLOO, GRPO), whose baseline is the other samples of the same prompt. The reference is a separate frozen
copy of the initial policy or, with LoRA, the policy with its adapter disabled.
"""

import copy

import torch

from tether.models.loading import enable_gradient_checkpointing, load_causal_lm
from tether.models.lora import apply_lora
from tether.models.reward import score_head, token_scores
from tether.models.value import PolicyWithValue
from tether.rollout import policy_forward


class ActorCritic(torch.nn.Module):
    """Policy logits and response-aligned values; the reference is a separate frozen model or the LoRA-disabled policy.

    policy: the causal LM being trained (a PEFT model when `ref` is None).
    ref: the frozen reference policy, or None to use `policy` with its LoRA adapter disabled.
    reward_model: the loaded reward model; the critic (value_model="critic") is a deep copy of it, the
        shared value head (value_model="shared") a copy of its scalar head when the widths match;
        value_model="none" keeps no value function (values are 0).
    """

    def __init__(self, policy, ref, reward_model, value_model: str):
        super().__init__()
        self.ref = ref
        self.has_values = value_model != "none"
        if value_model == "none":
            self.actor, self.critic = policy, None
        elif value_model == "shared":
            if reward_model.config.hidden_size == getattr(policy.config, "hidden_size", None):
                head = copy.deepcopy(score_head(reward_model)).float()  # value head initialised from the reward model's head
            else:
                head = None
            self.actor = PolicyWithValue(policy, head).to(next(policy.parameters()).device)
            self.critic = None
        else:
            # the critic, initialised from the reward model, is trained: float32 whatever the reward model's dtype
            self.actor, self.critic = policy, copy.deepcopy(reward_model).float().train()
        self.policy = policy

    @classmethod
    def load(cls, policy_dir, reward_model, device, *, ref_dir=None, value_model: str = "critic", lora_r: int = 0,
             lora_alpha: int = 16, ref_dtype: torch.dtype = torch.float32) -> "ActorCritic":
        """Load the policy (with a LoRA adapter of rank `lora_r` if > 0) and the reference (`ref_dir`, default the
        policy's directory; none with LoRA) in `ref_dtype`, and build the actor–critic around the already loaded
        `reward_model`."""
        policy = load_causal_lm(policy_dir, device, field="policy")
        if lora_r:
            return cls(apply_lora(policy, lora_r, lora_alpha, "CAUSAL_LM"), None, reward_model, value_model)
        ref = load_causal_lm(ref_dir or policy_dir, device, field="ref_policy", dtype=ref_dtype).requires_grad_(False)
        return cls(policy, ref, reward_model, value_model)

    def forward(self, sequences, attention_mask, response_start: int):
        """-> (logits of the rows that score the response (B, R + 1, V) as `policy_forward`,
        values V(s_t) of the state before each response token (B, R); 0 without a value function).

        sequences, attention_mask: (B, P + R), the response starting at column P = response_start.
        The value of response token j is read at position P + j − 1, the last token before it:
        values[:, P − 1:−1] of the per-position values (B, P + R).
        """
        if not self.has_values:
            logits = policy_forward(self.policy, sequences, attention_mask, response_start)
            return logits, logits.new_zeros(sequences.shape[0], sequences.shape[1] - response_start)
        if self.critic is None:
            logits, values = self.actor(sequences, attention_mask, response_start)
        else:
            logits = policy_forward(self.policy, sequences, attention_mask, response_start)
            values = token_scores(self.critic, sequences, attention_mask)
        # a copy, not a view: FSDP2 hooks the outputs for the backward, which an in-place op on a view would bypass
        return logits, values[:, response_start - 1:-1].clone()

    @torch.no_grad()
    def ref_logits(self, sequences, attention_mask, response_start: int):
        """The reference's logits, laid out as `policy_forward`'s (float32 whatever the reference's dtype)."""
        if self.ref is not None:
            return policy_forward(self.ref, sequences, attention_mask, response_start).float()
        with self.policy.disable_adapter():
            return policy_forward(self.policy, sequences, attention_mask, response_start)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.ref is not None:
            self.ref.eval()  # the reference stays frozen: no grad, eval mode
        return self

    def enable_gradient_checkpointing(self) -> None:
        """Recompute activations in the backward pass of the trained models: the policy and the critic."""
        for model in (self.policy, self.critic):
            if model is not None:
                enable_gradient_checkpointing(model)

    def trainable_parameters(self):
        return [p for p in self.parameters() if p.requires_grad]
