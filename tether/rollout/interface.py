"""What every rollout engine takes and returns: `SamplingConfig` → `Rollout`.

An engine is anything with `generate(model, prompt_ids, cfg, generator) -> Rollout`
(`RolloutEngine`), so a faster one (vLLM, a compiled loop) can replace the
default `TorchSampler` without touching PPO (DESIGN §7).
"""

from dataclasses import dataclass
from typing import Protocol

import torch

from tether.errors import InputError


@dataclass(kw_only=True)
class SamplingConfig:
    """How to sample a response: a plain, keyword-only dataclass (stage configs carry their own fields).

    max_new_tokens: the most tokens a response may have, EOS included.
    temperature: logits are divided by it before softmax; > 0 (greedy is top_k=1).
    top_k: keep the k most probable tokens; 0 keeps all.
    top_p: nucleus sampling, keep the smallest set of most probable tokens whose
        probability sums to ≥ top_p (Holtzman et al. 2020); 1.0 keeps all.
    eos_token_id: the token that ends a response.
    pad_token_id: written after EOS and left of short prompts (may equal eos_token_id).
    """

    max_new_tokens: int = 32
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    eos_token_id: int
    pad_token_id: int

    def __post_init__(self):
        checks = [
            (self.max_new_tokens >= 1, "max_new_tokens", f"must be ≥ 1, got {self.max_new_tokens}"),
            (self.temperature > 0, "temperature", f"must be > 0 (use top_k=1 for greedy), got {self.temperature}"),
            (self.top_k >= 0, "top_k", f"must be ≥ 0 (0 keeps all tokens), got {self.top_k}"),
            (0 < self.top_p <= 1, "top_p", f"must be in (0, 1], got {self.top_p}"),
        ]
        for ok, field, message in checks:
            if not ok:
                raise InputError(message, field=field)


@dataclass
class Rollout:
    """A batch of sampled responses. B = batch, P = longest prompt, R = longest response.

    prompt_ids: (B, P) LEFT-padded with pad_token_id; prompt_mask (B, P) is 1 on real tokens.
    response_ids: (B, R) sampled tokens, pad_token_id after EOS; R ≤ max_new_tokens
        (sampling stops once every row has emitted EOS).
    response_mask: (B, R) 1 on response tokens through the first EOS (inclusive), 0 after.
    logprobs: (B, R) log π(token) = log_softmax(logits / temperature)[token], the
        untruncated distribution: top-k/top-p only choose which tokens may be drawn.
        PPO recomputes log-probs from logits / temperature (`sequence_logprobs`),
        and the two must agree for the importance ratio to start at 1. 0 where
        response_mask is 0.
    ended_with_eos: (B,) False when the response hit max_new_tokens without EOS
        (see `no_eos_penalty` for the rule that scores such responses).
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    logprobs: torch.Tensor
    ended_with_eos: torch.Tensor

    @property
    def sequences(self) -> torch.Tensor:
        """(B, P + R) prompt then response; the response starts at column P."""
        return torch.cat([self.prompt_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        """(B, P + R) 1 on real prompt tokens and on response tokens through EOS."""
        return torch.cat([self.prompt_mask, self.response_mask], dim=1)


class RolloutEngine(Protocol):
    def generate(self, model, prompt_ids: list[list[int]], cfg: SamplingConfig,
                 generator: torch.Generator | None = None) -> Rollout:
        """Sample one response per prompt (token-id lists, unpadded) from `model` in its current mode."""
        ...
