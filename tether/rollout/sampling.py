"""Drawing the next token: temperature, top-k / top-p filtering, inverse-CDF sampling.

`torch.multinomial` is slow on CPU for a (B, V) batch of small rows; drawing
u ~ U(0, 1] and finding the first index where the cumulative sum of the
probabilities reaches u·total (`torch.searchsorted`) samples the same
distribution with a few vectorised ops (DESIGN §7).
"""

import torch


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Logits (B, V) with every token below the k-th largest set to −inf (ties with it are kept); k = 0 keeps all."""
    if k == 0 or k >= logits.shape[-1]:
        return logits
    kth_largest = logits.topk(k, dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth_largest, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter (Holtzman et al. 2020): keep the smallest set of most probable tokens with mass ≥ p.

    Tokens sorted by probability, descending: a token is dropped when the mass of
    the tokens strictly before it already reaches p, so the token that crosses p
    is kept and the most probable token always is. p = 1 keeps all.
    E.g. probs (0.5, 0.3, 0.2), p = 0.6 keeps the first two; p = 0.5 keeps one.
    """
    if p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    sorted_probs = sorted_logits.softmax(-1)
    mass_before = sorted_probs.cumsum(-1) - sorted_probs  # (B, V)
    drop_sorted = mass_before >= p
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def inverse_cdf_sample(weights: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One index per row of non-negative, not necessarily normalised weights (B, V) → (B,).

    Index i is drawn with probability w_i / Σ w: with c = cumsum(w) and
    u ~ U(0, 1], it is the first i with c_i ≥ u·c_V. u > 0 means a zero-weight
    token (c_i = c_{i−1}) is never chosen, and u·c_V ≤ c_V means an index always exists.
    """
    cdf = weights.cumsum(-1)  # (B, V)
    u = 1.0 - torch.rand(cdf.shape[0], 1, generator=generator, device=cdf.device, dtype=cdf.dtype)
    return torch.searchsorted(cdf, u * cdf[:, -1:]).squeeze(-1)


def sample_next_token(logits: torch.Tensor, temperature: float, top_k: int, top_p: float,
                      generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw from softmax(filter(logits / τ)): (tokens (B,), log π(token) (B,)).

    The log-prob is under the untruncated softmax(logits / τ), the distribution
    PPO recomputes from a teacher-forced forward; top-k/top-p only restrict which
    tokens can be drawn. Half-precision logits (a bfloat16 model's) are upcast first: a cumulative sum
    over the vocabulary in bfloat16 keeps ~3 significant digits.
    """
    logits = logits.float()
    scaled = logits if temperature == 1.0 else logits / temperature
    logprobs = scaled.log_softmax(-1)  # (B, V)
    if top_k == 0 and top_p >= 1.0:
        weights = logprobs.exp()
    else:
        weights = top_p_filter(top_k_filter(scaled, top_k), top_p).softmax(-1)
    tokens = inverse_cdf_sample(weights, generator)
    return tokens, logprobs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
