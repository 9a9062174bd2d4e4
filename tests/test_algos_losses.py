"""Bradley–Terry and PPO losses against hand computations."""

import math

import pytest
import torch

from tether.algos import bradley_terry_accuracy, bradley_terry_loss, ppo_policy_loss, ppo_value_loss


def test_bradley_terry_loss_by_hand():
    # −log σ(1) = log(1 + e^−1) = 0.313262, −log σ(0) = log 2 = 0.693147
    loss = bradley_terry_loss(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0]))
    assert loss.item() == pytest.approx((math.log(1 + math.exp(-1)) + math.log(2)) / 2)


def test_margin_shifts_the_difference():
    # differences 1 − 1 = 0 and 0 − 1 = −1: mean(log 2, log(1 + e)) = mean(0.693147, 1.313262)
    r_chosen, r_rejected = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0])
    loss = bradley_terry_loss(r_chosen, r_rejected, margin=torch.tensor([1.0, 1.0]))
    assert loss.item() == pytest.approx((math.log(2) + math.log(1 + math.e)) / 2)
    assert bradley_terry_loss(r_chosen, r_rejected, margin=1.0).item() == pytest.approx(loss.item())


def test_bradley_terry_loss_is_finite_for_huge_differences():
    r_chosen = torch.tensor([1000.0, -1000.0], requires_grad=True)
    loss = bradley_terry_loss(r_chosen, torch.zeros(2))  # −log σ(1000) ≈ 0, −log σ(−1000) ≈ 1000
    loss.backward()
    assert loss.item() == pytest.approx(500.0)
    assert r_chosen.grad.tolist() == pytest.approx([0.0, -0.5])  # dL/dr = −(1 − σ(d))/B


def test_bradley_terry_loss_rejects_a_broadcasting_reward_head():
    with pytest.raises(ValueError, match=r"r_chosen \(2,\), r_rejected \(2, 1\)"):
        bradley_terry_loss(torch.zeros(2), torch.zeros(2, 1))


def test_bradley_terry_accuracy_counts_ties_as_half():
    # wins: 1 > 0 yes, 0 = 0 tie, 2 > 3 no, 3 > 1 yes → (1 + ½ + 0 + 1)/4
    accuracy = bradley_terry_accuracy(torch.tensor([1.0, 0.0, 2.0, 3.0]), torch.tensor([0.0, 0.0, 3.0, 1.0]))
    assert accuracy.item() == pytest.approx(0.625)


# Five response tokens, ε = 0.2, old log-prob 0 so ratio = exp(logp):
#   token  ratio  A    −Aρ    −A·clip(ρ)  max    clipped?  dL/dlogp = −Aρ/5 if not clipped
#   1      1.5   +1   −1.5   −1.2        −1.2   yes       0
#   2      0.5   −1   +0.5   +0.8        +0.8   yes       0
#   3      1.5   −1   +1.5   +1.2        +1.5   no        +0.3
#   4      0.5   +1   −0.5   −0.8        −0.5   no        −0.1
#   5      1.1   +2   −2.2   −2.2        −2.2   no        −0.44
# loss = (−1.2 + 0.8 + 1.5 − 0.5 − 2.2)/5 = −0.32, clipfrac = 2/5.
# Laid out as row 0 = tokens 1–3 then padding, row 1 = two prompt positions then tokens 4–5.
POLICY_MASK = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 0]])
POLICY_RATIO = torch.tensor([[1.5, 0.5, 1.5, 1.0, 1.0], [1.0, 1.0, 0.5, 1.1, 1.0]])
POLICY_ADVANTAGE = torch.tensor([[1.0, -1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 2.0, 0.0]])


def policy_loss_and_grad(logp, advantages):
    logp = logp.clone().requires_grad_(True)
    loss, stats = ppo_policy_loss(logp, torch.zeros_like(logp), advantages, POLICY_MASK, clip_eps=0.2)
    loss.backward()
    return loss, stats, logp.grad


def test_ppo_policy_loss_by_hand():
    loss, stats, grad = policy_loss_and_grad(torch.log(POLICY_RATIO), POLICY_ADVANTAGE)
    assert loss.item() == pytest.approx(-0.32)
    expected_grad = torch.tensor([[0.0, 0.0, 0.3, 0.0, 0.0], [0.0, 0.0, -0.1, -0.44, 0.0]])
    torch.testing.assert_close(grad, expected_grad)  # zero exactly where clipped, and off the mask
    assert stats["clipfrac"].item() == pytest.approx(0.4)
    assert stats["ratio_mean"].item() == pytest.approx((1.5 + 0.5 + 1.5 + 0.5 + 1.1) / 5)
    log_ratios = [math.log(r) for r in (1.5, 0.5, 1.5, 0.5, 1.1)]
    assert stats["approxkl"].item() == pytest.approx(sum(0.5 * x**2 for x in log_ratios) / 5)
    assert not any(value.requires_grad for value in stats.values())


def test_ppo_policy_loss_ignores_tokens_outside_the_mask():
    outside = ~POLICY_MASK.bool()
    garbage_logp = torch.where(outside, 200.0, torch.log(POLICY_RATIO))  # exp(200) overflows float32
    garbage_advantage = torch.where(outside, math.nan, POLICY_ADVANTAGE)
    loss, stats, grad = policy_loss_and_grad(garbage_logp, garbage_advantage)
    reference_loss, reference_stats, reference_grad = policy_loss_and_grad(torch.log(POLICY_RATIO), POLICY_ADVANTAGE)
    assert loss.item() == pytest.approx(reference_loss.item())
    torch.testing.assert_close(grad, reference_grad)
    for key in reference_stats:
        assert stats[key].item() == pytest.approx(reference_stats[key].item())


def test_ppo_policy_loss_with_no_advantage_is_never_clipped():
    # A = 0: both terms are 0, the clipped one is not "chosen".
    _, stats, _ = policy_loss_and_grad(torch.log(POLICY_RATIO), torch.zeros(2, 5))
    assert stats["clipfrac"].item() == 0.0


def test_ppo_value_loss_by_hand():
    # c = 0.2, old values 0, so V_clip = clip(V, −0.2, 0.2):
    #   token  V    R    V_clip  (V−R)²  (V_clip−R)²  max   clipped?  dL/dV = (V−R)/3 if not clipped
    #   1      1.0  1.0  0.2     0       0.64         0.64  yes       0
    #   2      1.0  0.0  0.2     1       0.04         1     no        1/3
    #   3      0.1  0.5  0.1     0.16    0.16         0.16  no        −0.4/3
    # loss = ½ (0.64 + 1 + 0.16)/3 = 0.3, vf_clipfrac = 1/3. Column 3 is padding with garbage.
    mask = torch.tensor([[1, 1, 1, 0]])
    values = torch.tensor([[1.0, 1.0, 0.1, 1e6]], requires_grad=True)
    old_values = torch.tensor([[0.0, 0.0, 0.0, math.inf]])
    returns = torch.tensor([[1.0, 0.0, 0.5, math.nan]])
    loss, stats = ppo_value_loss(values, old_values, returns, mask, clip_range=0.2)
    loss.backward()
    assert loss.item() == pytest.approx(0.3)
    assert stats["vf_clipfrac"].item() == pytest.approx(1 / 3)
    torch.testing.assert_close(values.grad, torch.tensor([[0.0, 1 / 3, -0.4 / 3, 0.0]]))
