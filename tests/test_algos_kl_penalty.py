"""The KL penalty objects: each estimator's part of the reward, its loss term and its cache, on hand-made tensors."""

import math

import pytest
import torch

from tether.algos import kl_exact, kl_k1, kl_k3, masked_mean, masked_var, masked_whiten
from tether.algos.kl_penalty import KL_IN_LOSS, KL_PENALTIES, ExactKL, LossKL, SampledKL, kl_penalty
from tether.algos.stats import masked_whiten_with_scale

MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
LOGP = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -1.2, -9.0]])
REF_LOGP = torch.tensor([[-1.5, -1.0, -0.5], [-0.2, -2.0, 4.0]])


def never():
    raise AssertionError("a sampled estimator must not build distributions")


def test_every_estimator_has_one_penalty():
    assert set(KL_PENALTIES) == {"k1", "k3", "exact"}
    assert KL_PENALTIES["k1"].estimator is kl_k1 and KL_PENALTIES["k3"].estimator is kl_k3
    assert isinstance(KL_PENALTIES["exact"], ExactKL)


@pytest.mark.parametrize("estimator", [kl_k1, kl_k3])
def test_sampled_kl_is_all_reward_and_has_no_loss_term(estimator):
    penalty = SampledKL(estimator)
    assert penalty.scoring_outputs(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), batch_bytes=0) == {}
    kl, in_reward = penalty.token_kl(LOGP, REF_LOGP, {}, MASK)
    torch.testing.assert_close(kl, estimator(LOGP, REF_LOGP) * MASK)
    assert torch.equal(in_reward, kl)
    assert kl[1, 2] == 0  # the padding after EOS
    assert penalty.loss_term(LOGP, REF_LOGP, never, never, MASK, beta=0.5, advantage_scale=torch.tensor(2.0)) == (0.0, {})


def test_exact_kl_rewards_the_next_state_and_keeps_the_reference_within_its_budget():
    dist, ref_dist = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0)), torch.zeros(2, 3, 4)
    penalty = ExactKL(ref_cache_bytes=2 * 3 * 4 * 4)
    kept = penalty.scoring_outputs(dist, ref_dist, batch_bytes=2 * 3 * 4 * 4)
    assert kept["ref_dist"] is ref_dist
    torch.testing.assert_close(kept["state_kl"], kl_exact(dist, ref_dist))
    assert "ref_dist" not in penalty.scoring_outputs(dist, ref_dist, batch_bytes=2 * 3 * 4 * 4 + 1)
    state_kl = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    kl, in_reward = penalty.token_kl(LOGP, REF_LOGP, {"state_kl": state_kl}, MASK)
    torch.testing.assert_close(kl, torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.0]]))
    torch.testing.assert_close(in_reward, torch.tensor([[0.2, 0.3, 0.0], [0.5, 0.0, 0.0]]))  # KL_{t+1}: fixed after a_t


def test_exact_kl_loss_term_is_beta_times_the_mean_kl_over_the_advantage_scale():
    dist, ref_dist = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(1)), torch.zeros(2, 3, 4)
    term, parts = ExactKL().loss_term(LOGP, REF_LOGP, lambda: dist, lambda: ref_dist, MASK, beta=0.5, advantage_scale=torch.tensor(2.0))
    mean_kl = masked_mean(kl_exact(dist, ref_dist), MASK)
    torch.testing.assert_close(parts["kl"], mean_kl)
    torch.testing.assert_close(term, 0.5 * mean_kl / 2.0)


def test_whitening_returns_the_scale_it_divided_by():
    x = torch.tensor([[1.0, 2.0, 4.0], [3.0, -1.0, 100.0]])
    whitened, scale = masked_whiten_with_scale(x, MASK)
    assert torch.equal(whitened, masked_whiten(x, MASK))
    assert torch.equal(scale, torch.sqrt(masked_var(x, MASK) + 1e-8))
    torch.testing.assert_close(whitened * scale, (x - masked_mean(x, MASK)) * MASK)


def test_k3_in_the_loss_is_no_reward_and_beta_times_its_mean_over_the_scale_in_the_loss():
    """GRPO's placement: the logged KL is k3, the reward holds none of it, the loss β·mean_m k3 / s (hand values)."""
    penalty = kl_penalty("k3", "loss")
    assert penalty is KL_IN_LOSS["k3"] and isinstance(penalty, LossKL) and kl_penalty("k3") is KL_PENALTIES["k3"]
    kl, in_reward = penalty.token_kl(LOGP, REF_LOGP, {}, MASK)
    torch.testing.assert_close(kl, kl_k3(LOGP, REF_LOGP) * MASK)
    assert torch.equal(in_reward, torch.zeros_like(kl))
    logp = torch.tensor([[0.0, -1.0, 0.0], [0.0, 0.0, 5.0]], requires_grad=True)
    ref = torch.tensor([[0.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])
    # k3 = e^(ref − logp) − (ref − logp) − 1 on the 5 masked tokens: 0, e − 2, 0, e^−1, 0
    term, parts = penalty.loss_term(logp, ref, never, never, MASK, beta=0.5, advantage_scale=torch.tensor(2.0))
    mean_k3 = (math.e - 2 + math.exp(-1)) / 5
    assert parts["kl"].item() == pytest.approx(mean_k3)
    assert term.item() == pytest.approx(0.5 * mean_k3 / 2.0)
    term.backward()
    assert logp.grad[1, 2] == 0  # the padding after EOS has no gradient
    with pytest.raises(KeyError):
        kl_penalty("k1", "loss")
