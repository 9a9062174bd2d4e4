"""PPO's implementation details (DESIGN §3, Huang et al. 2024), each a test that fails if its bug returns."""

import dataclasses
import math
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tether.data import encode_prompt, read_prompts
from tether.errors import InputError, RunError
from tether.models import ActorCritic, load_causal_lm, load_reward_model, load_tokenizer, score_head
from tether.pipelines.ppo import PPOConfig, epoch_minibatches, make_experience, minibatch_loss, ppo_update, run_ppo
from tether.pipelines.scoring import RewardFunction
from tether.rollout import SamplingConfig, TorchSampler, policy_forward
from tether.runlog import read_metrics


def config(tiny_dirs, tmp_path, **kw):
    base = dict(policy=str(tiny_dirs["policy"]), reward_model=str(tiny_dirs["rm"]), prompts=str(tiny_dirs["prompts"]),
                out=str(tmp_path / "ppo"), steps=3, batch_size=8, minibatch_size=4, micro_batch_size=2,
                max_new_tokens=6, eval_every=0, eval_samples=8, save_every=0, device="cpu", lr=1e-3)
    return PPOConfig(**{**base, **kw})


def actor_critic(cfg, reward_fn=None):
    """The actor–critic `run_ppo` builds, around the reward function's (or a fresh) reward model."""
    reward_fn = reward_fn or RewardFunction([cfg.reward_model], load_tokenizer(cfg.policy), "cpu")
    return ActorCritic.load(cfg.policy, reward_fn.model, "cpu", ref_dir=cfg.ref_policy, value_model=cfg.value_model,
                            lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha)


def experience(tiny_dirs, tmp_path, temperature=1.0, **kw):
    cfg = config(tiny_dirs, tmp_path, temperature=temperature, **kw)
    tokenizer = load_tokenizer(cfg.policy)
    reward_fn = RewardFunction([cfg.reward_model], tokenizer, "cpu")
    torch.manual_seed(0)
    model = actor_critic(cfg, reward_fn)
    prompts = [r.prompt for r in read_prompts(cfg.prompts)] * 2
    sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=temperature,
                              eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    rollout = TorchSampler().generate(model.policy, [encode_prompt(tokenizer, p) for p in prompts], sampling,
                                      torch.Generator().manual_seed(0))
    exp = make_experience(model, reward_fn, rollout, prompts, [""] * len(prompts), cfg.beta, cfg)
    return cfg, model, rollout, exp


@pytest.mark.parametrize("temperature,estimator", [(1.0, "exact"), (0.7, "exact"), (1.0, "k1"), (0.7, "k3")])
def test_recomputed_logprobs_equal_rollout_logprobs_and_kl_is_zero_at_start(tiny_dirs, tmp_path, temperature, estimator):
    """Log-probs from logits / temperature equal the sampler's: the first ratio is 1; π = π_ref so KL is exactly 0."""
    _, _, rollout, exp = experience(tiny_dirs, tmp_path, temperature, kl_estimator=estimator)
    mask = exp.response_mask.bool()
    torch.testing.assert_close(exp.old_logprobs[mask], rollout.logprobs[mask], atol=1e-5, rtol=0)
    assert torch.equal(exp.kl, torch.zeros_like(exp.kl))


@pytest.mark.parametrize("estimator", ["exact", "k1"])
def test_experience_tensors_have_the_documented_shapes(tiny_dirs, tmp_path, estimator):
    cfg, model, rollout, exp = experience(tiny_dirs, tmp_path, kl_estimator=estimator)
    (B, P), R, V = rollout.prompt_ids.shape, rollout.response_ids.shape[1], model.policy.config.vocab_size
    assert exp.sequences.shape == exp.attention_mask.shape == (B, P + R) and exp.prompt_len == P
    for name in ("response_mask", "old_logprobs", "ref_logprobs", "old_values", "entropy", "kl", "rewards",
                 "advantages", "returns"):
        assert getattr(exp, name).shape == (B, R), name
    for name in ("raw_scores", "scores", "score_std"):
        assert getattr(exp, name).shape == (B,), name
    assert exp.advantage_scale.shape == () and exp.beta == cfg.beta
    if estimator == "exact":  # kept within the cache budget for the loss term
        assert exp.ref_dist.shape == (B, R, V)
    else:
        assert exp.ref_dist is None


