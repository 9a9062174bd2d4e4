"""Per-token log-probabilities and entropies from a causal LM's logits."""

import torch
import torch.nn.functional as F


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log π(x_{t+1} | x_≤t) = z_{t, x_{t+1}}/τ − logsumexp_v(z_{t, v}/τ): the logit at t scores token t+1.

    logits: (B, T, V), input_ids: (B, T) → (B, T − 1); entry t is the log-prob of
    input_ids[:, t + 1], so a response mask over input_ids is sliced mask[:, 1:].
    No (B, T − 1, V) log-softmax is kept: gather and logsumexp give (B, T − 1)
    directly (τ ≠ 1 costs one scaled copy of the logits). Half precision is
    upcast one row at a time (TRL's selective_log_softmax), since logsumexp in
    bf16 loses digits; the result is then float32. Use the sampling temperature τ.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits = logits[:, :-1] if temperature == 1.0 else logits[:, :-1] / temperature
    targets = input_ids[:, 1:].unsqueeze(-1)  # (B, T-1, 1)
    if logits.dtype in (torch.float32, torch.float64):
        return logits.gather(-1, targets).squeeze(-1) - logits.logsumexp(-1)
    rows = [F.log_softmax(row.float(), -1).gather(-1, row_targets) for row, row_targets in zip(logits, targets)]
    return torch.stack(rows).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """H(p) = −Σ_v p_v log p_v = logsumexp(z) − Σ_v p_v z_v, with p = softmax(z).

    logits: (B, T, V) → (B, T), in nats. Logits of −inf (filtered tokens) have
    p_v = 0 and add nothing.
    """
    probs = torch.softmax(logits, -1)
    expected_logit = torch.where(probs > 0, probs * logits, 0).sum(-1)
    return logits.logsumexp(-1) - expected_logit
