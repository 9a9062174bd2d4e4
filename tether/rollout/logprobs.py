"""Teacher-forced log-probs of a response: what PPO recomputes and what a rollout must agree with."""

import functools
import inspect

import torch

from tether.algos import token_logprobs
from tether.data.padding import position_ids_from_mask


@functools.cache
def _forward_parameters(model_class) -> frozenset[str]:
    return frozenset(inspect.signature(model_class.forward).parameters)


def forward_parameters(model) -> frozenset[str]:
    """The argument names of a model's forward (of the model a PEFT model wraps)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return _forward_parameters(type(base))


def accepts_logits_to_keep(model) -> bool:
    """Whether the causal LM can skip the LM head over some positions."""
    return "logits_to_keep" in forward_parameters(model)


def cache_argument(model) -> str | None:
    """The forward's key/value-cache argument: `cache` (recent transformers 5 releases), `past_key_values`
    (earlier ones; the old name warns in the new releases), or None for a model without one."""
    params = forward_parameters(model)
    return next((name for name in ("cache", "past_key_values") if name in params), None)


def lm_inputs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_start: int | None = None) -> dict:
    """Forward kwargs: position ids counted over real tokens (left padding safe) and, given the response's
    first column P, `logits_to_keep` = T − P + 1, so only positions P − 1 … T − 1 go through the LM head."""
    kwargs = {"input_ids": input_ids, "attention_mask": attention_mask,
              "position_ids": position_ids_from_mask(attention_mask)}
    if response_start is not None and accepts_logits_to_keep(model):
        kwargs["logits_to_keep"] = input_ids.shape[1] - response_start + 1
    return kwargs


def policy_forward(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   response_start: int | None = None) -> torch.Tensor:
    """Logits of a causal LM: (B, T) -> (B, T, V), or with `response_start` P only the rows that score
    the response, (B, T − P + 1, V) (all T rows where the model has no `logits_to_keep`).

    The LM head is a quarter of the FLOPs per token of the built-in world's model (width 128,
    vocabulary 1,019), so PPO skips it over the prompt (`bench/bench_ppo.py`: 4% per iteration).
    """
    return model(**lm_inputs(model, input_ids, attention_mask, response_start)).logits


def response_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, response_start: int, temperature: float) -> torch.Tensor:
    """log π(y_t | x, y_<t) of each response token under logits / temperature: (B, ·, V) -> (B, R).

    The logit at position t scores token t+1, so response tokens P … T−1 are scored by rows P−1 … T−2.
    `logits` holds all T rows or only the last R + 1 (`policy_forward(..., response_start)`): rows are
    counted from the end.
    """
    start = response_start - input_ids.shape[1] - 1  # row P − 1, counted from the end
    return token_logprobs(logits[:, start:], input_ids[:, start:], temperature)


def response_logits(logits: torch.Tensor, input_ids: torch.Tensor, response_start: int, temperature: float) -> torch.Tensor:
    """The distributions that score the response tokens, logits / temperature: (B, ·, V) -> (B, R, V).

    Row j is the logit at position P + j − 1, which scores response token j; `logits` holds all T
    rows or only the last R + 1, as for `response_logprobs`.
    """
    return logits[:, response_start - input_ids.shape[1] - 1:-1] / temperature


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
    logits = policy_forward(model, input_ids, attention_mask, response_start)  # (B, R + 1, V)
    return (response_logprobs(logits, input_ids, response_start, temperature),
            response_logits(logits, input_ids, response_start, temperature))
