"""Length-sorted, trimmed chunks: the same numbers as one padded pass, on fewer columns."""

import pytest
import torch

from tether.rollout import (SamplingConfig, TorchSampler, length_sorted_chunks, over_length_chunks, policy_forward,
                            response_logprobs, trim_padding)
from test_rollout import EOS, PAD, PROMPTS, tiny_gpt2


def test_trim_padding_keeps_the_columns_some_row_needs():
    ids = torch.tensor([[0, 0, 7, 8, 0, 0],
                        [0, 5, 6, 9, 4, 0]])
    mask = torch.tensor([[0, 0, 1, 1, 0, 0],
                         [0, 1, 1, 1, 1, 0]])
    seqs, attn, start, width = trim_padding(ids, mask, response_start=3)
    assert (start, width) == (2, 2)
    assert seqs.tolist() == [[0, 7, 8, 0], [5, 6, 9, 4]]
    assert attn.tolist() == [[0, 1, 1, 0], [1, 1, 1, 1]]


def test_length_sorted_chunks_sort_stably_and_cut():
    rows = torch.tensor([4, 0, 2, 3, 1])
    lengths = torch.tensor([5, 1, 5, 2, 3])
    chunks = length_sorted_chunks(rows, lengths, 2)
    assert [c.tolist() for c in chunks] == [[1, 3], [4, 0], [2]]  # lengths (1, 2), (3, 5), (5): ties keep their order


@pytest.fixture(scope="module")
def rollout():
    model = tiny_gpt2(eos_bias=2.0)
    cfg = SamplingConfig(max_new_tokens=8, eos_token_id=EOS, pad_token_id=PAD)
    rollout = TorchSampler().generate(model, PROMPTS * 2, cfg, torch.Generator().manual_seed(0))
    lengths = rollout.response_mask.sum(1)
    assert lengths.min() < lengths.max(), "the test needs responses of different lengths"
    return model, rollout


@pytest.mark.parametrize("chunk_size", [1, 3, 8])
def test_chunked_pass_equals_one_padded_pass(rollout, chunk_size):
    """Per-row and per-token outputs come back in row order, equal to the full-width pass; zeros past each chunk."""
    model, r = rollout
    seqs, attn, P = r.sequences, r.attention_mask, r.prompt_ids.shape[1]
    with torch.no_grad():
        full = response_logprobs(policy_forward(model, seqs, attn), seqs, P, 0.7)

        def fn(s, a, p, rows):
            return {"logp": response_logprobs(policy_forward(model, s, a), s, p, 0.7), "rows": torch.tensor(rows)}

        out = over_length_chunks(fn, seqs, attn, P, chunk_size)
    mask = r.response_mask.bool()
    assert out["rows"].tolist() == list(range(len(seqs)))
    assert out["logp"].shape == full.shape
    torch.testing.assert_close(out["logp"][mask], full[mask], atol=1e-5, rtol=0)
    if chunk_size == 1:
        assert torch.all(out["logp"][~mask] == 0)  # a row alone is cut to its own length