def test_first_minibatch_ratio_is_one(tiny_dirs, tmp_path):
    cfg, model, _, exp = experience(tiny_dirs, tmp_path)
    _, parts = minibatch_loss(model.train(), exp, torch.arange(4), cfg)
    assert abs(parts["ratio_mean"].item() - 1) < 1e-5 and parts["clipfrac"].item() == 0


def test_score_is_added_at_the_last_real_response_token(tiny_dirs, tmp_path):
    _, _, rollout, exp = experience(tiny_dirs, tmp_path)
    last = rollout.response_mask.sum(1) - 1
    for b in range(len(last)):
        # KL is 0 at the start, so the only non-zero reward is the score at the last real token.
        assert exp.rewards[b, last[b]].item() == pytest.approx(exp.scores[b].item(), abs=1e-6)
        assert torch.count_nonzero(exp.rewards[b]) <= 1


def test_padding_after_eos_never_touches_rewards_advantages_or_loss(tiny_dirs, tmp_path):
    cfg, model, rollout, exp = experience(tiny_dirs, tmp_path)
    assert (rollout.response_mask == 0).any(), "the test needs a response that ended before the longest"
    changed = rollout.response_ids.masked_fill(rollout.response_mask == 0, 7)
    rollout2 = type(rollout)(**{**rollout.__dict__, "response_ids": changed})
    tokenizer = load_tokenizer(cfg.policy)
    reward_fn = RewardFunction([cfg.reward_model], tokenizer, "cpu")
    prompts = [""] * len(changed)
    exp2 = make_experience(model, reward_fn, rollout2, prompts, prompts, cfg.beta, cfg)
    for key in ("old_logprobs", "old_values", "rewards", "advantages", "returns", "kl"):
        torch.testing.assert_close(getattr(exp2, key) * exp.response_mask, getattr(exp, key) * exp.response_mask, msg=key)
    idx = torch.arange(8)
    torch.testing.assert_close(minibatch_loss(model, exp2, idx, cfg)[0], minibatch_loss(model, exp, idx, cfg)[0])


def test_scoring_in_length_sorted_chunks_equals_one_pass(tiny_dirs, tmp_path):
    """micro_batch_size cuts the scoring pass into trimmed chunks: the experience is the one of a single full pass."""
    _, _, rollout, whole = experience(tiny_dirs, tmp_path, minibatch_size=8, micro_batch_size=8)
    _, _, _, chunked = experience(tiny_dirs, tmp_path, minibatch_size=8, micro_batch_size=1)
    lengths = rollout.response_mask.sum(1)
    assert lengths.min() < lengths.max(), "the test needs responses of different lengths"
    mask = whole.response_mask
    for key in ("old_logprobs", "old_values", "ref_logprobs", "entropy", "kl", "rewards", "advantages", "returns"):
        torch.testing.assert_close(getattr(chunked, key) * mask, getattr(whole, key) * mask, atol=1e-5, rtol=0, msg=key)
    torch.testing.assert_close(chunked.raw_scores, whole.raw_scores, atol=1e-5, rtol=0)
    torch.testing.assert_close(chunked.ref_dist[mask.bool()], whole.ref_dist[mask.bool()], atol=1e-5, rtol=0)


def test_gradient_accumulation_over_micro_batches_equals_one_batch(tiny_dirs, tmp_path):
    """One minibatch of 8 in one pass or in 4 length-sorted, trimmed micro-batches: the same update."""
    weights = {}
    for micro in (8, 2):
        cfg, model, _, exp = experience(tiny_dirs, tmp_path, minibatch_size=8, micro_batch_size=micro, ppo_epochs=1)
        optimizer = torch.optim.SGD(model.trainable_parameters(), lr=1.0)
        ppo_update(model, optimizer, exp, cfg, torch.Generator().manual_seed(0), step=0)
        weights[micro] = [p.detach().clone() for p in model.trainable_parameters()]
    moved = any(not torch.equal(a, b) for a, b in zip(weights[8], actor_critic(cfg).trainable_parameters()))
    assert moved
    for a, b in zip(weights[8], weights[2]):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_reference_is_frozen_and_never_changes(tiny_dirs, tmp_path):
    cfg, model, rollout, exp = experience(tiny_dirs, tmp_path)
    before = {k: v.clone() for k, v in model.ref.state_dict().items()}
    optimizer = torch.optim.Adam(model.trainable_parameters(), lr=1e-2)
    ppo_update(model, optimizer, exp, cfg, torch.Generator().manual_seed(0), step=0)
    assert not model.ref.training and all(not p.requires_grad for p in model.ref.parameters())
    for k, v in model.ref.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not torch.equal(model.policy.transformer.wte.weight, model.ref.transformer.wte.weight)


