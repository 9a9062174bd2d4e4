"""Masked statistics: hand values, and values outside the mask never matter."""

import math

import pytest
import torch

from tether.algos import explained_variance, masked_mean, masked_var, masked_whiten

# Row 0: prompt at column 0, response 2, 3.  Row 1: response 4, padding after.
X = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
MASK = torch.tensor([[0, 1, 1], [1, 0, 0]])


def with_garbage_outside_mask(x, mask, garbage):
    return torch.where(mask.bool(), x, garbage)


def test_masked_mean_hand_values():
    assert masked_mean(X, MASK).item() == pytest.approx(3.0)  # (2 + 3 + 4) / 3
    assert masked_mean(X, MASK, dim=1).tolist() == pytest.approx([2.5, 4.0])  # (2 + 3)/2, 4/1


@pytest.mark.parametrize("garbage", [1e6, math.inf, math.nan])
def test_masked_mean_ignores_values_outside_mask(garbage):
    x = with_garbage_outside_mask(X, MASK, garbage)
    assert masked_mean(x, MASK).item() == pytest.approx(3.0)
    assert masked_mean(x, MASK, dim=1).tolist() == pytest.approx([2.5, 4.0])


def test_masked_mean_accepts_bool_and_float_masks():
    assert masked_mean(X, MASK.bool()).item() == masked_mean(X, MASK.float()).item() == pytest.approx(3.0)


def test_masked_mean_rejects_broadcasting_shapes():
    with pytest.raises(ValueError, match=r"shapes must match: x \(2, 3\), mask \(2, 1\)"):
        masked_mean(X, torch.ones(2, 1))


def test_masked_var_hand_values():
    # masked values 2, 3, 4: mean 3, squared deviations 1 + 0 + 1 = 2
    assert masked_var(X, MASK).item() == pytest.approx(2 / 2)  # unbiased: / (n − 1)
    assert masked_var(X, MASK, unbiased=False).item() == pytest.approx(2 / 3)
    assert masked_var(with_garbage_outside_mask(X, MASK, 1e6), MASK).item() == pytest.approx(1.0)


def test_masked_var_needs_enough_tokens():
    one_token = torch.tensor([[0, 1, 0], [0, 0, 0]])
    with pytest.raises(ValueError, match="at least 2 masked tokens, got 1"):
        masked_var(X, one_token)
    with pytest.raises(ValueError, match="at least 1 masked tokens, got 0"):
        masked_var(X, torch.zeros(2, 3), unbiased=False)


def test_masked_whiten_hand_values():
    # mean 3, unbiased variance 1 → (x − 3)/1 on the response; 0 on prompt and padding
    expected = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]])
    torch.testing.assert_close(masked_whiten(X, MASK), expected)
    # shift_mean=False adds the mean back: (x − 3)/1 + 3 = x on the response
    expected_unshifted = torch.tensor([[0.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    torch.testing.assert_close(masked_whiten(X, MASK, shift_mean=False), expected_unshifted)


def test_masked_whiten_ignores_values_outside_mask():
    expected = masked_whiten(X, MASK)
    torch.testing.assert_close(masked_whiten(with_garbage_outside_mask(X, MASK, 1e6), MASK), expected)


def test_masked_whiten_gives_zero_mean_unit_variance_on_masked_tokens():
    generator = torch.Generator().manual_seed(0)
    x = 5 + 3 * torch.randn(4, 6, generator=generator)
    mask = torch.tensor([[0, 1, 1, 1, 0, 0]] * 4)
    whitened = masked_whiten(x, mask)
    assert masked_mean(whitened, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert masked_var(whitened, mask).item() == pytest.approx(1.0, rel=1e-5)


def test_explained_variance_hand_values():
    returns = torch.tensor([[1.0, 2.0, 3.0, 99.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    perfect = returns.clone()
    constant = torch.tensor([[2.0, 2.0, 2.0, -5.0]])
    reversed_order = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    assert explained_variance(perfect, returns, mask).item() == pytest.approx(1.0)
    # R − V = (−1, 0, 1): Var 2/3 = Var R → 1 − 1 = 0
    assert explained_variance(constant, returns, mask).item() == pytest.approx(0.0, abs=1e-7)
    # R − V = (−2, 0, 2): Var 8/3; Var R = 2/3 → 1 − 4 = −3
    assert explained_variance(reversed_order, returns, mask).item() == pytest.approx(-3.0)
