"""Resume refuses settings other than the run's own (issue 21.6): a changed beta, reward model or number of
steps is an error naming them, and config.yaml keeps the run's settings; device and threads may change."""

import dataclasses

import pytest
import yaml

from tether.errors import InputError
from tether.pipelines.ppo import PPOConfig, run_ppo


def _config(tiny_dirs, out, **kw):
    base = dict(policy=str(tiny_dirs["policy"]), reward_model=str(tiny_dirs["rm"]), prompts=str(tiny_dirs["prompts"]),
                out=str(out), steps=2, batch_size=4, minibatch_size=4, micro_batch_size=2, max_new_tokens=4,
                eval_every=0, eval_samples=4, save_every=1, device="cpu", lr=1e-3)
    return PPOConfig(**{**base, **kw})


def test_resume_refuses_changed_settings_and_keeps_the_saved_config(tiny_dirs, tmp_path):
    out = tmp_path / "run"
    run_ppo(_config(tiny_dirs, out, steps=1))
    saved = (out / "config.yaml").read_text()
    changes = {"beta": 0.5, "steps": 3, "reward_model": str(tiny_dirs["policy"])}
    for field, value in changes.items():
        with pytest.raises(InputError, match=f'"{field}": cannot resume with settings other than the run\'s '
                                             f'\\({field}\\)'):
            run_ppo(_config(tiny_dirs, out, **{"steps": 1, "resume": True, field: value}))
    assert (out / "config.yaml").read_text() == saved
    with pytest.raises(InputError, match=r"\(beta, steps\)"):
        run_ppo(_config(tiny_dirs, out, steps=3, beta=0.5, resume=True))


def test_resume_accepts_another_device_or_thread_count(tiny_dirs, tmp_path):
    out = tmp_path / "run"
    cfg = _config(tiny_dirs, out)
    run_ppo(dataclasses.replace(cfg, steps=2))
    run_ppo(dataclasses.replace(cfg, steps=2, resume=True, threads=1, device="cpu"))
    assert yaml.safe_load((out / "config.yaml").read_text())["threads"] == 1


def test_resuming_a_finished_run_says_so_and_adds_no_row(tiny_dirs, tmp_path, capsys):
    from tether.runlog import read_metrics
    out = tmp_path / "run"
    cfg = _config(tiny_dirs, out)
    first = run_ppo(cfg)
    rows = (out / "metrics.jsonl").read_text()
    again = run_ppo(dataclasses.replace(cfg, resume=True))
    assert "finished earlier (eval.json); nothing to resume" in capsys.readouterr().err
    assert (out / "metrics.jsonl").read_text() == rows and read_metrics(out / "metrics.jsonl")[-1]["step"] == 2
    assert again["kl"] == first["kl"] and again["proxy_reward"] == first["proxy_reward"]


def test_a_nan_loss_names_the_kept_checkpoint_only_when_there_is_one(tiny_dirs, tmp_path):
    import torch
    from tether.errors import RunError
    from tether.models import load_reward_model, load_tokenizer, score_head
    nan_rm = tmp_path / "nan_rm"
    rm = load_reward_model(tiny_dirs["rm"])
    with torch.no_grad():
        score_head(rm).weight.fill_(float("nan"))
    rm.save_pretrained(nan_rm)
    load_tokenizer(tiny_dirs["rm"]).save_pretrained(nan_rm)
    with pytest.raises(RunError, match=r"PPO loss is nan at step 0; stopping$"):
        run_ppo(_config(tiny_dirs, tmp_path / "run", reward_model=str(nan_rm)))


def test_a_resumed_run_shows_each_step_once_in_tensorboard(tiny_dirs, tmp_path, monkeypatch):
    """The attempt that was killed logged steps past its checkpoint; the resumed one purges them (issue 21.6)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    import tether.pipelines.ppo as ppo
    out = tmp_path / "run"
    cfg = _config(tiny_dirs, out, steps=4, save_every=2)
    log = ppo.MetricsLogger.log

    def killed_after_step_3(self, step, metrics):
        log(self, step, metrics)
        if step == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(ppo.MetricsLogger, "log", killed_after_step_3)
    with pytest.raises(KeyboardInterrupt):
        run_ppo(cfg)
    monkeypatch.undo()
    run_ppo(dataclasses.replace(cfg, resume=True))
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    steps = [e.step for e in events.Scalars("objective/kl")]
    assert steps == [1, 2, 3, 4]
