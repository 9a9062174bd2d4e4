"""Run-directory logging: `metrics.jsonl` (one JSON object per step) and TensorBoard scalars.

Metric names follow TRL where TRL has one (`objective/kl`, `loss/policy`, ...).
Only the process that owns the run directory logs (rank 0 under torchrun).
"""

import json
import math
from pathlib import Path

from tether.errors import RunError


class MetricsLogger:
    """Append metrics rows to `out/metrics.jsonl` and `out/tensorboard/`; `resume=True` keeps earlier rows up to `step`."""

    def __init__(self, out_dir, enabled: bool = True, tensorboard: bool = True, resume_from_step: int | None = None):
        self.enabled = enabled
        self.path = Path(out_dir) / "metrics.jsonl"
        self._writer = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_from_step is not None:
            truncate_jsonl(self.path, resume_from_step)
        elif self.path.exists():
            self.path.unlink()
        self._file = self.path.open("a", encoding="utf-8")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            # A resumed run drops the events after its checkpoint, so TensorBoard shows one stream per step.
            purge_step = None if resume_from_step is None else resume_from_step + 1
            self._writer = SummaryWriter(str(Path(out_dir) / "tensorboard"), purge_step=purge_step)

    def log(self, step: int, metrics: dict) -> None:
        """Append one row. A non-finite evaluation metric stops the run (RunError, the row unwritten); other
        non-finite statistics (explained variance of constant returns is NaN) are written as null, so
        every line stays valid JSON."""
        if not self.enabled:
            return
        row = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        not_finite = [k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)]
        for key in not_finite:
            if key.startswith("eval/"):
                raise RunError(f"evaluation metric {key} is {row[key]} at step {step}; stopping")
            row[key] = None
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._writer is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                    self._writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self.enabled:
            self._file.close()
            if self._writer is not None:
                self._writer.close()


def _plain(v):
    if hasattr(v, "item"):
        v = v.item()
    return v


def read_metrics(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def truncate_jsonl(path, last_step: int) -> None:
    """Keep the rows of a run's JSONL file with step <= last_step (a resumed run rewrites what came after)."""
    path = Path(path)
    if path.exists():
        kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= last_step]
        path.write_text("".join(line + "\n" for line in kept))
