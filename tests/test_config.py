"""Stage configs (tether.config): typed values from YAML, command line and Python; declared bounds; the sweep's
nested PPO config; the demo's --quick (issues 16 and 21)."""

import argparse
import subprocess
import sys

import pytest

from tether.config import add_config_args, build_config, save_config, to_dict
from tether.errors import InputError
from tether.pipelines.demo import DemoConfig
from tether.pipelines.ppo import PPOConfig
from tether.pipelines.reward import RMTrainConfig
from tether.pipelines.sft import SFTConfig
from tether.pipelines.sweep import PER_RUN, SweepConfig, ppo_config, run_specs

PATHS = "policy: pol\nreward_model: rm\nprompts: p.jsonl\nout: run\n"


def tether_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tether", *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def from_yaml(tmp_path, cls, text: str, **overrides):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return build_config(cls, overrides, path)


def parse(cls, *argv) -> dict:
    """The overrides the CLI passes to build_config for `argv`."""
    parser = argparse.ArgumentParser()
    add_config_args(parser, cls)
    return vars(parser.parse_args(argv))


def test_yaml_1e_minus_5_is_a_number_not_a_string(tmp_path):
    """PyYAML (YAML 1.1) reads `1e-5` without a dot as the string "1e-5"."""
    assert from_yaml(tmp_path, PPOConfig, PATHS + "lr: 1e-5\n").lr == 1e-05
    assert from_yaml(tmp_path, SFTConfig, "data: d.jsonl\nlr: 1e-5\n").lr == 1e-05


@pytest.mark.parametrize("line, field, value", [
    ('steps: "2"', "steps", 2),
    ("batch_size: 128.0", "batch_size", 128),
    ('resume: "false"', "resume", False),
    ("resume: true", "resume", True),
    ("ensemble: /some/dir", "ensemble", ["/some/dir"]),
    ("score_clip: null", "score_clip", None),
    ("eval_prompts: null", "eval_prompts", None),
])
def test_yaml_values_are_converted_to_the_declared_type(tmp_path, line, field, value):
    cfg = from_yaml(tmp_path, PPOConfig, PATHS + line + "\n")
    got = getattr(cfg, field)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize("line, message", [
    ("steps: null", '"steps": expected an integer, got null'),
    ("batch_size: 8.5", '"batch_size": expected an integer, got 8.5'),
    ("resume: yes please", "\"resume\": expected true or false, got 'yes please'"),
    ("resume: 1", '"resume": expected true or false, got 1'),
    ("lr: fast", "\"lr\": expected a number, got 'fast'"),
    ("ensemble: {a: 1}", '"ensemble": expected a string or a list of them'),
    ("steps: 0", '"steps": must be >= 1, got 0'),
])
def test_bad_yaml_values_name_the_file_the_field_and_what_was_expected(tmp_path, line, message):
    with pytest.raises(InputError) as e:
        from_yaml(tmp_path, PPOConfig, PATHS + line + "\n")
    assert str(e.value).startswith(f"{tmp_path / 'cfg.yaml'}: {message}"), str(e.value)


def test_a_bad_command_line_value_does_not_name_the_yaml_file(tmp_path):
    with pytest.raises(InputError) as e:
        from_yaml(tmp_path, PPOConfig, PATHS, steps="0")
    assert str(e.value) == '"steps": must be >= 1, got 0'


def test_python_api_values_are_converted_and_checked():
    cfg = SFTConfig(data="d.jsonl", lr="1e-5", batch_size=8.0, bf16="true")
    assert (cfg.lr, cfg.batch_size, cfg.bf16) == (1e-05, 8, True)
    with pytest.raises(InputError, match='"batch_size": must be >= 1, got 0'):
        SFTConfig(data="d.jsonl", batch_size=0)
    with pytest.raises(InputError, match='"adam_betas": must be < 1, got 1.5'):
        SFTConfig(data="d.jsonl", adam_betas=[0.9, 1.5])


