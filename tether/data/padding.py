"""Padding and positions: the tensor layout every stage shares.

Scoring pads on the right (real tokens first, so position t is token t);
generation pads on the left (every prompt ends at the last column). Positions are
counted over real tokens only, so a row's logits do not depend on its padding.
"""

import torch


def pad_right(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention_mask), both LongTensor (B, T), T the longest length; pads after the tokens.

    >>> pad_right([[5, 6, 7], [8]], pad_id=0)
    (tensor([[5, 6, 7],
            [8, 0, 0]]), tensor([[1, 1, 1],
            [1, 0, 0]]))
    """
    width = max(len(s) for s in seqs)
    ids = torch.tensor([s + [pad_id] * (width - len(s)) for s in seqs], dtype=torch.long)
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], dtype=torch.long)
    return ids, mask


def pad_left(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention_mask), both LongTensor (B, T); pads before the tokens, for generation.

    >>> pad_left([[5, 6, 7], [8]], pad_id=0)
    (tensor([[5, 6, 7],
            [0, 0, 8]]), tensor([[1, 1, 1],
            [0, 0, 1]]))
    """
    width = max(len(s) for s in seqs)
    ids = torch.tensor([[pad_id] * (width - len(s)) + s for s in seqs], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], dtype=torch.long)
    return ids, mask


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) positions counted over real tokens only: cumsum(mask) − 1, and 0 on left padding.

    A left-padded prompt then gets the positions it has alone, so its logits do not
    depend on the batch it is in. E.g. mask (0, 0, 1, 1) → positions (0, 0, 0, 1).
    """
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)
