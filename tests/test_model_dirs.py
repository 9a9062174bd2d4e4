"""Every model directory is checked before use: a broken one exits 2 with one line naming it and its field,
without a traceback, and the run leaves nothing on disk (issue 21: a corpus of bad model directories)."""

import json
import re
import shutil
from pathlib import Path

import pytest

from tether.cli import main

DATA = Path(__file__).parent / "data"


def _edit_config(**changes):
    def edit(d):
        config = json.loads((d / "config.json").read_text())
        config.update(changes)
        (d / "config.json").write_text(json.dumps(config))
    return edit


def _remove(*names):
    def edit(d):
        for name in names:
            (d / name).unlink(missing_ok=True)
    return edit


def _truncate(d):
    weights = d / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])


BROKEN_POLICIES = {
    "corrupt config.json": (lambda d: (d / "config.json").write_text("{not json"), "config.json is not readable JSON"),
    "wrong-typed config value": (_edit_config(n_layer="two"), "config.json cannot be used: .*n_layer"),
    "unknown model_type": (_edit_config(model_type="nosuchmodel"), "config.json cannot be used: .*nosuchmodel"),
    "missing weights": (_remove("model.safetensors"), "no weights"),
    "truncated weights": (_truncate, "cannot load the weights"),
    "no tokenizer files": (_remove("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"),
                           "no tokenizer files"),
}


def _ppo(policy, reward_model, prompts, out):
    return main(["ppo", "--policy", str(policy), "--reward-model", str(reward_model), "--prompts", str(prompts),
                 "--out", str(out), "--steps", "1", "--batch-size", "4", "--minibatch-size", "4",
                 "--micro-batch-size", "4", "--eval-samples", "4"])


def _one_error_line(capsys, pattern):
    """The one error line (progress bars of models loaded before the bad one may precede it)."""
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert "Traceback" not in err and len(errors) == 1, err
    assert errors[0].startswith("tether ppo: error: ") and re.search(pattern, errors[0]), errors[0]
    return errors[0]


@pytest.mark.parametrize("case", list(BROKEN_POLICIES))
def test_a_broken_policy_directory_is_one_line_and_exit_2(tiny_dirs, tmp_path, capsys, case):
    edit, pattern = BROKEN_POLICIES[case]
    policy = tmp_path / "policy"
    shutil.copytree(tiny_dirs["policy"], policy)
    edit(policy)
    out = tmp_path / "run"
    assert _ppo(policy, tiny_dirs["rm"], tiny_dirs["prompts"], out) == 2
    line = _one_error_line(capsys, pattern)
    assert str(policy) in line and '"policy"' in line
    assert not out.exists(), "a run stopped by bad input leaves no run directory"


def test_a_reward_model_given_as_policy_and_a_policy_given_as_reward_model_are_refused(tiny_dirs, tmp_path, capsys):
    out = tmp_path / "run"
    assert _ppo(tiny_dirs["rm"], tiny_dirs["rm"], tiny_dirs["prompts"], out) == 2
    _one_error_line(capsys, '"policy": holds a GPT2ForSequenceClassification, not a causal LM')
    assert _ppo(tiny_dirs["policy"], tiny_dirs["policy"], tiny_dirs["prompts"], out) == 2
    _one_error_line(capsys, '"reward_model": holds a GPT2LMHeadModel, not a reward model')
    assert not out.exists()


COMMANDS_WITH_OUT = {
    "ppo": lambda d, out: ["ppo", "--policy", d["policy"], "--reward-model", d["rm"], "--prompts", d["prompts"],
                           "--out", out, "--steps", "1", "--batch-size", "4", "--minibatch-size", "4",
                           "--micro-batch-size", "4"],
    "sft": lambda d, out: ["sft", "--model", d["policy"], "--data", d["sft"], "--out", out],
    "rm train": lambda d, out: ["rm", "train", "--init", d["policy"], "--data", DATA / "pairs_explicit.jsonl",
                                "--out", out],
    "collect": lambda d, out: ["collect", "--policy", d["policy"], "--prompts", d["prompts"], "--out", out],
}


@pytest.mark.parametrize("command", list(COMMANDS_WITH_OUT))
def test_an_output_folder_that_cannot_be_made_is_one_line_and_exit_2(tiny_dirs, tmp_path, capsys, command):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    sft = tmp_path / "sft.jsonl"
    sft.write_text('{"prompt": "what is two plus three ?", "completion": "five"}\n')
    assert main([str(a) for a in COMMANDS_WITH_OUT[command]({**tiny_dirs, "sft": sft}, blocker / "run")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"tether {command}: error: {blocker / 'run'}: \"out\": cannot write here" in err
    assert blocker.read_text() == "not a folder"
