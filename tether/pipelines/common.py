"""Pieces every trainer needs: run directory, LR schedule, length-bucketed batches, finite-loss guard,
memory features (micro-batches, frozen-model dtype, peak memory)."""

import math
import random
import resource
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from tether.config import build_config, opt, save_config, to_dict
from tether.data import read_preferences, tokenize_pairs
from tether.data.collate import TRUNCATIONS, report_too_long
from tether.errors import InputError, RunError
from tether.io import remove_stale_temp
from tether.rollout import DEFAULT_ENGINE, make_engine


# Settings a run may be resumed (or a finished sweep run reused) with: where it runs and where it writes.
MAY_CHANGE_ON_RESUME = ("out", "resume", "device", "threads", "gradient_checkpointing")


def changed_settings(saved_config: Path, cfg) -> list[str]:
    """The fields of `cfg` that differ from a run's saved config.yaml, apart from MAY_CHANGE_ON_RESUME.
    The saved file is read as a config of the same class, so a field it lacks counts as its default."""
    before, now = to_dict(build_config(type(cfg), {}, saved_config)), to_dict(cfg)
    return sorted(k for k in now if k not in MAY_CHANGE_ON_RESUME and before[k] != now[k])


def prepare_run_dir(out, cfg) -> Path:
    """Create `out/` (an unwritable one is InputError), remove temporary files that killed writes left in it,
    and write the resolved `config.yaml` (enough to rerun). A run resumed (`cfg.resume`) with other
    settings than it was started with is InputError naming them, and its config.yaml stays as it was."""
    if not out:
        raise InputError("an output directory is required", field="out")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError("exists and is not a directory", path=out, field="out")
    if getattr(cfg, "resume", False) and (out / "config.yaml").is_file():
        changed = changed_settings(out / "config.yaml", cfg)
        if changed:
            raise InputError(f"cannot resume with settings other than the run's ({', '.join(changed)}); "
                             "use another --out, or start again without --resume", path=out, field=changed[0])
    try:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    except OSError as e:
        raise InputError(f"cannot write here: {e.strerror}", path=out, field="out") from None
    for folder in (out, out / "checkpoints"):
        remove_stale_temp(folder)
    return out


def cosine_lr(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_ratio: float = 0.1) -> float:
    """Linear warm-up to base_lr, then cosine decay to min_ratio·base_lr (as in nanoGPT)."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def set_lr(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def split_held_out(items: list, fraction: float, rng: random.Random) -> tuple[list, list]:
    """(held-out, train): a random `fraction` of `items` held out, the rest kept in their order of shuffling."""
    order = list(range(len(items)))
    rng.shuffle(order)
    n_held = int(len(items) * fraction)
    return [items[i] for i in order[:n_held]], [items[i] for i in order[n_held:]]


@dataclass
class PairFiles:
    """The preference pairs a trainer learns from and how they are read (`read_pair_splits`): the fields
    `rm train` and `dpo` share, declared once."""
    data: str = opt("", "labelled preference pairs (JSONL, Parquet or a datasets folder)")
    eval_data: str | None = opt(None, "held-out labelled pairs; default: a split of --data")
    eval_fraction: float = opt(0.1, "fraction of --data held out when --eval-data is not given", ge=0, lt=1)
    format: str | None = opt(None, "force the pair format: explicit, implicit or conversational")
    max_length: int = opt(256, "longest prompt+response in tokens (rm train keeps it in OUT/model/tether.json for "
                               "rm eval and score)", ge=2)
    truncation: str = opt("left", "longer pairs: left (cut the prompt's start, keep the responses), right (cut the "
                                  "responses' end), skip or error; counted on stderr", choices=TRUNCATIONS)
    skip_invalid: bool = opt(False, "skip invalid rows of --data and --eval-data and report them by reason, instead "
                                    "of stopping at the first")


def read_pair_splits(cfg: PairFiles, tokenizer, rng: random.Random):
    """(train pairs, held-out pairs, their tokens, the held-out tokens or None) as `rm train` and `dpo` read them:
    `cfg.data` in `cfg.format`; held out `cfg.eval_data`, else a `cfg.eval_fraction` split of `cfg.data` drawn
    with `rng`; invalid rows skipped and reported with `cfg.skip_invalid`; tokenised to `cfg.max_length` by
    `cfg.truncation`, one line per file counting the rows cut or skipped."""
    pairs = read_preferences(cfg.data, cfg.format, skip_invalid=cfg.skip_invalid)
    if cfg.eval_data:
        held = read_preferences(cfg.eval_data, cfg.format, skip_invalid=cfg.skip_invalid)
    else:
        held, pairs = split_held_out(pairs, cfg.eval_fraction, rng)
    train_tok = tokenize_pairs(pairs, tokenizer, cfg.max_length, cfg.truncation, path=cfg.data)
    held_tok = tokenize_pairs(held, tokenizer, cfg.max_length, cfg.truncation, path=cfg.eval_data or cfg.data) if held else None
    held_too_long = held_tok.too_long if held_tok else []
    if cfg.eval_data:  # one line per file
        report_too_long("pairs", train_tok.too_long, len(pairs), cfg.max_length, cfg.truncation, cfg.data)
        report_too_long("pairs", held_too_long, len(held), cfg.max_length, cfg.truncation, cfg.eval_data)
    else:
        report_too_long("pairs", train_tok.too_long + held_too_long, len(pairs) + len(held), cfg.max_length,
                        cfg.truncation, cfg.data)
    return pairs, held, train_tok, held_tok


def length_bucketed_batches(lengths: list[int], batch_size: int, rng: random.Random, pool: int = 50) -> list[list[int]]:
    """Shuffle, sort by length within pools of `pool` batches, cut into batches, shuffle the batches.

    Similar lengths share a batch (little padding) while the order stays random.
    """
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches = []
    for start in range(0, len(order), batch_size * pool):
        chunk = sorted(order[start:start + batch_size * pool], key=lambda i: lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def autocast(device: torch.device, bf16: bool):
    """bfloat16 autocast for forward passes when asked (weights and optimiser stay fp32)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def micro_batches(items: list, size: int) -> list[list]:
    """`items` cut into consecutive chunks of `size` (the last may be shorter); size 0: one chunk of all."""
    size = size or len(items)
    return [items[i:i + size] for i in range(0, len(items), size)]


