"""SFT speed on CPU: where a training step's time goes, what would make it faster, and the real run's time.

Part 1 (the table): tether's SFT step and variants of it, each timed over the
same number of training steps per repeat (`--steps`), contenders taking turns;
the projected run is tokenisation + steps × seconds per step for the world's
corpus (`--examples` × `--epochs`). Each step is split into collate (Python:
pad and mask), forward (with the loss), backward, and optimiser (AdamW, and
gradient clipping where `tether sft`'s default asks for it; it does not).
Variants are prototypes written here, not options of `tether sft`:

- plain HF loop: the baseline; `model(input_ids, labels=…)` (token-mean loss), batches in random order
  (padded to the batch's longest, no length bucketing), default AdamW.
- tether: `tether.pipelines.sft` as it is (length-bucketed batches, per-sequence loss, fused AdamW).
- foreach AdamW: `torch.optim.AdamW`'s default implementation, as tether had before it asked for `fused=True`.
- + fused loss: `F.cross_entropy` (one log-softmax-and-gather kernel) instead of `token_logprobs`.
- gelu_new: GPT-2's GELU as its Python formula (`transformers`' "gelu_new", five kernels),
  as the world's model had before it switched to "gelu_pytorch_tanh" (one kernel, same function).
- + bf16 autocast: `torch.autocast("cpu", torch.bfloat16)` around forward and loss.
- + fused loss, batch ×2: twice the demo's batch (half the steps, learning rate × √2).

Part 2: `run_sft` itself, end to end on the world's corpus (`--examples` × `--epochs`,
by default the demo's, at the demo's batch size; skip with `--skip-full`), once: the number issue 4 asks for.
`--full-variants` also trains some prototypes to the end, one epoch
variants included, and prints their held-out loss (a minute or two each): the
comparison at equal result.

    python bench/bench_sft.py [--repeats 5] [--threads 2] [--steps 30] [--examples 40000] [--epochs 2]
                              [--skip-full] [--full-variants]
"""

import contextlib
import copy
import math
import random
import tempfile
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from _common import base_parser, load_average, median, print_table, quiet, seconds, setup, spread
from tether.data import read_sft_examples
from tether.pipelines.common import cosine_lr, length_bucketed_batches, set_lr
from tether.pipelines.demo import DemoConfig
from tether.pipelines.sft import SFTConfig, eval_loss, init_policy, run_sft, sft_batch, sft_loss, tokenize_sft
from tether.worlds.assistant import WORLD

SFT_DEFAULTS = {f.name: f.default for f in fields(SFTConfig)}  # `tether sft`'s, shared by every variant
LR, WARMUP, MAX_LENGTH = WORLD.tuned["sft"]["lr"], SFT_DEFAULTS["warmup_steps"], SFT_DEFAULTS["max_length"]
DEMO = DemoConfig()
CLIP = SFT_DEFAULTS["max_grad_norm"]


@dataclass(frozen=True)
class Variant:
    """One way to run an SFT step (the defaults are tether's)."""
    batch: int = DEMO.sft_batch_size
    lr: float = LR
    bucketed: bool = True
    hf_loss: bool = False  # model(labels=…): token-mean cross-entropy, the plain baseline
    fused_loss: bool = False
    fused_adamw: bool = True
    activation: str | None = None  # None: the world model's own (gelu_pytorch_tanh)
    bf16: bool = False
    plain_adamw: bool = False  # AdamW defaults (betas 0.9, 0.999), as a plain loop would
    epochs: int | None = None  # full runs only; None: --epochs


VARIANTS = {
    "plain HF loop": Variant(bucketed=False, hf_loss=True, plain_adamw=True, fused_adamw=False),
    "tether": Variant(),
    "foreach AdamW": Variant(fused_adamw=False),
    "+ fused loss": Variant(fused_loss=True),
    "gelu_new": Variant(activation="gelu_new"),
    "+ bf16 autocast": Variant(bf16=True),
    "+ fused loss, batch ×2": Variant(batch=2 * DEMO.sft_batch_size, lr=LR * math.sqrt(2), fused_loss=True),
}
FAST = VARIANTS["+ fused loss"]
# Trained to the end with --full-variants: what each costs in held-out loss.
FULL_VARIANTS = {"tether": VARIANTS["tether"], "+ fused loss": FAST,
                 "+ fused loss, batch ×2": VARIANTS["+ fused loss, batch ×2"],
                 "+ fused loss, 1 epoch": replace(FAST, epochs=1), "tether, 1 epoch": Variant(epochs=1)}


