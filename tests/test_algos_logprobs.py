"""Token log-probs (the shift, the temperature) and entropies."""

import math

import pytest
import torch

from tether.algos import entropy_from_logits, token_logprobs


def loop_token_logprobs(logits, input_ids, temperature=1.0):
    """The slow reference: for one sequence, the logit at t scores token t + 1."""
    return [
        torch.log_softmax(logits[t] / temperature, dim=-1)[input_ids[t + 1]].item()
        for t in range(len(input_ids) - 1)
    ]


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_token_logprobs_match_a_loop_over_each_sequence(temperature):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=generator, dtype=torch.float64)
    input_ids = torch.randint(0, 7, (2, 5), generator=generator)
    result = token_logprobs(logits, input_ids, temperature)
    assert result.shape == (2, 4)
    for row in range(2):
        assert result[row].tolist() == pytest.approx(loop_token_logprobs(logits[row], input_ids[row], temperature))


def test_token_logprobs_shift_by_hand():
    # V = 2, sequence 0 1 1. Logit row 0 (0, 1) scores token 1: log(e/(1 + e)) = 1 − log(1 + e).
    # Logit row 1 (0, 0) scores token 2 (= 1): log ½. Row 2 (5, −5) scores nothing.
    # Unshifted code would read row 0 at token 0 (−log(1 + e)) or row 2 at token 1 (≈ −10).
    logits = torch.tensor([[[0.0, 1.0], [0.0, 0.0], [5.0, -5.0]]])
    input_ids = torch.tensor([[0, 1, 1]])
    expected = [1 - math.log(1 + math.e), -math.log(2)]
    assert token_logprobs(logits, input_ids)[0].tolist() == pytest.approx(expected)


def test_temperature_divides_logits_by_hand():
    # Logits (0, 2 ln 2) at τ = 2 become (0, ln 2): p = (1/3, 2/3); token 1 → log(2/3).
    logits = torch.tensor([[[0.0, 2 * math.log(2)], [0.0, 0.0]]])
    input_ids = torch.tensor([[0, 1]])
    assert token_logprobs(logits, input_ids, temperature=2.0).item() == pytest.approx(math.log(2 / 3))


def test_token_logprobs_in_bfloat16_upcast_per_row():
    generator = torch.Generator().manual_seed(1)
    logits = 4 * torch.randn(2, 6, 50, generator=generator)
    input_ids = torch.randint(0, 50, (2, 6), generator=generator)
    low_precision = token_logprobs(logits.bfloat16(), input_ids)
    assert low_precision.dtype == torch.float32
    torch.testing.assert_close(low_precision, token_logprobs(logits.bfloat16().float(), input_ids))


def test_token_logprobs_rejects_non_positive_temperature():
    with pytest.raises(ValueError, match="temperature must be > 0, got 0"):
        token_logprobs(torch.zeros(1, 2, 3), torch.zeros(1, 2, dtype=torch.long), temperature=0)


def test_entropy_by_hand():
    uniform = torch.zeros(4)  # H = ln 4
    peaked = torch.log(torch.tensor([0.9, 0.1, 1e-30, 1e-30]))  # H ≈ −(0.9 ln 0.9 + 0.1 ln 0.1) = 0.325083
    one_hot = torch.tensor([0.0, -math.inf, -math.inf, -math.inf])  # H = 0, not NaN
    logits = torch.stack([uniform, peaked, one_hot]).reshape(1, 3, 4)
    entropy = entropy_from_logits(logits)
    assert entropy.shape == (1, 3)
    assert entropy[0].tolist() == pytest.approx([math.log(4), 0.325083, 0.0], abs=1e-5)
