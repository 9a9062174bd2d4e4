"""Teacher-forced passes over a rollout in chunks of similar length, each cut to the columns it needs.

A rollout batch is padded to its longest prompt (on the left) and its longest
response (on the right); on the built-in world about 60% of its positions are
padding. Sorting rows by length and trimming each chunk to its own widths
removes most of that work and changes the logits only by float rounding: the
dropped columns carry mask 0, so positions (cumsum of the mask) and attention are as before.
"""

import torch
import torch.nn.functional as F


def trim_padding(sequences: torch.Tensor, attention_mask: torch.Tensor,
                 response_start: int) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Drop the columns that are padding in every row: (sequences, attention_mask, response_start, response_width).

    sequences, attention_mask: (B, P + R), prompts LEFT-padded so the response starts at
    column P = response_start, responses right-padded. Keeps the columns
    [P − longest prompt, P + longest response), so the new response start is the
    longest prompt's length. E.g. mask rows (0 0 1 | 1 0 0) and (0 1 1 | 1 1 0)
    → (1 0 | 1 0) and (1 1 | 1 1), response start 2, response width 2.
    """
    prompt_width = int(attention_mask[:, :response_start].sum(1).max())
    response_width = int(attention_mask[:, response_start:].sum(1).max())
    cols = slice(response_start - prompt_width, response_start + response_width)
    return sequences[:, cols], attention_mask[:, cols], prompt_width, response_width


def length_sorted_chunks(rows: torch.Tensor, lengths: torch.Tensor, chunk_size: int) -> list[torch.Tensor]:
    """`rows` ordered by `lengths[rows]` (a stable sort) and cut into chunks of `chunk_size`: similar lengths pad little."""
    return list(rows[torch.argsort(lengths[rows], stable=True)].split(chunk_size))


def pad_response_width(x: torch.Tensor, width: int) -> torch.Tensor:
    """(b,) unchanged; (b, R', …) zero-padded on the right of dim 1 to (b, width, …)."""
    if x.dim() < 2:
        return x
    return F.pad(x, [0, 0] * (x.dim() - 2) + [0, width - x.shape[1]])


def over_length_chunks(fn, sequences: torch.Tensor, attention_mask: torch.Tensor, response_start: int,
                       chunk_size: int) -> dict[str, torch.Tensor]:
    """Run `fn` on length-sorted, trimmed chunks of the batch and put its outputs back in row order.

    fn(sequences, attention_mask, response_start, rows) -> {name: (b,) per row or (b, R', …) per response
    token}, where `rows` lists the chunk's row indices (ints) and R' is its response width. Returns
    {name: (B,) or (B, R, …)} with R = sequences.shape[1] − response_start, zeros past each
    chunk's width (which the response mask is 0 on).
    """
    width = sequences.shape[1] - response_start
    rows = torch.arange(len(sequences), device=sequences.device)
    chunks = length_sorted_chunks(rows, attention_mask.sum(1), chunk_size)
    outputs = [fn(*trim_padding(sequences[c], attention_mask[c], response_start)[:3], c.tolist()) for c in chunks]
    inverse = torch.argsort(torch.cat(chunks))
    return {k: torch.cat([pad_response_width(o[k], width) for o in outputs])[inverse] for k in outputs[0]}
