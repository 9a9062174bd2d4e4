"""DPO, IPO and hinge losses, RLOO and GRPO advantages, loss aggregation: hand computations and closed forms."""

import math

import pytest
import torch

from tether.algos import (dpo_hinge_loss, dpo_implicit_reward, dpo_loss, grpo_advantages, ipo_loss, logratio_margin,
                          masked_aggregate, ppo_policy_loss, rloo_advantages)

# Two pairs. Pair 1: policy log-probs (−1, −3) for (chosen, rejected), reference (−2, −2) → h = (−1 + 2) − (−3 + 2) = 2.
# Pair 2: policy (−4, −1), reference (−3, −1) → h = (−4 + 3) − (−1 + 1) = −1.
CHOSEN, REJECTED = torch.tensor([-1.0, -4.0]), torch.tensor([-3.0, -1.0])
REF_CHOSEN, REF_REJECTED = torch.tensor([-2.0, -3.0]), torch.tensor([-2.0, -1.0])
PAIRS = (CHOSEN, REJECTED, REF_CHOSEN, REF_REJECTED)


def log_sigmoid(x):
    return -math.log1p(math.exp(-x))


def test_logratio_margin_and_implicit_rewards_by_hand():
    assert logratio_margin(*PAIRS).tolist() == [2.0, -1.0]
    # r̂ = β (log π − log π_ref), β = 0.5: chosen (0.5, −0.5), rejected (−0.5, 0)
    assert dpo_implicit_reward(CHOSEN, REF_CHOSEN, 0.5).tolist() == [0.5, -0.5]
    assert dpo_implicit_reward(REJECTED, REF_REJECTED, 0.5).tolist() == [-0.5, 0.0]


def test_dpo_loss_by_hand_with_and_without_label_smoothing():
    # β = 0.5: βh = (1, −0.5). L = mean −log σ(βh); with ε: −(1 − ε) log σ(βh) − ε log σ(−βh)
    plain = -(log_sigmoid(1.0) + log_sigmoid(-0.5)) / 2
    assert dpo_loss(*PAIRS, beta=0.5).item() == pytest.approx(plain)
    eps = 0.1
    smoothed = -sum((1 - eps) * log_sigmoid(z) + eps * log_sigmoid(-z) for z in (1.0, -0.5)) / 2
    assert dpo_loss(*PAIRS, beta=0.5, label_smoothing=eps).item() == pytest.approx(smoothed)


def test_dpo_gradient_is_the_closed_form():
    """∂L/∂log π(y_w) = −β σ(−βh) / B and ∂L/∂log π(y_l) = +β σ(−βh) / B (Rafailov et al. 2023, §4)."""
    chosen, rejected = CHOSEN.clone().requires_grad_(), REJECTED.clone().requires_grad_()
    dpo_loss(chosen, rejected, REF_CHOSEN, REF_REJECTED, beta=0.5).backward()
    weight = [0.5 * (1 / (1 + math.exp(z))) / 2 for z in (1.0, -0.5)]
    assert chosen.grad.tolist() == pytest.approx([-w for w in weight])
    assert rejected.grad.tolist() == pytest.approx(weight)


@pytest.mark.parametrize("beta,eps", [(0.5, 0.1), (2.0, 0.25)])
def test_dpo_optimum_on_two_pairs_is_the_closed_form(beta, eps):
    """A tabular policy over two responses y1, y2 of one prompt, trained by cDPO on the two pairs (y1 ≻ y2, y1 ≻ y2)
    labelled with smoothing ε. The optimum has σ(βh) = 1 − ε, i.e. π(y1)/π(y2) = π_ref(y1)/π_ref(y2) · ((1 − ε)/ε)^(1/β):
    the KL-regularised optimum π* ∝ π_ref exp(r/β) for the Bradley–Terry reward with P(y1 ≻ y2) = 1 − ε (eq. 4)."""
    ref_logits = torch.tensor([0.3, -0.2])
    logits = ref_logits.clone().requires_grad_()
    optimizer = torch.optim.LBFGS([logits], lr=1, max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-14)
    ref_logp = torch.log_softmax(ref_logits, 0)

    def closure():
        optimizer.zero_grad()
        logp = torch.log_softmax(logits, 0)
        chosen, rejected = logp[0].repeat(2), logp[1].repeat(2)
        loss = dpo_loss(chosen, rejected, ref_logp[0].repeat(2), ref_logp[1].repeat(2), beta, label_smoothing=eps)
        loss.backward()
        return loss

    optimizer.step(closure)
    logp = torch.log_softmax(logits.detach(), 0)
    expected = (ref_logp[0] - ref_logp[1]).item() + math.log((1 - eps) / eps) / beta
    assert (logp[0] - logp[1]).item() == pytest.approx(expected, abs=1e-4)


