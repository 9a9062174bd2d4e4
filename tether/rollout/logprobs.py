"""Teacher-forced log-probs of a response: what PPO recomputes and what a rollout must agree with."""

import torch

from tether.algos import token_logprobs
from tether.rollout.masks import position_ids_from_mask


def policy_forward(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Logits of a causal LM with positions counted over real tokens (left padding safe): (B, T) -> (B, T, V)."""
    return model(input_ids=input_ids, attention_mask=attention_mask,
                 position_ids=position_ids_from_mask(attention_mask)).logits


def response_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, response_start: int, temperature: float) -> torch.Tensor:
    """log π(y_t | x, y_<t) of each response token under logits / temperature: (B, T, V) -> (B, R).

    The logit at position t scores token t+1, so response tokens P … T−1 are scored by rows P−1 … T−2.
    """
    return token_logprobs(logits[:, response_start - 1:], input_ids[:, response_start - 1:], temperature)


def response_logits(logits: torch.Tensor, response_start: int, temperature: float) -> torch.Tensor:
    """The distributions that score the response tokens, logits / temperature: (B, T, V) -> (B, R, V).

    Row j is the logit at position P + j − 1, which scores response token j.
    """
    return logits[:, response_start - 1:-1] / temperature


def sequence_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_start: int,
                      temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward over prompt + response: (log-probs (B, R), logits / temperature (B, R, V)).

    input_ids, attention_mask: (B, P + R) as `Rollout.sequences` / `.attention_mask`,
    prompts LEFT-padded so the response starts at column `response_start` = P.
    The logit at position t scores token t + 1, so response token j is scored by
    the logits at P + j − 1: logprob_j = log_softmax(z_{P+j−1} / τ)[x_{P+j}]
    (`tether.algos.token_logprobs`). Position ids are cumsum(mask) − 1, as during
    sampling, so left padding does not change the result. The returned logits are
    divided by τ (the sampling distribution, e.g. for its entropy). Log-probs are
    not masked: multiply by attention_mask[:, P:] to drop the padding after EOS.
    Runs with gradients when the caller has them on.
    """
    if not 0 < response_start < input_ids.shape[1]:
        raise ValueError(f"response_start must be in [1, {input_ids.shape[1] - 1}], got {response_start}")
    logits = policy_forward(model, input_ids, attention_mask)  # (B, P+R, V)
    return (response_logprobs(logits, input_ids, response_start, temperature),
            response_logits(logits, response_start, temperature))
