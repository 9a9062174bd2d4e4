"""Parallel sweep runs on CPU: `tether sweep --jobs 2` vs the same PPO runs one after another, in one run.

Both contenders train the same PPO runs (β = 0.1 and 1.0, `tether ppo`'s defaults,
`--steps` iterations, no evaluation) on the built-in world's fixture of
`bench_ppo.py`, through the sweep's own `train_runs`: one after another with
`--threads` torch threads, or two at a time in worker processes with
threads/2 each. Wall time is measured end to end (worker start-up included);
contenders take turns, medians over `--repeats`.

    python bench/bench_sweep.py [--repeats 3] [--steps 30] [--threads 2]
"""

import tempfile
from pathlib import Path

from _common import base_parser, interleaved, load_average, median, print_table, quiet, setup, spread
from bench_ppo import fixtures
from tether.pipelines.ppo import PPOConfig
from tether.pipelines.sweep import train_runs
from tether.worlds.assistant import WORLD

BETAS = (0.1, 1.0)


def main(argv=None) -> None:
    parser = base_parser(__doc__, repeats=3)
    parser.add_argument("--steps", type=int, default=30, help="PPO iterations per run (default: 30)")
    args = parser.parse_args(argv)
    setup(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="tether-bench-sweep-"))
    with quiet():
        policy, rm, prompts = fixtures(tmp, args.threads)
    counter = iter(range(10**6))

    def configs() -> list[PPOConfig]:
        run = tmp / f"round{next(counter)}"  # fresh directories: finished runs would be read back, not trained
        return [PPOConfig(policy=str(policy), reward_model=str(rm), prompts=str(prompts), out=str(run / f"beta_{b:g}"),
                          beta=b, steps=args.steps, eval_every=0, eval_samples=64, samples_every=0, save_every=0,
                          device="cpu", seed=0, threads=args.threads, **WORLD.tuned["ppo"]) for b in BETAS]

    contenders = {"one after another (--jobs 1)": lambda: train_runs(configs(), jobs=1),
                  "two at a time (--jobs 2)": lambda: train_runs(configs(), jobs=2)}
    with quiet():
        times = interleaved(contenders, args.repeats)
    base = median(times["one after another (--jobs 1)"])
    print(f"\n{len(BETAS)} PPO runs × {args.steps} iterations, {args.threads} threads in all; "
          f"median of {args.repeats}; {load_average()}")
    print_table(["contender", "wall s", "min–max", "s per iteration of work", "speed-up"],
                [[name, median(t), spread(t), median(t) / (len(BETAS) * args.steps), f"{base / median(t):.2f}×"]
                 for name, t in times.items()])


if __name__ == "__main__":
    main()
