"""KL estimators against exact KL on small categoricals; KL controllers; best-of-n KL."""

import math

import pytest
import torch

from tether.algos import (AdaptiveKLController, FixedKLController, best_of_n_kl, kl_exact, kl_k1, kl_k2, kl_k3,
                          kl_of_next_state)

PI = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
PI_REF_FAR = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
PI_REF_NEAR = torch.tensor([0.48, 0.31, 0.21], dtype=torch.float64)


def exact_kl(p, q):
    return (p * (p / q).log()).sum().item()


def monte_carlo_mean(estimator, p, q, n_samples=200_000, seed=0):
    samples = torch.multinomial(p, n_samples, replacement=True, generator=torch.Generator().manual_seed(seed))
    return estimator(p.log()[samples], q.log()[samples]).mean().item()


def test_estimators_by_hand():
    # π = ½, π_ref = ¼: k1 = ln 2, k2 = ½ ln² 2, r = ½ → k3 = (½ − 1) − ln ½ = ln 2 − ½
    logp, logp_ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    assert kl_k1(logp, logp_ref).item() == pytest.approx(math.log(2))
    assert kl_k2(logp, logp_ref).item() == pytest.approx(0.5 * math.log(2) ** 2)
    assert kl_k3(logp, logp_ref).item() == pytest.approx(math.log(2) - 0.5)


def test_exact_kl_of_the_test_distributions():
    # KL = ½ ln(0.5/0.2) + 0.3 ln 1 + 0.2 ln(0.2/0.5) = 0.3 ln 2.5 = 0.274887
    assert exact_kl(PI, PI_REF_FAR) == pytest.approx(0.3 * math.log(2.5))


@pytest.mark.parametrize("estimator", [kl_k1, kl_k3])
@pytest.mark.parametrize("pi_ref", [PI_REF_FAR, PI_REF_NEAR])
def test_k1_and_k3_are_unbiased(estimator, pi_ref):
    # exactly, as an expectation over the three outcomes ...
    expectation = (PI * estimator(PI.log(), pi_ref.log())).sum().item()
    assert expectation == pytest.approx(exact_kl(PI, pi_ref), rel=1e-9)
    # ... and as a Monte-Carlo mean of samples from π
    if pi_ref is PI_REF_FAR:  # the near KL (≈ 0.0011) is below the k1 sampling noise at 200k samples
        assert monte_carlo_mean(estimator, PI, pi_ref) == pytest.approx(exact_kl(PI, pi_ref), rel=0.03)


def test_exact_kl_is_the_expectation_of_k1_over_the_vocabulary():
    # logits are any shift of the log-probabilities: softmax(log p + c) = p
    logits, ref_logits = PI.log() + 3.0, PI_REF_FAR.log() - 1.0
    assert kl_exact(logits, ref_logits).item() == pytest.approx(0.3 * math.log(2.5), rel=1e-6)
    assert kl_exact(logits, logits).item() == 0.0
    # batched over (B, T, V) → (B, T), position by position
    batch = torch.stack([torch.stack([logits, ref_logits]), torch.stack([ref_logits, logits])])  # (2, 2, 3)
    out = kl_exact(batch, batch.flip(1))
    assert out.shape == (2, 2)
    assert out[0, 0].item() == pytest.approx(exact_kl(PI, PI_REF_FAR), rel=1e-6)
    assert out[0, 1].item() == pytest.approx(exact_kl(PI_REF_FAR, PI), rel=1e-6)


def test_exact_kl_gradient_is_the_gradient_of_kl():
    # d/dz_i KL(softmax z ‖ q) = p_i (log p_i − log q_i − KL), checked against autograd
    z = PI.log().clone().requires_grad_(True)
    kl = kl_exact(z, PI_REF_NEAR.log())
    kl.backward()
    expected = PI * (PI.log() - PI_REF_NEAR.log() - kl.item())
    torch.testing.assert_close(z.grad, expected)


def test_kl_of_next_state_shifts_within_the_response():
    kl = torch.tensor([[0.0, 0.1, 0.2, 0.3, 9.0],
                       [0.4, 0.5, 0.6, 0.7, 0.8]])
    mask = torch.tensor([[0, 1, 1, 1, 0],    # response of 3 tokens after a 1-token prompt, then padding
                         [1, 1, 1, 1, 1.]])  # a response that fills the row
    torch.testing.assert_close(kl_of_next_state(kl, mask), torch.tensor([[0.0, 0.2, 0.3, 0.0, 0.0],
                                                                         [0.5, 0.6, 0.7, 0.8, 0.0]]))


