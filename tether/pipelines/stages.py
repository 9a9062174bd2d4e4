"""What `tether demo` and `tether lab` share: stages run in order, the proxy reward models, the sweep and its report.

Each stage is an ordinary command's library call (`run_collect`, `run_rm_train`, ...),
announced and timed. With a record file (the lab's OUT/stages.json) a stage that
finished is read back from it, not redone, so a stopped pipeline resumes at the
stage it was in (the sweep, in turn, reuses its finished PPO runs).
"""

import json
import time
from pathlib import Path

from tether.analysis.report import write_report
from tether.io import write_json_atomic
from tether.pipelines.reward import RMEvalConfig, RMTrainConfig, run_rm_eval, run_rm_train
from tether.pipelines.sweep import SweepConfig, run_sweep


class Stages:
    """Run named stages in order, timing each (`timings`, seconds). With `record` (a JSON file), each finished
    stage's result is written there and a stage found in it is not run again: its recorded result is returned."""

    def __init__(self, title: str, record: Path | None = None):
        self.title, self.record = title, record
        self.done = json.loads(record.read_text(encoding="utf-8")) if record is not None and record.is_file() else {}
        self.timings = {name: entry["seconds"] for name, entry in self.done.items()}

    def __call__(self, name: str, fn, *args):
        """`fn(*args)` (its result JSON-serialisable when recorded), or the recorded result of an earlier run."""
        print(f"\n== {self.title}: {name} ==", flush=True)
        if name in self.done:
            print(f"{self.title}: {name} finished earlier, not redone", flush=True)
            return self.done[name]["result"]
        t0 = time.perf_counter()
        result = fn(*args)
        self.timings[name] = round(time.perf_counter() - t0, 1)
        if self.record is not None:
            self.done[name] = {"result": result, "seconds": self.timings[name]}
            write_json_atomic(self.record, self.done)
        return result


def train_reward_models(stages: Stages, policy: str, member_pairs: list, eval_pairs, out: Path, seed: int,
                        device: str, **settings) -> tuple[list[str], dict]:
    """Train one reward model per pairs file, initialised from `policy` (member k: OUT/rm_k, seed + k; the first
    OUT/rm), then evaluate the first on `eval_pairs`. `settings`: other RMTrainConfig fields.
    Returns (the models' directories, the first's `rm eval` metrics)."""
    dirs = []
    for k, pairs in enumerate(member_pairs):
        name = "rm" if k == 0 else f"rm_{k}"
        stages(f"reward model {k}" if k else "reward model", run_rm_train, RMTrainConfig(**{
            "eval_every": 128, **settings, "init": policy, "data": str(pairs), "eval_data": str(eval_pairs),
            "out": str(out / name), "seed": seed + k, "device": device}))
        dirs.append(str(out / name / "model"))
    rm_eval = stages("reward model eval", run_rm_eval, RMEvalConfig(
        model=dirs[0], data=str(eval_pairs), out=str(out / "rm_eval"), device=device))
    return dirs, rm_eval


def sweep_and_report(stages: Stages, sweep_cfg: SweepConfig) -> dict:
    """The sweep as the last stage; its sweep.json and report.html then carry every stage's time."""
    report = stages("sweep", run_sweep, sweep_cfg)
    report["pipeline"]["timings_s"] = dict(stages.timings)
    out = Path(sweep_cfg.out)
    write_json_atomic(out / "sweep.json", report)
    write_report(out / "report.html", report)
    print("\ntimings (s): " + ", ".join(f"{k} {v}" for k, v in stages.timings.items()))
    print(f"report: {out / 'report.html'}")
    return report
