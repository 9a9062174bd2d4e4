"""Text that does not fit the model, and data too small to mean much: `data check --tokenizer`, the training
warnings, and `rm train` sized to a few pairs."""

import json
import subprocess
import sys

import pytest

from tether.data.check import DataCheckConfig, data_stats
from tether.data.token_fit import unknown_rate, warn_unknown_tokens
from tether.models import load_tokenizer
from tether.pipelines.reward import size_for_data, small_data_warnings

PAIR = {"prompt": "what is gravity ?", "chosen": "a force", "rejected": "idk"}


def tether(*args):
    return subprocess.run([sys.executable, "-m", "tether", *map(str, args)], capture_output=True, text=True, timeout=300)


def test_unknown_rate_by_hand():
    assert unknown_rate([[2, 5, 2], [7]], unk_token_id=2) == 0.5
    assert unknown_rate([[2, 5]], unk_token_id=None) == 0.0
    assert unknown_rate([], unk_token_id=2) == 0.0


def test_data_check_reports_unknown_tokens_and_token_lengths(tiny_dirs, tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(PAIR) + "\n")
    # word level: what is <unk> ? | a <unk> | <unk>: 3 unknown of 7 tokens
    fit = data_stats(DataCheckConfig(file=str(path)), load_tokenizer(tiny_dirs["policy"]))["token_fit"]
    assert (fit["unknown_tokens"], fit["tokens"]) == (3, 7)
    assert fit["unknown_rate"] == pytest.approx(3 / 7)
    assert fit["unknown_examples"] == ["gravity", "force", "idk"]
    assert fit["lengths"] == {"prompt": (4, 4, 4), "chosen": (2, 2, 2), "rejected": (1, 1, 1)}
    bytes_fit = data_stats(DataCheckConfig(file=str(path)), load_tokenizer("builtin:bytes"))["token_fit"]
    assert (bytes_fit["unknown_tokens"], bytes_fit["lengths"]["prompt"]) == (0, (17, 17, 17))
    done = tether("data", "check", path, "--tokenizer", tiny_dirs["policy"])
    assert done.returncode == 0, done.stderr
    assert "unknown tokens: 42.9% (3 of 7), e.g. gravity, force, idk" in done.stdout
    assert "a model with this tokenizer cannot read this text" in done.stdout


def test_warn_unknown_tokens_only_above_the_threshold(capsys):
    warn_unknown_tokens("a.jsonl", [[1] * 99 + [2]], 2, "sft")  # 1%
    assert capsys.readouterr().err == ""
    warn_unknown_tokens("a.jsonl", [[1] * 9 + [2]], 2, "sft")  # 10%
    assert "tether sft: warning: 10.0% of the tokens of a.jsonl are the tokenizer's unknown token" in capsys.readouterr().err


def test_size_for_data_by_hand():
    # 9 pairs: batch min(32, 9 // 4 = 2); ⌈9/2⌉ = 5 steps an epoch, 2 epochs; warm-up min(20, ⌊0.25·10⌋ = 2)
    assert size_for_data(9, 32, 2, 20) == (2, 10, 2)
    assert size_for_data(3, 32, 2, 20) == (1, 6, 1)
    assert size_for_data(3686, 32, 2, 20) == (32, 232, 20)  # the demo's sizes are untouched


def test_small_data_warnings():
    few, held = small_data_warnings(9, 1, 2, 10, 2)
    assert few.startswith("10 optimiser steps only (9 pairs, batch 2, 2 epochs)")
    assert held.startswith("1 held-out pairs: accuracy moves in steps of 1.00 and its standard error is about 0.50")
    assert small_data_warnings(900, 100, 32, 58, 2) == []
    assert small_data_warnings(900, 0, 32, 58, 2) == []  # no held-out split: nothing to call small


def test_rm_train_on_ten_pairs_says_what_it_sized_and_warns(tiny_dirs, tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({**PAIR, "chosen": f"a force {i}"}) + "\n" for i in range(10)))
    done = tether("rm", "train", "--init", tiny_dirs["policy"], "--data", path, "--out", tmp_path / "rm", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    err = done.stderr
    assert "9 training pairs: batch 2 (--batch-size 32), warm-up 2 steps (--warmup-steps 20)" in err
    assert "warning: 10 optimiser steps only" in err
    assert "warning: 1 held-out pairs" in err
    assert "of the tokens of" in err and "are the tokenizer's unknown token" in err
    rows = [json.loads(line) for line in (tmp_path / "rm" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 10
