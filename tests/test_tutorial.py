"""docs/tutorial.md: every command in it runs, with builtin:bytes always and with SmolLM2 where it is fetched.

The demo command at its end (`tether demo --quick`) is the one tests/test_sweep_demo.py runs.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tether.models.builtin import default_cache_root

DOCS = Path(__file__).parent.parent / "docs"
REAL = "builtin:smollm2-135m-instruct"
DEMO = "tether demo --quick --out runs/demo"


def tutorial_commands() -> list[str]:
    """The lines of the tutorial's bash blocks, in order."""
    blocks = re.findall(r"```bash\n(.*?)```", (DOCS / "tutorial.md").read_text(encoding="utf-8"), re.S)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def script_for(model: str) -> str:
    """The tutorial as one bash script for `model`: run in a copy of docs/tutorial, without the copy, fetch and demo."""
    lines = []
    for line in tutorial_commands():
        if line.startswith(("cp -r", "tether model fetch")) or line == DEMO:
            continue
        lines.append(f"MODEL={model}" if line.startswith("MODEL=") else line)
    return "\n".join(["set -euo pipefail", f'tether() {{ "{sys.executable}" -m tether "$@"; }}', *lines]) + "\n"


def run_tutorial(model: str, workdir: Path, env: dict) -> subprocess.CompletedProcess:
    shutil.copytree(DOCS / "tutorial", workdir)
    return subprocess.run(["bash", "-c", script_for(model)], cwd=workdir, capture_output=True, text=True, timeout=1800,
                          env={**os.environ, **env})


def test_tutorial_commands_are_the_ones_the_test_knows():
    commands = tutorial_commands()
    assert commands[0] == "cp -r docs/tutorial e33 && cd e33"
    assert f"MODEL={REAL}" in commands and "tether model fetch smollm2-135m-instruct" in commands
    assert commands[-1] == DEMO
    assert all(c.startswith(("tether ", "cat ", "cp ", "MODEL=")) for c in commands)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["builtin:bytes", REAL])
def test_tutorial_runs(model, tmp_path):
    env = {}
    if model == REAL:
        if not (default_cache_root() / "models" / "smollm2-135m-instruct" / "config.json").is_file():
            pytest.skip("SmolLM2 is not fetched (tether model fetch smollm2-135m-instruct)")
        env["TETHER_CACHE"] = str(default_cache_root())
    start = time.perf_counter()
    done = run_tutorial(model, tmp_path / "e33", env)
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-3000:]
    work = tmp_path / "e33"
    assert (work / "runs" / "rm" / "curves.png").is_file()
    evaluation = json.loads((work / "runs" / "rm_eval" / "eval.json").read_text())
    assert evaluation["n_pairs"] == 6
    scores = json.loads((work / "runs" / "score" / "scores.json").read_text())
    assert scores["betas"] == [0.01, 0.05, 0.1, 0.5, 1.0] and len(scores["rows"]) == 5
    assert all(row["kl_exact"] >= 0 for row in scores["rows"])
    assert (work / "runs" / "score" / "tradeoff.png").is_file()
    assert "unknown tokens: 0.0%" in done.stdout
    print(f"\n{model}: tutorial in {seconds:.0f} s\n{done.stdout}")