def test_a_field_with_choices_takes_only_those_and_help_lists_them():
    """`opt(..., choices=...)`: one declaration gives the check, its message and the --help text."""
    with pytest.raises(InputError, match=r'^"truncation": must be one of left, right, skip, error, got .middle.$'):
        SFTConfig(data="d.jsonl", truncation="middle")
    with pytest.raises(InputError, match=r'^"ppo.loss_aggregation": must be one of token_mean, seq_mean, constant, got .sum.$'):
        SweepConfig(out="o", ppo=dict(policy="p", reward_model="r", prompts="x", loss_aggregation="sum"))
    assert RMTrainConfig(init="i", data="d", truncation="skip").truncation == "skip"  # shared PairFiles field
    parser = argparse.ArgumentParser()
    add_config_args(parser, SFTConfig)
    assert "one of left, right, skip, error" in " ".join(parser.format_help().split())


def test_magic_numbers_are_fields_with_their_old_values():
    assert PPOConfig(policy="p", reward_model="r", prompts="x", out="o").adam_eps == 1e-5
    assert SFTConfig(data="d").adam_betas == [0.9, 0.95]
    assert RMTrainConfig(init="i", data="d").max_grad_norm == 1.0


def ppo_args(tmp_path, *extra):
    return ("ppo", "--policy", str(tmp_path / "no_policy"), "--reward-model", str(tmp_path / "no_rm"),
            "--prompts", str(tmp_path / "no_prompts.jsonl"), "--out", str(tmp_path / "run"), *extra)


@pytest.mark.parametrize("args, field", [
    (("--minibatch-size", "0"), "minibatch_size"),
    (("--micro-batch-size", "0"), "micro_batch_size"),
    (("--lr", "-1"), "lr"),
    (("--ppo-epochs", "0"), "ppo_epochs"),
    (("--eval-samples", "0"), "eval_samples"),
    (("--steps", "-1"), "steps"),
    (("--clip-eps", "-1"), "clip_eps"),
    (("--batch-size", "0"), "batch_size"),
    (("--resume", "maybe"), "resume"),
])
def test_bad_ppo_values_exit_2_with_one_line_before_any_work(tmp_path, args, field):
    result = tether_cli(*ppo_args(tmp_path, *args))
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith(f'tether ppo: error: "{field}": '), result.stderr
    assert not (tmp_path / "run").exists()


def test_bad_yaml_value_on_the_command_line_names_the_file(tmp_path):
    (tmp_path / "bad.yaml").write_text("steps: many\n")
    result = tether_cli(*ppo_args(tmp_path, "--config", str(tmp_path / "bad.yaml")))
    assert (result.returncode, result.stderr) == \
        (2, f"tether ppo: error: {tmp_path / 'bad.yaml'}: \"steps\": expected an integer, got 'many'\n")
    assert not (tmp_path / "run").exists()


def test_sweep_command_line_sets_the_nested_ppo_fields():
    overrides = parse(SweepConfig, "--lr", "1e-5", "--steps", "40", "--out", "s", "--policy", "p", "--reward-model", "r",
                      "--prompts", "x", "--betas", "0.1", "1", "--ensemble", "rm_1")
    cfg = build_config(SweepConfig, overrides)
    assert (cfg.ppo.lr, cfg.ppo.steps, cfg.ppo.policy, cfg.betas, cfg.ensemble) == (1e-05, 40, "p", [0.1, 1.0], ["rm_1"])
    runs = {name: ppo_config(cfg, f"s/runs/{name}", per_run) for name, per_run, _ in run_specs(cfg)}
    assert {(c.lr, c.steps) for c in runs.values()} == {(1e-05, 40)}
    assert runs["beta_0.1"].ensemble == [] and runs["ensemble_beta_0.1"].ensemble == ["rm_1"]


def test_sweep_help_shows_each_option_once_and_no_per_run_ppo_field():
    parser = argparse.ArgumentParser()
    add_config_args(parser, SweepConfig)
    options = [s for action in parser._actions for s in action.option_strings]
    assert len(options) == len(set(options))
    assert {"--lr", "--steps", "--policy", "--temperature", "--ensemble", "--early-stop-repetition"} <= set(options)
    assert not {"--beta", "--resume", "--adaptive-kl", "--kl-target"} & set(options)