def test_lora_reference_is_the_adapter_disabled_base_model(tiny_dirs, tmp_path):
    cfg, model, rollout, exp = experience(tiny_dirs, tmp_path, lora_r=4)
    base = load_causal_lm(tiny_dirs["policy"])
    seqs, attn = exp.sequences, exp.attention_mask
    optimizer = torch.optim.Adam(model.trainable_parameters(), lr=1e-2)
    ppo_update(model, optimizer, exp, cfg, torch.Generator().manual_seed(0), step=0)
    with torch.no_grad():
        P = exp.prompt_len
        expected = policy_forward(base, seqs, attn, P)
        torch.testing.assert_close(model.ref_logits(seqs, attn, P), expected, atol=1e-5, rtol=0)
        assert not torch.allclose(policy_forward(model.policy, seqs, attn, P), expected, atol=1e-4)


def test_value_head_is_initialised_from_the_reward_model(tiny_dirs, tmp_path):
    model = actor_critic(config(tiny_dirs, tmp_path, value_model="shared"))
    rm = load_reward_model(tiny_dirs["rm"])
    torch.testing.assert_close(model.actor.value_head.weight, score_head(rm).weight)
    critic = actor_critic(config(tiny_dirs, tmp_path, value_model="critic"))
    torch.testing.assert_close(score_head(critic.critic).weight, score_head(rm).weight)


def test_the_reward_model_is_loaded_once_and_the_critic_is_a_copy_of_it(tiny_dirs, tmp_path, monkeypatch):
    from transformers import AutoModelForSequenceClassification
    loads = []
    load = AutoModelForSequenceClassification.from_pretrained
    monkeypatch.setattr(AutoModelForSequenceClassification, "from_pretrained",
                        lambda *args, **kwargs: loads.append(args[0]) or load(*args, **kwargs))
    run_ppo(config(tiny_dirs, tmp_path, steps=1, value_model="critic"))
    assert len(loads) == 1, loads
    cfg = config(tiny_dirs, tmp_path)
    reward_fn = RewardFunction([cfg.reward_model], load_tokenizer(cfg.policy), "cpu")
    critic = actor_critic(cfg, reward_fn).critic
    assert not {p.data_ptr() for p in critic.parameters()} & {p.data_ptr() for p in reward_fn.model.parameters()}


def test_dropout_is_off_in_every_model(tiny_dirs, tmp_path):
    from transformers import AutoConfig
    cfg_dir = tmp_path / "dropout_policy"
    policy = load_causal_lm(tiny_dirs["policy"])
    policy.config.resid_pdrop = policy.config.attn_pdrop = policy.config.embd_pdrop = 0.5
    policy.save_pretrained(cfg_dir)
    load_tokenizer(tiny_dirs["policy"]).save_pretrained(cfg_dir)
    assert AutoConfig.from_pretrained(cfg_dir).resid_pdrop == 0.5
    model = actor_critic(config(tiny_dirs, tmp_path, policy=str(cfg_dir))).train()
    assert all(m.p == 0 for m in model.modules() if isinstance(m, torch.nn.Dropout))


def test_fresh_shuffle_every_epoch():
    g = torch.Generator().manual_seed(0)
    first, second = torch.cat(epoch_minibatches(16, 4, g)), torch.cat(epoch_minibatches(16, 4, g))
    assert sorted(first.tolist()) == sorted(second.tolist()) == list(range(16))
    assert not torch.equal(first, second)


def training_rows(out):
    """The metrics rows without what differs from run to run (timings, peak memory)."""
    return [{k: v for k, v in r.items() if not k.startswith(("time/", "memory/"))} for r in read_metrics(out / "metrics.jsonl")]


