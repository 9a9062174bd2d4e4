"""RLOO and GRPO in PPO's loop (`--advantage rloo|grpo`): grouping, advantages, KL placement, resume (issue 20)."""

import pytest
import torch

import tether.pipelines.ppo as ppo
from tether.algos import grpo_advantages, kl_k3, rloo_advantages
from tether.data import encode_prompt, read_prompts
from tether.errors import InputError
from tether.models import ActorCritic, load_tokenizer
from tether.pipelines.ppo import PromptStream, group_prompts, make_experience, run_ppo
from tether.pipelines.scoring import RewardFunction
from tether.rollout import SamplingConfig, TorchSampler
from tether.runlog import read_metrics
from test_ppo import config, training_rows


def test_group_prompts_lists_each_prompt_k_times_in_a_row():
    stream, again = PromptStream(5, seed=3), PromptStream(5, seed=3)
    assert group_prompts(stream, 6, 3) == [i for i in again.take(2) for _ in range(3)]
    assert group_prompts(PromptStream(5, seed=3), 4, 1) == PromptStream(5, seed=3).take(4)  # PPO's stream as before


@pytest.mark.parametrize("kw,match", [
    (dict(advantage="rloo"), "group_size"),
    (dict(advantage="grpo", group_size=3), "not a multiple of group_size"),
    (dict(advantage="reinforce"), "advantage"),
    (dict(kl_placement="loss", kl_estimator="k1"), "kl_estimator"),
    (dict(loss_aggregation="sum"), "loss_aggregation"),
])
def test_bad_critic_free_settings_are_input_errors(tiny_dirs, tmp_path, kw, match):
    with pytest.raises(InputError, match=match):
        config(tiny_dirs, tmp_path, **kw)


def grouped_experience(tiny_dirs, tmp_path, **kw):
    cfg = config(tiny_dirs, tmp_path, group_size=2, **kw)
    tokenizer = load_tokenizer(cfg.policy)
    reward_fn = RewardFunction([cfg.reward_model], tokenizer, "cpu")
    torch.manual_seed(0)
    model = ActorCritic.load(cfg.policy, reward_fn.model, "cpu", value_model="none")
    prompts = [r.prompt for r in read_prompts(cfg.prompts) for _ in range(2)]
    sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens, eos_token_id=tokenizer.eos_token_id,
                              pad_token_id=tokenizer.pad_token_id)
    rollout = TorchSampler().generate(model.policy, [encode_prompt(tokenizer, p) for p in prompts], sampling,
                                      torch.Generator().manual_seed(0))
    # Move the policy off the reference so that the KL is not 0.
    with torch.no_grad():
        for p in model.policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return cfg, make_experience(model, reward_fn, rollout, prompts, [""] * len(prompts), 0.3, cfg)


def test_rloo_advantage_is_the_leave_one_out_return_on_every_response_token(tiny_dirs, tmp_path):
    cfg, exp = grouped_experience(tiny_dirs, tmp_path, advantage="rloo", whiten_advantages=False, kl_estimator="k1")
    mask = exp.response_mask
    returns = exp.scores - 0.3 * exp.kl.sum(1)  # the KL in the reward: R = score − β Σ_t k1_t
    torch.testing.assert_close(exp.returns[:, 0], returns)
    torch.testing.assert_close(exp.advantages, rloo_advantages(returns, 2).unsqueeze(1) * mask)
    assert torch.equal(exp.old_values, torch.zeros_like(exp.old_values))  # no value function


def test_grpo_with_k3_in_the_loss_keeps_the_kl_out_of_the_reward(tiny_dirs, tmp_path):
    cfg, exp = grouped_experience(tiny_dirs, tmp_path, advantage="grpo", kl_estimator="k3", kl_placement="loss")
    mask = exp.response_mask
    torch.testing.assert_close(exp.kl, kl_k3(exp.old_logprobs, exp.ref_logprobs) * mask)
    assert exp.kl.sum() > 0
    torch.testing.assert_close(exp.returns[:, 0], exp.scores)  # only the score: the KL is in the loss
    torch.testing.assert_close(exp.advantages, grpo_advantages(exp.scores, 2).unsqueeze(1) * mask)  # not whitened


@pytest.mark.parametrize("method", [dict(advantage="rloo", kl_estimator="k1"),
                                    dict(advantage="grpo", kl_estimator="k3", kl_placement="loss")])
def test_critic_free_run_trains_without_a_value_function_and_resumes_to_the_same_metrics(tiny_dirs, tmp_path, method,
                                                                                         monkeypatch):
    """End to end: no critic's weights in the model or the checkpoint, no value metrics; a run stopped after its
    third checkpoint and resumed equals the uninterrupted one, metric for metric and weight for weight."""
    kw = dict(group_size=4, steps=6, save_every=1, **method)
    run_ppo(config(tiny_dirs, tmp_path, out=str(tmp_path / "full"), **kw))
    rows = training_rows(tmp_path / "full")
    trained = [r for r in rows if "loss/policy" in r]
    assert len(trained) == 6 and not any("loss/value" in r or "val/explained_variance" in r for r in rows)
    assert ("loss/kl" in trained[0]) == (method.get("kl_placement") == "loss")
    checkpoint = torch.load(tmp_path / "full" / "checkpoints" / "last.pt", weights_only=False)
    assert not any(k.startswith(("critic.", "actor.value")) for k in checkpoint["model"])

    save = ppo.save_checkpoint

    def save_then_die(path, step, *args):
        save(path, step, *args)
        if step == 3:
            raise KeyboardInterrupt  # the process is stopped right after its third checkpoint

    monkeypatch.setattr(ppo, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_ppo(config(tiny_dirs, tmp_path, out=str(tmp_path / "killed"), **kw))
    monkeypatch.setattr(ppo, "save_checkpoint", save)
    run_ppo(config(tiny_dirs, tmp_path, out=str(tmp_path / "killed"), resume=True, **kw))
    assert training_rows(tmp_path / "killed") == rows
    model = lambda d: (tmp_path / d / "model" / "model.safetensors").read_bytes()
    assert model("killed") == model("full")


def test_ppo_with_k3_in_the_loss_has_the_same_meaning_of_beta(tiny_dirs, tmp_path):
    """The placement is PPO's option too: the KL term is in the loss and none of it in the rewards."""
    run_ppo(config(tiny_dirs, tmp_path, kl_estimator="k3", kl_placement="loss", steps=2))
    rows = [r for r in read_metrics(tmp_path / "ppo" / "metrics.jsonl") if "loss/policy" in r]
    assert all("loss/kl" in r and "loss/value" in r for r in rows)