def fused_sft_loss(model, ids, attn, completion_mask) -> torch.Tensor:
    """`sft_loss` with `F.cross_entropy`: −(1/B) Σ completion-token log-probs, one fused kernel."""
    logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1]
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="none")
    return (nll.view(ids.shape[0], -1) * completion_mask[:, 1:]).sum() / ids.shape[0]


def hf_loss(model, ids, attn, completion_mask) -> torch.Tensor:
    """What a plain loop writes: labels = ids with −100 off the completion, the model's token-mean loss."""
    return model(input_ids=ids, attention_mask=attn, labels=ids.masked_fill(completion_mask == 0, -100)).loss


class Trainer:
    """A copy of `run_sft`'s loop with the knobs of `Variant`, so that each knob can be timed alone."""

    def __init__(self, variant: Variant, model, rows, pad_id: int, total_steps: int, seed: int = 0):
        self.v, self.rows, self.pad_id, self.total = variant, rows, pad_id, total_steps
        self.model = copy.deepcopy(model).train()
        if variant.activation:
            from transformers.activations import ACT2FN
            for block in self.model.transformer.h:
                block.mlp.act = ACT2FN[variant.activation]
        betas = (0.9, 0.999) if variant.plain_adamw else (0.9, 0.95)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=variant.lr, betas=betas,
                                           fused=variant.fused_adamw or None)
        self.loss_fn = hf_loss if variant.hf_loss else fused_sft_loss if variant.fused_loss else sft_loss
        self.rng, self.step, self.queue = random.Random(seed), 0, []

    def next_batch(self) -> list[int]:
        if not self.queue:
            if self.v.bucketed:
                self.queue = length_bucketed_batches([len(r[0]) for r in self.rows], self.v.batch, self.rng)
            else:
                order = list(range(len(self.rows)))
                self.rng.shuffle(order)
                self.queue = [order[i:i + self.v.batch] for i in range(0, len(order), self.v.batch)]
        return self.queue.pop()

    def train_step(self, parts: dict) -> torch.Tensor:
        """One optimiser step; adds its collate/forward/backward/optimizer seconds to `parts`."""
        def timed(key, fn, *args):
            result, s = seconds(fn, *args)
            parts[key] = parts.get(key, 0.0) + s
            return result

        batch = timed("collate", sft_batch, [self.rows[i] for i in self.next_batch()], self.pad_id, "cpu")
        set_lr(self.optimizer, cosine_lr(self.step, self.total, WARMUP, self.v.lr))
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if self.v.bf16 else contextlib.nullcontext()

        def forward():
            with autocast:
                return self.loss_fn(self.model, *batch)

        def optimise():
            if CLIP:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), CLIP)
            self.optimizer.step()

        loss = timed("forward", forward)
        self.optimizer.zero_grad(set_to_none=True)
        timed("backward", loss.backward)
        timed("optimizer", optimise)
        self.step += 1
        return loss

    def steps(self, n: int, parts: dict) -> None:
        for _ in range(n):
            self.train_step(parts)


