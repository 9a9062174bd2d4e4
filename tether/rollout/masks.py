"""Padding, positions and the end-of-response rules shared by every engine."""

import torch

from tether.data.padding import pad_left
from tether.errors import InputError


def left_pad(prompt_ids: list[list[int]], pad_token_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-id lists → (ids (B, P), mask (B, P)), LEFT-padded so every prompt ends at column P − 1.

    >>> left_pad([[5, 6], [7]], pad_token_id=0)[0].tolist()
    [[5, 6], [0, 7]]
    """
    if not prompt_ids:
        raise InputError("no prompts to sample from", field="prompt_ids")
    for i, ids in enumerate(prompt_ids):
        if len(ids) == 0:
            raise InputError(f"prompt {i} is empty (a response needs at least one prompt token)", field="prompt_ids")
    ids, mask = pad_left([list(ids) for ids in prompt_ids], pad_token_id)
    return ids.to(device), mask.to(device)


def truncate_after_eos(response_ids: torch.Tensor, eos_token_id: int,
                       pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cut each response at its first EOS: (ids, mask, ended_with_eos).

    response_ids: (B, R) as sampled. mask_t = 1 while no EOS came strictly before t,
    so the first EOS itself is kept (mask 1) and everything after it becomes
    pad_token_id with mask 0. ended_with_eos: (B,) whether any EOS was emitted.
    E.g. eos = 2: (5, 2, 7) → ids (5, 2, pad), mask (1, 1, 0), ended True.
    """
    is_eos = response_ids == eos_token_id  # (B, R)
    eos_before = is_eos.cumsum(-1) - is_eos.long()
    mask = (eos_before == 0).long()
    ids = response_ids.masked_fill(mask == 0, pad_token_id)
    return ids, mask, is_eos.any(-1)


def no_eos_penalty(scores: torch.Tensor, ended_with_eos: torch.Tensor, penalty: float | None) -> torch.Tensor:
    """The rule for responses that hit max_new_tokens without EOS: score ← penalty.

    scores, ended_with_eos: (B,). When `penalty` is a number (e.g. −1.0), every
    response with ended_with_eos False gets its reward-model score replaced by it,
    so the policy learns to finish its answers instead of being scored on a
    truncated text (the "missing EOS penalty" of Huang et al. 2024, "The N+
    Implementation Details of RLHF with PPO", arXiv:2403.17031, §7). penalty None keeps
    every score as it is (the truncated response is scored like any other).
    Returns a new tensor; `scores` is not modified.
    """
    if penalty is None:
        return scores.clone()
    return torch.where(ended_with_eos, scores, torch.full_like(scores, penalty))