def test_ipo_loss_by_hand_and_its_optimum_margin():
    # (h − 1/(2β))², β = 0.5: ((2 − 1)² + (−1 − 1)²)/2 = 2.5; zero exactly at h = 1/(2β) = 1
    assert ipo_loss(*PAIRS, beta=0.5).item() == pytest.approx(2.5)
    at_optimum = (torch.tensor([0.0]), torch.tensor([-1.0]), torch.tensor([0.0]), torch.tensor([0.0]))
    assert ipo_loss(*at_optimum, beta=0.5).item() == 0.0


def test_hinge_loss_by_hand():
    # max(0, 1 − βh), β = 0.5: max(0, 1 − 1) = 0 and max(0, 1 + 0.5) = 1.5 → mean 0.75
    assert dpo_hinge_loss(*PAIRS, beta=0.5).item() == pytest.approx(0.75)


def test_preference_losses_reject_a_broadcasting_shape():
    with pytest.raises(ValueError, match="shapes must match"):
        dpo_loss(CHOSEN, REJECTED.reshape(2, 1), REF_CHOSEN, REF_REJECTED, beta=0.1)


def test_rloo_advantages_by_hand():
    # Two prompts, k = 3. Prompt 1 returns (1, 2, 6): baselines (2+6)/2 = 4, (1+6)/2 = 3.5, (1+2)/2 = 1.5.
    # Prompt 2 returns (0, 0, 3): baselines 1.5, 1.5, 0.
    scores = torch.tensor([1.0, 2.0, 6.0, 0.0, 0.0, 3.0])
    assert rloo_advantages(scores, 3).tolist() == [-3.0, -1.5, 4.5, -1.5, -1.5, 3.0]
    # = k/(k−1)·(R − mean): prompt 1's mean is 3 → 1.5·(−2, −1, 3)
    with pytest.raises(ValueError, match="at least 2 samples"):
        rloo_advantages(scores, 1)
    with pytest.raises(ValueError, match="groups of 4"):
        rloo_advantages(scores, 4)


def test_grpo_advantages_by_hand_with_and_without_the_std():
    # Prompt 1 returns (1, 2, 6): mean 3, unbiased std √((4 + 1 + 9)/2) = √7. Prompt 2 (5, 5, 5): all equal → 0.
    scores = torch.tensor([1.0, 2.0, 6.0, 5.0, 5.0, 5.0])
    s = math.sqrt(7)
    assert grpo_advantages(scores, 3, eps=0.0)[:3].tolist() == pytest.approx([-2 / s, -1 / s, 3 / s])
    assert grpo_advantages(scores, 3)[3:].tolist() == [0.0, 0.0, 0.0]
    assert grpo_advantages(scores, 3, scale=False).tolist() == [-2.0, -1.0, 3.0, 0.0, 0.0, 0.0]  # Dr. GRPO


MASK = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]])  # a 4-token and a 1-token response
X = torch.tensor([[1.0, 1.0, 1.0, 1.0], [8.0, 99.0, 99.0, 99.0]])


def test_loss_aggregations_by_hand():
    assert masked_aggregate(X, MASK, "token_mean").item() == pytest.approx(12 / 5)  # (4·1 + 8)/5 tokens
    assert masked_aggregate(X, MASK, "seq_mean").item() == pytest.approx((1 + 8) / 2)  # (mean 1, mean 8)/2 rows
    assert masked_aggregate(X, MASK, "constant", max_len=6).item() == pytest.approx(12 / (2 * 6))  # Σ/(B·L)
    with pytest.raises(ValueError, match="needs max_len"):
        masked_aggregate(X, MASK, "constant")
    with pytest.raises(ValueError, match="unknown aggregation"):
        masked_aggregate(X, MASK, "sum")


def test_constant_aggregation_weighs_every_token_alike_whatever_its_response_length():
    """Dr. GRPO's point: under seq_mean a token of the 1-token response weighs 4× one of the 4-token response."""
    logp = torch.zeros(2, 4, requires_grad=True)
    advantages = torch.ones(2, 4)
    for aggregation, grads in (("seq_mean", (1 / 8, 1 / 2)), ("constant", (1 / 8, 1 / 8))):
        logp.grad = None
        loss, _ = ppo_policy_loss(logp, torch.zeros(2, 4), advantages, MASK, 0.2, aggregation, max_len=4)
        loss.backward()
        assert (-logp.grad[0, 0].item(), -logp.grad[1, 0].item()) == pytest.approx(grads)
