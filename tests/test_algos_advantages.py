"""Where the score lands, and GAE over response tokens only."""

import pytest
import torch

from tether.algos import gae, last_token_index, per_token_rewards


def test_last_token_index_reads_the_mask():
    mask = torch.tensor(
        [
            [1, 1, 0, 0],  # response ends early, padding after EOS
            [0, 1, 1, 1],  # prompt first, response runs to the last column
            [0, 0, 1, 0],  # prompt, one-token response, padding
        ]
    )
    assert last_token_index(mask).tolist() == [1, 3, 2]
    assert last_token_index(mask.bool()).tolist() == last_token_index(mask.float()).tolist() == [1, 3, 2]


def test_last_token_index_rejects_a_row_without_response():
    with pytest.raises(ValueError, match=r"empty rows: \[1\]"):
        last_token_index(torch.tensor([[1, 0], [0, 0]]))


def test_per_token_rewards_by_hand():
    # β = 0.5. Row 0: response at columns 0–1, padding at 2–3 → score 2 lands at column 1, not 2.
    # Row 1: prompt at column 0, response at 1–2, padding at 3 → score −1 lands at column 2.
    scores = torch.tensor([2.0, -1.0])
    kl = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8]])
    mask = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 0]])
    expected = torch.tensor(
        [
            [-0.05, -0.1 + 2.0, 0.0, 0.0],  # −β·kl, then −β·kl + score
            [0.0, -0.3, -0.35 - 1.0, 0.0],  # prompt 0, −β·kl, −β·kl + score, padding 0
        ]
    )
    torch.testing.assert_close(per_token_rewards(scores, kl, 0.5, mask), expected)


def test_per_token_rewards_with_a_full_row():
    rewards = per_token_rewards(torch.tensor([3.0]), torch.zeros(1, 3), 0.1, torch.ones(1, 3))
    assert rewards.tolist() == [[0.0, 0.0, 3.0]]


def loop_gae(rewards, values, mask, gamma, lam):
    """The slow reference: per row, per masked step, with V = A = 0 after the response."""
    batch, steps = len(mask), len(mask[0])
    advantages = [[0.0] * steps for _ in range(batch)]
    for b in range(batch):
        for t in reversed(range(steps)):
            if not mask[b][t]:
                continue
            continues = t + 1 < steps and mask[b][t + 1]
            next_value = values[b][t + 1] if continues else 0.0
            next_advantage = advantages[b][t + 1] if continues else 0.0
            delta = rewards[b][t] + gamma * next_value - values[b][t]
            advantages[b][t] = delta + gamma * lam * next_advantage
    returns = [[advantages[b][t] + values[b][t] if mask[b][t] else 0.0 for t in range(steps)] for b in range(batch)]
    return advantages, returns


def random_response_mask(batch, steps, generator):
    """Each row: a prompt of 0..steps−1 zeros, a response of ≥ 1 ones, then padding zeros."""
    mask = torch.zeros(batch, steps, dtype=torch.long)
    for row in range(batch):
        start = int(torch.randint(0, steps, (1,), generator=generator))
        length = int(torch.randint(1, steps - start + 1, (1,), generator=generator))
        mask[row, start : start + length] = 1
    mask[0], mask[1] = 0, 0
    mask[0, 2:5] = 1  # starts after the first column and ends before the last
    mask[1, :] = 1  # the whole row
    return mask


@pytest.mark.parametrize("gamma, lam", [(1.0, 0.95), (0.9, 0.5), (0.99, 0.0)])
def test_gae_matches_a_plain_loop(gamma, lam):
    generator = torch.Generator().manual_seed(0)
    rewards = torch.randn(8, 7, generator=generator, dtype=torch.float64)
    values = torch.randn(8, 7, generator=generator, dtype=torch.float64)
    mask = random_response_mask(8, 7, generator)
    advantages, returns = gae(rewards, values, mask, gamma, lam)
    expected_advantages, expected_returns = loop_gae(rewards.tolist(), values.tolist(), mask.tolist(), gamma, lam)
    torch.testing.assert_close(advantages, torch.tensor(expected_advantages, dtype=torch.float64))
    torch.testing.assert_close(returns, torch.tensor(expected_returns, dtype=torch.float64))


def test_gae_by_hand_with_gamma_and_lambda_one():
    # γ = λ = 1 telescopes to A_t = Σ_{k≥t} r_k − V_t, with nothing after the last response token.
    # Row 0: response 0–2, padding with value 100 at 3 (must not leak into A_2 = 2 + 0 − 0.5).
    #   A = (3 − 0.5, 3 − 0.5, 2 − 0.5, 0), R = A + V = (3, 3, 2, 0)
    # Row 1: prompt at 0 (reward 9, value 7 ignored), response 1–3.
    #   A_3 = 1 − 0.5 = 0.5, A_2 = 1 − 1 = 0, A_1 = 2 − 0 = 2; R = (0, 2, 1, 1)
    rewards = torch.tensor([[0.0, 1.0, 2.0, 5.0], [9.0, 1.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.5, 0.5, 100.0], [7.0, 0.0, 1.0, 0.5]])
    mask = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1]])
    advantages, returns = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    torch.testing.assert_close(advantages, torch.tensor([[2.5, 2.5, 1.5, 0.0], [0.0, 2.0, 0.0, 0.5]]))
    torch.testing.assert_close(returns, torch.tensor([[3.0, 3.0, 2.0, 0.0], [0.0, 2.0, 1.0, 1.0]]))


def test_gae_ignores_everything_outside_the_mask():
    generator = torch.Generator().manual_seed(1)
    rewards, values = torch.randn(6, 5, generator=generator), torch.randn(6, 5, generator=generator)
    mask = random_response_mask(6, 5, generator)
    advantages, returns = gae(rewards, values, mask, gamma=0.9, lam=0.95)
    outside = ~mask.bool()
    assert (advantages[outside] == 0).all() and (returns[outside] == 0).all()
    changed_values = torch.where(outside, 1e6, values)
    changed_rewards = torch.where(outside, -1e6, rewards)
    changed_advantages, changed_returns = gae(changed_rewards, changed_values, mask, gamma=0.9, lam=0.95)
    torch.testing.assert_close(changed_advantages, advantages)
    torch.testing.assert_close(changed_returns, returns)


def test_gae_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"values \(2, 3\), mask \(2, 4\)"):
        gae(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, 4), gamma=1.0, lam=1.0)