def test_k2_is_close_for_nearby_distributions_only():
    near = exact_kl(PI, PI_REF_NEAR)
    assert monte_carlo_mean(kl_k2, PI, PI_REF_NEAR) == pytest.approx(near, rel=0.05)
    # far apart k2 is biased: E[k2] = ½ (0.5 + 0.2) ln² 2.5 = 0.293850 against KL 0.274887 (+7%)
    far_expectation = (PI * kl_k2(PI.log(), PI_REF_FAR.log())).sum().item()
    assert far_expectation == pytest.approx(0.35 * math.log(2.5) ** 2)
    assert far_expectation > 1.05 * exact_kl(PI, PI_REF_FAR)


def test_k3_is_never_negative():
    generator = torch.Generator().manual_seed(0)
    logp = -30 * torch.rand(100_000, generator=generator)
    tiny = 1e-7 * torch.randn(100_000, generator=generator)
    for logp_ref in (-30 * torch.rand(100_000, generator=generator), logp + tiny, logp):
        assert (kl_k3(logp, logp_ref) >= 0).all()
    assert (kl_k3(logp, logp) == 0).all()


def test_fixed_controller_never_changes():
    controller = FixedKLController(0.05)
    for kl in (0.0, 1.0, 1e6):
        controller.update(kl, n_steps=512)
    assert controller.value == 0.05


@pytest.mark.parametrize(
    "current_kl, expected_beta",
    [
        # target 6, horizon 10 000, n_steps 256, β 0.1: β ← 0.1 (1 + e · 0.0256)
        (9.0, 0.1 * (1 + 0.2 * 0.0256)),  # e = 9/6 − 1 = 0.5, clipped to +0.2 → 0.100512
        (1.0, 0.1 * (1 - 0.2 * 0.0256)),  # e = 1/6 − 1 = −0.833, clipped to −0.2 → 0.099488
        (6.6, 0.1 * (1 + 0.1 * 0.0256)),  # e = 0.1, not clipped → 0.100256
        (5.4, 0.1 * (1 - 0.1 * 0.0256)),  # e = −0.1, not clipped → 0.099744
        (6.0, 0.1),  # on target: e = 0
    ],
)
def test_adaptive_controller_one_update_by_hand(current_kl, expected_beta):
    controller = AdaptiveKLController(init_beta=0.1, target=6.0, horizon=10_000)
    controller.update(torch.tensor(current_kl), n_steps=256)
    assert controller.value == pytest.approx(expected_beta, rel=1e-7)  # current_kl is float32


def test_controller_state_dict_round_trip():
    controller = AdaptiveKLController(init_beta=0.1, target=6.0, horizon=1_000)
    for kl in (9.0, 8.0, 2.0):
        controller.update(kl, n_steps=64)
    resumed = AdaptiveKLController(init_beta=0.1, target=6.0, horizon=1_000)
    resumed.load_state_dict(controller.state_dict())
    assert resumed.value == controller.value != 0.1
    controller.update(7.0, n_steps=64)
    resumed.update(7.0, n_steps=64)
    assert resumed.value == controller.value
    fixed = FixedKLController(0.3)
    fixed.load_state_dict(FixedKLController(0.7).state_dict())
    assert fixed.value == 0.7


def test_controllers_reject_bad_settings():
    with pytest.raises(ValueError, match="beta must be >= 0, got -0.1"):
        FixedKLController(-0.1)
    with pytest.raises(ValueError, match="target > 0, horizon > 0"):
        AdaptiveKLController(init_beta=0.1, target=0.0, horizon=100)


def test_best_of_n_kl():
    assert best_of_n_kl(1) == 0.0
    assert best_of_n_kl(2) == pytest.approx(math.log(2) - 0.5)  # 0.193147
    n = torch.arange(1, 129)
    kl = best_of_n_kl(n)
    assert (kl.diff() > 0).all()
    assert kl.tolist() == pytest.approx([best_of_n_kl(int(k)) for k in n])
    with pytest.raises(ValueError, match="n >= 1, got 0"):
        best_of_n_kl(0)
