"""Atomic output: the user's umask, no temporary file left for good, a model folder swapped in atomically,
nothing left behind by a command that stops on bad input."""

import os
import shutil
import stat
from dataclasses import dataclass

import pytest

from tether.errors import InputError
from tether.io import remove_stale_temp, removed_on, write_text_atomic
from tether.models import save_pretrained_atomic
from tether.pipelines.common import prepare_run_dir


@dataclass
class StageConfig:
    lr: float = 0.1


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_027():
    before = os.umask(0o027)
    yield
    os.umask(before)


def test_files_and_model_folders_get_the_users_umask(tmp_path, umask_027, tiny_dirs):
    from tether.models import load_causal_lm, load_tokenizer
    write_text_atomic(tmp_path / "a.txt", "x")
    assert _mode(tmp_path / "a.txt") == 0o640  # 0666 & ~027, as open() would make it (mkstemp alone: 0600)
    save_pretrained_atomic(tmp_path / "model", load_causal_lm(tiny_dirs["policy"]), load_tokenizer(tiny_dirs["policy"]))
    assert _mode(tmp_path / "model") == 0o750


def test_a_new_start_removes_the_temporary_files_of_killed_writes(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / ".last.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    (run / ".model.xyz.tmp").mkdir()
    (run / ".model.xyz.tmp" / "model.safetensors").write_bytes(b"half a model")
    (run / "keep.txt").write_text("user file")
    prepare_run_dir(run, StageConfig())
    assert sorted(p.name for p in run.rglob("*")) == ["checkpoints", "config.yaml", "keep.txt"]
    assert remove_stale_temp(tmp_path / "missing") == []


def test_replacing_a_model_folder_keeps_complete_weights_if_killed_while_removing_the_old_one(tmp_path, tiny_dirs,
                                                                                                  monkeypatch):
    from tether.models import load_causal_lm, load_tokenizer
    model, tok = load_causal_lm(tiny_dirs["policy"]), load_tokenizer(tiny_dirs["policy"])
    target = tmp_path / "model"
    save_pretrained_atomic(target, model, tok)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the kill arrives while the old folder is being removed

    monkeypatch.setattr(shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        save_pretrained_atomic(target, model, tok)
    monkeypatch.undo()
    assert (target / "model.safetensors").is_file() and (target / "config.json").is_file()
    load_causal_lm(target)  # loads: the new weights are in place


def test_removed_on_removes_only_what_the_failed_command_made(tmp_path):
    fresh, existing = tmp_path / "fresh", tmp_path / "existing"
    existing.mkdir()
    for folder in (fresh, existing):
        with pytest.raises(InputError), removed_on((InputError,), folder):
            folder.mkdir(exist_ok=True)
            (folder / "config.yaml").write_text("x")
            raise InputError("bad")
    assert not fresh.exists() and (existing / "config.yaml").exists()
    with pytest.raises(RuntimeError), removed_on((InputError,), fresh):  # other failures keep their output
        fresh.mkdir()
        raise RuntimeError("NaN at step 40")
    assert fresh.exists()


def test_metrics_rows_stay_valid_json_and_a_non_finite_evaluation_stops_the_run(tmp_path):
    import json
    from tether.errors import RunError
    from tether.runlog import MetricsLogger
    logger = MetricsLogger(tmp_path, tensorboard=False)
    logger.log(1, {"val/explained_variance": float("nan"), "loss/policy": 0.5})
    with pytest.raises(RunError, match="evaluation metric eval/kl is nan at step 2; stopping"):
        logger.log(2, {"eval/kl": float("nan")})
    logger.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows == [{"step": 1, "val/explained_variance": None, "loss/policy": 0.5}]
