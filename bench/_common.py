"""What the benchmarks share: options, timing, the result table, and small fixtures of the built-in world.

Every benchmark times tether and a baseline in the same process, interleaved
repeat by repeat, and prints medians and the ratio baseline / tether (above 1:
tether is faster). With two torch threads on two cores, any other busy process
slows every contender several-fold (OpenMP threads wait on each other), so the
load average is printed before and after: trust a table only when it stayed low.
"""

import argparse
import contextlib
import io
import os
import random
import statistics
import time
from pathlib import Path

import torch


def base_parser(doc: str, repeats: int = 5) -> argparse.ArgumentParser:
    """--repeats and --threads, the options every benchmark has; the script's docstring is its --help."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=repeats, help=f"timed repeats per contender (default: {repeats})")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default: 2)")
    return parser


def setup(threads: int) -> None:
    """Pin torch's intra-op threads and print what the numbers were measured with."""
    torch.set_num_threads(threads)
    print(f"torch {torch.__version__}, {threads} thread(s), {os.cpu_count()} CPU(s); {load_average()}")


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min)"


def seconds(fn, *args, **kwargs) -> tuple[object, float]:
    """(fn(*args, **kwargs), wall-clock seconds it took)."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def interleaved(contenders: dict, repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of each zero-argument callable, `repeats` times, contenders taking turns (after `warmup` rounds).

    Taking turns spreads a burst of load from another process over all contenders
    instead of landing on one of them.
    """
    times = {name: [] for name in contenders}
    for round_ in range(warmup + repeats):
        for name, fn in contenders.items():
            _, s = seconds(fn)
            if round_ >= warmup:
                times[name].append(s)
    return times


def median(xs) -> float:
    return statistics.median(xs)


def spread(xs) -> str:
    """min–max of the repeats, so noise is visible beside the median."""
    return f"{min(xs):.3g}–{max(xs):.3g}"


def print_table(header: list[str], rows: list[list]) -> None:
    """A plain, aligned text table (floats to 3 significant digits)."""
    cells = [[c if isinstance(c, str) else f"{c:.3g}" for c in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for k, row in enumerate(cells):
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if k == 0:
            print("  ".join("-" * w for w in widths))


@contextlib.contextmanager
def quiet():
    """Swallow what a trainer prints (progress bars, banners) so the tables stay readable; errors still raise."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def trl_or_reason():
    """(the trl module, None), or (None, why it cannot be used) when it does not import beside our torch."""
    try:
        import trl
    except Exception as e:  # ImportError, or a broken install raising anything at import
        return None, f"TRL skipped: `import trl` failed ({type(e).__name__}: {e})"
    return trl, None


# ---------------------------------------------------------------- built-in world fixtures

def world_policy(out: Path, n_examples: int = 4000, seed: int = 0, threads: int = 2) -> Path:
    """A small SFT policy of the built-in world (one epoch on `n_examples`; a few seconds): it writes EOS.

    Returns the model directory (config.json, safetensors, tokenizer).
    """
    from tether.pipelines.sft import SFTConfig, run_sft
    from tether.worlds.assistant import WORLD, write_sft_corpus
    write_sft_corpus(out / "sft.jsonl", n_examples, seed=seed)
    run_sft(SFTConfig(data=str(out / "sft.jsonl"), out=str(out / "sft"), epochs=1, seed=seed, device="cpu",
                      threads=threads, eval_fraction=0.0, log_every=10**9, **WORLD.tuned["sft"]))
    return out / "sft" / "model"


def world_pairs(n: int, seed: int = 0) -> list[dict]:
    """`n` labelled pairs {"prompt", "chosen", "rejected"}: two corpus-style responses per train prompt,
    labelled by the world's gold labeler (so the reward model has something real to learn)."""
    from tether.worlds.assistant import CORPUS_MIXTURE, GoldLabeler, format_prompt, make_prompts, sample_response
    rng = random.Random(f"bench-pairs:{seed}")
    labeler = GoldLabeler(seed=seed)
    rows = []
    for p in make_prompts("train", n, seed):
        mixture = CORPUS_MIXTURE[p.family]
        y1 = y2 = ""
        while y1 == y2:  # identical responses carry no preference
            y1, y2 = (sample_response(p, s, rng) for s in rng.choices(tuple(mixture), weights=tuple(mixture.values()), k=2))
        prompt = format_prompt(p.text)
        chosen, rejected = (y1, y2) if labeler.label(prompt, y1, y2) else (y2, y1)
        rows.append({"prompt": prompt, "chosen": " " + chosen, "rejected": " " + rejected})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    from tether.io import write_jsonl_atomic
    write_jsonl_atomic(path, rows)
    return path