def full_prototype(variant: Variant, model, train, held, pad_id, epochs: int) -> tuple[float, float]:
    """(seconds, held-out loss per sequence) of a whole training run of `variant`."""
    steps = -(-len(train) // variant.batch) * (variant.epochs or epochs)
    trainer = Trainer(variant, model, train, pad_id, steps)
    _, s = seconds(trainer.steps, steps, {})
    return s, eval_loss(trainer.model, held, pad_id, 64, "cpu")


def main(argv=None) -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--steps", type=int, default=30, help="training steps per contender per repeat (default: 30)")
    parser.add_argument("--examples", type=int, default=DEMO.sft_examples,
                        help=f"SFT corpus size (default: {DEMO.sft_examples}, the demo's)")
    parser.add_argument("--epochs", type=int, default=DEMO.sft_epochs,
                        help=f"epochs of the projected and full runs (default: {DEMO.sft_epochs}, the demo's)")
    parser.add_argument("--skip-full", action="store_true", help="skip the end-to-end `run_sft`")
    parser.add_argument("--full-variants", action="store_true", help="also train every prototype to the end")
    args = parser.parse_args(argv)
    setup(args.threads)
    from tether.worlds.assistant import write_sft_corpus

    tmp = Path(tempfile.mkdtemp(prefix="tether-bench-sft-"))
    _, corpus_s = seconds(write_sft_corpus, tmp / "sft.jsonl", args.examples)
    examples, read_s = seconds(read_sft_examples, tmp / "sft.jsonl")
    model, tokenizer = init_policy("builtin:assistant", 0, "cpu")
    rows, tokenize_s = seconds(tokenize_sft, examples, tokenizer, MAX_LENGTH, tmp / "sft.jsonl")
    held, train = rows[:len(rows) // 50], rows[len(rows) // 50:]  # the 2% split `tether sft` holds out
    pad_id = tokenizer.pad_token_id

    trainers = {name: Trainer(v, model, train, pad_id, 10**6) for name, v in VARIANTS.items()}
    parts = {name: [] for name in VARIANTS}
    for round_ in range(1 + args.repeats):  # round 0 warms up
        for name, trainer in trainers.items():
            p = {}
            trainer.steps(args.steps, p)
            if round_:
                parts[name].append(p)

    per_step = {name: [sum(p.values()) / args.steps for p in ps] for name, ps in parts.items()}
    projected = {name: tokenize_s + -(-len(train) // VARIANTS[name].batch) * args.epochs * median(per_step[name])
                 for name in VARIANTS}
    print(f"\nSFT step on the world's GPT-2 ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters), "
          f"{args.steps} steps per repeat, median of {args.repeats}; projected run: {args.examples} examples × "
          f"{args.epochs} epochs + {tokenize_s:.1f} s tokenisation; {load_average()}")
    rows_out = []
    for name, ps in parts.items():
        ms = {k: 1000 * median([p[k] for p in ps]) / args.steps for k in ps[0]}
        rows_out.append([name, str(VARIANTS[name].batch), ms["collate"], ms["forward"], ms["backward"],
                         ms["optimizer"], 1000 * median(per_step[name]), spread([1000 * s for s in per_step[name]]),
                         projected[name], f"{projected['plain HF loop'] / projected[name]:.2f}×"])
    print_table(["variant", "batch", "collate ms", "forward ms", "backward ms", "optimizer ms", "step ms", "min–max",
                 "projected s", "vs plain"], rows_out)
    print(f"data: corpus written in {corpus_s:.1f} s, read in {read_s:.1f} s, tokenised in {tokenize_s:.1f} s "
          f"({len(rows)} rows, one tokenizer call per row)")

    if not args.skip_full:
        with quiet():
            metrics, full_s = seconds(run_sft, SFTConfig(data=str(tmp / "sft.jsonl"), out=str(tmp / "run"),
                                                         epochs=args.epochs, batch_size=DEMO.sft_batch_size,
                                                         device="cpu", threads=args.threads, lr=LR))
        print(f"\nrun_sft end to end ({args.examples} examples × {args.epochs} epochs, batch {DEMO.sft_batch_size}): {full_s:.1f} s "
              f"(projected {projected['tether']:.1f} s), held-out loss {metrics['eval/loss']:.3f} per sequence; {load_average()}")
    if args.full_variants:
        print("\nprototypes trained to the end (same split, same seed):")
        table = []
        for name, variant in FULL_VARIANTS.items():
            s, loss = full_prototype(variant, model, train, held, pad_id, args.epochs)
            table.append([name, str(variant.batch), str(variant.epochs or args.epochs), s, f"{loss:.3f}"])
        print_table(["variant", "batch", "epochs", "seconds", "held-out loss"], table)
        print(load_average())


if __name__ == "__main__":
    main()