def test_seeded_runs_are_reproducible(tiny_dirs, tmp_path):
    a = run_ppo(config(tiny_dirs, tmp_path, out=str(tmp_path / "a")))
    b = run_ppo(config(tiny_dirs, tmp_path, out=str(tmp_path / "b")))
    assert training_rows(tmp_path / "a") == training_rows(tmp_path / "b")
    assert a["proxy_reward"] == b["proxy_reward"]
    assert (tmp_path / "a" / "model" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model" / "model.safetensors").read_bytes()


def ppo_command(tiny_dirs, out, steps, *extra):
    return [sys.executable, "-m", "tether", "ppo", "--policy", str(tiny_dirs["policy"]), "--reward-model", str(tiny_dirs["rm"]),
            "--prompts", str(tiny_dirs["prompts"]), "--out", str(out), "--steps", str(steps), "--batch-size", "8",
            "--minibatch-size", "4", "--micro-batch-size", "4", "--max-new-tokens", "6", "--eval-every", "0",
            "--eval-samples", "8", "--save-every", "1", "--device", "cpu", "--lr", "1e-3", "--threads", "1", *extra]


def test_killed_run_resumes_to_the_same_metrics(tiny_dirs, tmp_path):
    steps = 40
    assert subprocess.run(ppo_command(tiny_dirs, tmp_path / "full", steps), capture_output=True).returncode == 0
    kill_after = random.Random().randint(3, 25)
    proc = subprocess.Popen(ppo_command(tiny_dirs, tmp_path / "killed", steps), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= kill_after:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    resumed = subprocess.run(ppo_command(tiny_dirs, tmp_path / "killed", steps, "--resume", "true"), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert training_rows(tmp_path / "killed") == training_rows(tmp_path / "full")


def test_ppo_runs_with_the_hf_rollout_engine(tiny_dirs, tmp_path):
    result = run_ppo(config(tiny_dirs, tmp_path, out=str(tmp_path / "hf"), steps=2, rollout_engine="hf"))
    rows = training_rows(tmp_path / "hf")
    assert [r["step"] for r in rows if "loss/policy" in r] == [1, 2]
    assert rows[0]["objective/kl"] == 0.0  # the first rollout's policy is the reference
    assert result["n_samples"] == 8


def test_rollouts_and_evaluations_come_from_the_configured_engine(tiny_dirs, tmp_path, monkeypatch):
    """A registered engine is injected by name into training and evaluation; wrapping the default changes nothing."""
    from tether.rollout import ENGINES
    calls = []

    class Counting(TorchSampler):
        def generate(self, model, prompt_ids, cfg, generator=None):
            calls.append(len(prompt_ids))
            return super().generate(model, prompt_ids, cfg, generator)

    monkeypatch.setitem(ENGINES, "counting", Counting)
    run_ppo(config(tiny_dirs, tmp_path, out=str(tmp_path / "counted"), steps=2, eval_every=1, rollout_engine="counting"))
    run_ppo(config(tiny_dirs, tmp_path, out=str(tmp_path / "default"), steps=2, eval_every=1))
    assert calls == [8, 8, 8, 8]  # rollout 1, evaluation after step 1, rollout 2, final evaluation
    assert training_rows(tmp_path / "counted") == training_rows(tmp_path / "default")


def test_unknown_rollout_engine_is_an_input_error(tiny_dirs, tmp_path):
    from tether.errors import InputError
    with pytest.raises(InputError, match="unknown rollout engine 'nope'"):
        run_ppo(config(tiny_dirs, tmp_path, rollout_engine="nope"))


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(tiny_dirs, tmp_path, monkeypatch):
    import shutil
    import tether.pipelines.ppo as ppo
    out, rm_dir = tmp_path / "nan", tmp_path / "rm"
    shutil.copytree(tiny_dirs["rm"], rm_dir)
    cfg = config(tiny_dirs, tmp_path, out=str(out), steps=4, save_every=1, reward_model=str(rm_dir))
    saved = ppo.save_checkpoint

    def stop_after_step_2(path, step, *args):  # the run is killed once step 2's checkpoint is written
        saved(path, step, *args)
        if step == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(ppo, "save_checkpoint", stop_after_step_2)
    with pytest.raises(KeyboardInterrupt):
        run_ppo(cfg)
    monkeypatch.undo()
    checkpoint = out / "checkpoints" / "last.pt"
    good = checkpoint.read_bytes()
    rm = load_reward_model(rm_dir)
    with torch.no_grad():
        score_head(rm).weight.fill_(float("nan"))
    rm.save_pretrained(rm_dir)  # the same settings, but the reward model now scores NaN
    with pytest.raises(RunError, match="not finite|nan"):
        run_ppo(dataclasses.replace(cfg, resume=True))
    assert checkpoint.read_bytes() == good


def test_fsdp_with_lora_is_an_input_error(tiny_dirs, tmp_path):
    with pytest.raises(InputError, match="without --fsdp"):
        config(tiny_dirs, tmp_path, fsdp=True, lora_r=4)
    assert config(tiny_dirs, tmp_path, fsdp=True).fsdp  # alone, a valid setting


def test_cli_ppo_bad_input_exits_2_with_one_line(tiny_dirs, tmp_path):
    result = subprocess.run([sys.executable, "-m", "tether", "ppo", "--policy", str(tiny_dirs["policy"]), "--reward-model",
                             str(tiny_dirs["rm"]), "--prompts", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "x")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "missing.jsonl" in result.stderr and "Traceback" not in result.stderr


def test_bf16_autocast_runs_and_stays_finite(tiny_dirs, tmp_path):
    result = run_ppo(config(tiny_dirs, tmp_path, out=str(tmp_path / "bf16"), steps=2, bf16=True))
    rows = training_rows(tmp_path / "bf16")
    assert all(torch.isfinite(torch.tensor(r["loss/policy"])) for r in rows if "loss/policy" in r)
    assert result["n_samples"] == 8


def test_gradient_checkpointing_gives_the_same_run(tiny_dirs, tmp_path):
    """Policy and critic recompute their activations in the backward pass: the same metrics at every step."""
    run_ppo(config(tiny_dirs, tmp_path, out=str(tmp_path / "plain"), steps=2))
    run_ppo(config(tiny_dirs, tmp_path, out=str(tmp_path / "ckpt"), steps=2, gradient_checkpointing=True))
    plain, ckpt = training_rows(tmp_path / "plain"), training_rows(tmp_path / "ckpt")
    assert [r.keys() for r in plain] == [r.keys() for r in ckpt]
    for a, b in zip(plain, ckpt):
        assert list(b.values()) == pytest.approx(list(a.values()), rel=1e-5, abs=1e-7)
    assert all(r["memory/peak_gb"] > 0.01 for r in read_metrics(tmp_path / "ckpt" / "metrics.jsonl") if "time/train" in r)


def test_frozen_models_in_bfloat16_and_the_trained_ones_in_float32(tiny_dirs, tmp_path, monkeypatch):
    """--dtype bfloat16: reference and reward model hold bfloat16 weights, the policy and the critic (a copy
    of the reward model) float32; reference log-probs reach the KL as float32."""
    built = []
    monkeypatch.setattr(ActorCritic, "load", lambda *a, _load=ActorCritic.load, **kw: built.append(_load(*a, **kw)) or built[-1])
    result = run_ppo(config(tiny_dirs, tmp_path, out=str(tmp_path / "bf16"), steps=2, dtype="bfloat16"))
    model = built[0]
    assert {p.dtype for p in model.ref.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in model.policy.parameters()} == {p.dtype for p in model.critic.parameters()} == {torch.float32}
    rows = training_rows(tmp_path / "bf16")
    assert all(math.isfinite(r["objective/kl"]) for r in rows if "objective/kl" in r) and result["n_samples"] == 8
    assert config(tiny_dirs, tmp_path).dtype == "auto"


def test_frozen_dtype_is_bfloat16_on_a_gpu_and_float32_on_cpu():
    from tether.pipelines.common import frozen_dtype
    assert frozen_dtype("auto", torch.device("cuda", 0)) == torch.bfloat16
    assert frozen_dtype("auto", torch.device("cpu")) == torch.float32
    assert frozen_dtype("float32", torch.device("cuda", 0)) == torch.float32
    with pytest.raises(InputError, match='"dtype": must be one of auto, float32, bfloat16, got .float16.'):
        config(tiny_dirs={"policy": "p", "rm": "r", "prompts": "x"}, tmp_path=Path("."), dtype="float16")


def test_kl_runaway_warning_names_the_numbers_within_the_first_iterations():
    from tether.pipelines.ppo import kl_runaway_warning
    line = kl_runaway_warning(5, kl=76.0, mean_length=7.6, lr=2e-4, beta=0.05)
    assert line.startswith("ppo: warning: KL to the reference is 10.00 nats per token (76.0 per response of 7.6 tokens) "
                           "after 5 iteration(s) at lr 0.0002, beta 0.05")
    assert kl_runaway_warning(5, kl=7.0, mean_length=7.6, lr=2e-4, beta=0.05) is None  # 0.92 per token
    assert kl_runaway_warning(11, kl=76.0, mean_length=7.6, lr=2e-4, beta=0.05) is None  # not early any more


def test_a_run_away_kl_is_reported_once(tiny_dirs, tmp_path, monkeypatch, capsys):
    import tether.pipelines.ppo as ppo
    monkeypatch.setattr(ppo, "KL_RUNAWAY_PER_TOKEN", -1.0)  # every iteration's KL counts as running away
    run_ppo(config(tiny_dirs, tmp_path, out=str(tmp_path / "warn"), steps=3))
    assert capsys.readouterr().out.count("ppo: warning: KL to the reference is") == 1


def test_anneal_lr_decays_linearly_to_zero(tiny_dirs, tmp_path):
    run_ppo(config(tiny_dirs, tmp_path, out=str(tmp_path / "anneal"), steps=4, anneal_lr=True, lr=1e-3))
    lrs = [r["policy/lr"] for r in training_rows(tmp_path / "anneal") if "policy/lr" in r]
    assert lrs == pytest.approx([1e-3, 7.5e-4, 5e-4, 2.5e-4])


def perturb(model, scale=0.3, seed=0):
    """Move the policy away from the reference, as training would."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.policy.parameters():
            p.add_(scale * p.std() * torch.randn(p.shape, generator=generator))


def test_exact_kl_loss_term_is_the_same_with_the_reference_cached_or_recomputed(tiny_dirs, tmp_path):
    cfg, model, _, exp = experience(tiny_dirs, tmp_path, beta=0.5, kl_estimator="exact")
    assert exp.ref_dist is not None  # small enough to keep
    perturb(model)
    idx = torch.arange(8)
    cached_loss, cached = minibatch_loss(model, exp, idx, cfg)
    recomputed_loss, recomputed = minibatch_loss(model, dataclasses.replace(exp, ref_dist=None), idx, cfg)
    assert cached["kl"].item() > 1e-3
    torch.testing.assert_close(cached_loss, recomputed_loss)


def test_exact_kl_at_large_beta_pulls_a_drifted_policy_back_to_the_reference(tiny_dirs, tmp_path):
    """The loss term carries the gradient of β·KL: with the score negligible, PPO steps shrink the KL."""
    cfg = config(tiny_dirs, tmp_path, beta=100.0, kl_estimator="exact", lr=3e-3, ppo_epochs=2)
    torch.manual_seed(0)
    model = actor_critic(cfg)
    perturb(model, scale=2.0)
    tokenizer = load_tokenizer(cfg.policy)
    prompts = [r.prompt for r in read_prompts(cfg.prompts)] * 2
    ids = [encode_prompt(tokenizer, p) for p in prompts]
    sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens, eos_token_id=tokenizer.eos_token_id,
                              pad_token_id=tokenizer.pad_token_id)
    reward_fn = RewardFunction([cfg.reward_model], tokenizer, "cpu")
    optimizer = torch.optim.Adam(model.trainable_parameters(), lr=cfg.lr)
    generator = torch.Generator().manual_seed(0)
    kls = []
    for step in range(8):
        rollout = TorchSampler().generate(model.policy, ids, sampling, generator)
        exp = make_experience(model, reward_fn, rollout, prompts, [""] * len(prompts), cfg.beta, cfg)
        kls.append(exp.kl.sum(1).mean().item())
        ppo_update(model, optimizer, exp, cfg, generator, step)
    assert kls[0] > 0.05
    assert kls[-1] < 0.5 * kls[0], kls


def test_exact_kl_refuses_whitened_rewards(tiny_dirs, tmp_path):
    from tether.errors import InputError
    with pytest.raises(InputError, match="whiten_rewards"):
        config(tiny_dirs, tmp_path, kl_estimator="exact", whiten_rewards=True)


def test_early_stop_measures_against_the_initial_policy_and_keeps_the_last_good_one(tiny_dirs, tmp_path):
    """The detectors' baseline is an evaluation before the first step; when one fires, the kept policy is the
    last that passed (here the initial one, since the first check already fires)."""
    out = tmp_path / "early"
    result = run_ppo(config(tiny_dirs, tmp_path, out=str(out), steps=4, eval_every=2, early_stop_repetition=-1.0))
    assert result["early_stop"] == {"step": 2, "reason": result["early_stop"]["reason"]}
    assert result["early_stop"]["reason"].startswith("repetition rate")
    rows = read_metrics(out / "metrics.jsonl")
    assert rows[0]["step"] == 0 and "eval/kl" in rows[0]  # the baseline evaluation
    assert max(r["step"] for r in rows if "time/train" in r) == 2  # no iteration after the stop
    initial, kept = load_causal_lm(tiny_dirs["policy"]), load_causal_lm(out / "model")
    for (name, a), b in zip(initial.state_dict().items(), kept.state_dict().values()):
        assert torch.equal(a, b), name
    assert result["kl"] == 0.0