@pytest.mark.parametrize("text, message", [
    ("out: s\nsteps: 40\n", '"steps": unknown config key (it belongs in the `ppo:` mapping)'),
    ("out: s\nppo: {policy: p, reward_model: r, prompts: x, lrr: 1}\n", '"ppo.lrr": unknown config key'),
    ("out: s\nppo: {policy: p, reward_model: r, prompts: x, beta: 0.1}\n", '"ppo.beta": set per run by the sweep'),
    ("out: s\nppo: {policy: p, reward_model: r, prompts: x, steps: 0}\n", '"ppo.steps": must be >= 1, got 0'),
    ("out: s\nppo: 3\n", "\"ppo\": expected a mapping of PPOConfig keys, got 3"),
])
def test_bad_sweep_yaml_names_the_file_and_the_nested_key(tmp_path, text, message):
    with pytest.raises(InputError) as e:
        from_yaml(tmp_path, SweepConfig, text)
    assert str(e.value).startswith(f"{tmp_path / 'cfg.yaml'}: {message}"), str(e.value)


def test_sweep_config_yaml_rebuilds_every_run_exactly(tmp_path):
    ppo = PPOConfig(policy="p", reward_model="r", prompts="x", out="elsewhere", steps=7, lr=3e-5, gold="assistant",
                    beta=0.7, adaptive_kl=True, resume=True)  # per-run fields: replaced by the sweep
    cfg = SweepConfig(out=str(tmp_path), ppo=ppo, betas=[0.01, 0.5], kl_targets=[2.0], ensemble=["rm_1"], early_stop=True)
    save_config(cfg, tmp_path / "config.yaml")
    assert not set(PER_RUN) & set(to_dict(cfg)["ppo"])
    again = build_config(SweepConfig, {}, tmp_path / "config.yaml")
    runs = lambda c: [(name, to_dict(ppo_config(c, tmp_path / name, per_run))) for name, per_run, _ in run_specs(c)]
    assert runs(again) == runs(cfg)
    first = dict(runs(cfg))
    assert (first["beta_0.01"]["beta"], first["beta_0.01"]["adaptive_kl"], first["beta_0.01"]["resume"]) == (0.01, False, False)
    assert first["adaptive_2"]["adaptive_kl"] and first["early_stop_beta_0.01"]["early_stop_repetition"] == 0.3


def test_quick_changes_only_the_sizes_the_user_did_not_set():
    assert (DemoConfig().ppo_steps, DemoConfig(quick=True).ppo_steps) == (40, 12)
    assert DemoConfig(quick=True, ppo_steps=20, betas=[0.1]).ppo_steps == 20
    cli = build_config(DemoConfig, parse(DemoConfig, "--quick", "--ppo-steps", "20", "--eval-samples", "64"))
    assert (cli.quick, cli.ppo_steps, cli.eval_samples, cli.n_pairs, cli.betas) == (True, 20, 64, 600, [0.01, 0.05, 0.1, 0.5, 1.0])
    with pytest.raises(InputError, match='"bon_max": must be a power of two'):
        DemoConfig(bon_max=12)


def test_ppo_runs_from_a_yaml_file_with_lr_1e_minus_5(tiny_dirs, tmp_path):
    """The most ordinary config line: a TypeError traceback before (issue 21)."""
    (tmp_path / "ppo.yaml").write_text(
        f"policy: {tiny_dirs['policy']}\nreward_model: {tiny_dirs['rm']}\nprompts: {tiny_dirs['prompts']}\n"
        f"out: {tmp_path / 'run'}\nlr: 1e-5\nsteps: \"1\"\nbatch_size: 8.0\nminibatch_size: 8\nmicro_batch_size: 4\n"
        "max_new_tokens: 4\neval_every: 0\neval_samples: 8\nsave_every: 0\nresume: \"false\"\ndevice: cpu\nthreads: 1\n")
    result = tether_cli("ppo", "--config", str(tmp_path / "ppo.yaml"))
    assert result.returncode == 0, result.stderr[-2000:]
    saved = build_config(PPOConfig, {}, tmp_path / "run" / "config.yaml")
    assert (saved.lr, saved.steps, saved.batch_size, saved.resume) == (1e-05, 1, 8, False)
