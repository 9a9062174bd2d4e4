"""Statistics over the response tokens of a batch.

Tensors are (B, T); `mask` is 1 on response tokens (through EOS) and 0 on the
prompt and on the padding after EOS. Every statistic reads masked tokens only,
so values elsewhere — even inf or NaN — never change a result.
"""

import torch

from tether.algos.shapes import require_same_shape


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """mean_m(x) = Σ m_t·x_t / Σ m_t, over the tokens where mask is 1.

    x, mask: (B, T). dim=None averages every masked token of the batch (a scalar);
    dim=1 gives one mean per row, (B,). An empty mask gives NaN (0/0): there is
    nothing to average, and NaN is louder than an invented 0.
    """
    require_same_shape(x=x, mask=mask)
    total = torch.where(mask.bool(), x, 0).sum(dim)
    return total / mask.to(total.dtype).sum(dim)


LOSS_AGGREGATIONS = ("token_mean", "seq_mean", "constant")


def masked_aggregate(x: torch.Tensor, mask: torch.Tensor, aggregation: str = "token_mean",
                     max_len: int | None = None) -> torch.Tensor:
    """A per-token loss x (B, T) reduced to a scalar over the masked tokens, m = mask, n_b = Σ_t m_bt:

        token_mean: Σ_bt m·x / Σ_bt m          every token one vote (PPO here; DAPO, Yu et al. 2025)
        seq_mean:   1/B Σ_b (Σ_t m·x / n_b)    every sequence one vote (GRPO, Shao et al. 2024, eq. 3)
        constant:   Σ_bt m·x / (B · max_len)   a fixed normaliser (Dr. GRPO, Liu et al. 2025, eq. 3):
                                               no length bias in the gradient

    max_len (the generation budget) is needed by "constant" only.
    """
    if aggregation == "token_mean":
        return masked_mean(x, mask)
    if aggregation == "seq_mean":
        return masked_mean(x, mask, dim=1).mean()
    if aggregation == "constant":
        if max_len is None:
            raise ValueError('aggregation "constant" needs max_len')
        require_same_shape(x=x, mask=mask)
        return torch.where(mask.bool(), x, 0).sum() / (x.shape[0] * max_len)
    raise ValueError(f"unknown aggregation {aggregation!r}; known: {', '.join(LOSS_AGGREGATIONS)}")


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Var_m(x) = mean_m((x − mean_m x)²), times n/(n − 1) if unbiased (Bessel), n = Σ m.

    x, mask: (B, T) → scalar, over all masked tokens of the batch. Raises
    ValueError when there are too few masked tokens (0, or 1 when unbiased).
    """
    n = mask.to(x.dtype).sum()
    if n < (2 if unbiased else 1):
        raise ValueError(f"masked_var needs at least {2 if unbiased else 1} masked tokens, got {int(n)}")
    variance = masked_mean((x - masked_mean(x, mask)) ** 2, mask)
    return variance * n / (n - 1) if unbiased else variance


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """x̂ = (x − μ) / √(σ² + eps), μ and σ² over masked tokens (unbiased σ², as TRL).

    With shift_mean=False the mean is added back, x̂ = (x − μ)/√(σ² + eps) + μ
    (TRL and Ziegler et al. 2019 whiten rewards so). x, mask: (B, T) → (B, T),
    0 where mask is 0.
    """
    return masked_whiten_with_scale(x, mask, shift_mean, eps)[0]


def masked_whiten_with_scale(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True,
                             eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor]:
    """(x̂ of `masked_whiten`, s = √(σ² + eps)): the whitened tensor and the scale it was divided by.

    s converts other terms into the whitened units (PPO's exact-KL loss term is divided by it).
    x, mask: (B, T) → ((B, T), scalar).
    """
    mean, variance = masked_mean(x, mask), masked_var(x, mask)
    whitened = (x - mean) * torch.rsqrt(variance + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask.bool(), whitened, 0), torch.sqrt(variance + eps)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """EV = 1 − Var_m[R − V] / Var_m[R] over masked tokens (logged by CleanRL's PPO).

    values, returns, mask: (B, T) → scalar. 1 is a perfect critic, 0 no better
    than a constant, below 0 worse. NaN when the returns do not vary (as CleanRL).
    """
    require_same_shape(values=values, returns=returns)
    unexplained = masked_var(returns - values, mask, unbiased=False)
    return 1 - unexplained / masked_var(returns, mask, unbiased=False)