FROZEN_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def frozen_dtype(name: str, device: torch.device) -> torch.dtype:
    """The weight dtype of a model that is never trained (reference policy, reward models):
    "auto" is bfloat16 on a GPU (half the memory and bandwidth; scores and log-probs are cast to
    float32 before any arithmetic on them) and float32 on CPU (where bfloat16 matmuls are slow)."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return FROZEN_DTYPES[name]


def frozen_dtype_opt(models: str, note: str = ""):
    """The `dtype` field of a stage that holds frozen models (`models` names them; `note` may add what stays
    float32), the one declaration `frozen_dtype` reads."""
    return opt("auto", f"weights of {models}: auto is bfloat16 on a GPU, float32 on CPU{note}",
               choices=("auto", *FROZEN_DTYPES))


def dtype_name(dtype: torch.dtype) -> str:
    """How a run's metrics record a weight dtype: "bfloat16", not "torch.bfloat16"."""
    return str(dtype).removeprefix("torch.")


def peak_memory_gb(device: torch.device) -> float:
    """Peak memory of this process so far, in GB (10⁹ bytes): on a GPU what torch allocated at most
    (`torch.cuda.max_memory_allocated`), on CPU the process's maximum resident set size (ru_maxrss:
    kilobytes on Linux, bytes on macOS)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1e9 if sys.platform == "darwin" else rss * 1024 / 1e9


def check_finite(loss: torch.Tensor, step: int, what: str = "loss", kept: str | None = None) -> None:
    """Stop the run with a clear message on a NaN/inf loss; `kept` says what survives (a checkpoint), if anything."""
    if not torch.isfinite(loss).all():
        raise RunError(f"{what} is {loss.item()} at step {step}; stopping" + (f" ({kept})" if kept else ""))


@torch.no_grad()
def sample_responses(model, tokenizer, prompt_ids: list[list[int]], sampling, generator, batch_size: int, engine=None):
    """Sample one response per prompt with `engine` (default: the registry's default engine):
    (texts, rollouts) with the texts decoded up to EOS."""
    engine = engine or make_engine(DEFAULT_ENGINE)
    texts, rollouts = [], []
    for i in range(0, len(prompt_ids), batch_size):
        rollout = engine.generate(model, prompt_ids[i:i + batch_size], sampling, generator)
        rollouts.append(rollout)
        texts += decode_responses(tokenizer, rollout)
    return texts, rollouts


def decode_responses(tokenizer, rollout) -> list[str]:
    """Response texts without EOS or padding."""
    lengths = rollout.response_mask.sum(1).tolist()
    return [tokenizer.decode(ids[:n], skip_special_tokens=True) for ids, n in zip(rollout.response_ids.tolist(), lengths)]
