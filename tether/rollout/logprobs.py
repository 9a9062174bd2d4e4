"""Teacher-forced log-probs of a response: what PPO recomputes and what a rollout must agree with."""

import torch

from tether.algos import token_logprobs
from tether.rollout.masks import position_ids_from_mask


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
    logits = model(input_ids=input_ids, attention_mask=attention_mask,
                   position_ids=position_ids_from_mask(attention_mask)).logits  # (B, P+R, V)
    scored = logits[:, response_start - 1:]  # (B, R+1, V): the last position scores nothing
    logprobs = token_logprobs(scored, input_ids[:, response_start - 1:], temperature)  # (B, R)
    return logprobs, scored[:, :-1] / temperature
