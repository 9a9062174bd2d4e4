"""Reward-model training speed on CPU: tether's trainer vs a naive loop and TRL's RewardTrainer, in one run.

All three train the same reward model (the built-in world's small GPT-2 after a
short SFT, LM head replaced by a scalar head) on the same token ids: labelled
pairs of the world's response styles, the Bradley–Terry loss, AdamW, the same
batch size, learning rate, warm-up, gradient clipping and epochs. Each is timed
end to end — read the pairs, tokenise, build the model, train, score the
held-out pairs, save — and, inside that, its training loop alone; pairs/s is
epochs × training pairs / seconds. Held-out accuracy is printed beside the
speed: the comparison is at equal result.

- tether: `run_rm_train` (one packed row per pair: the shared prefix once, then both sides; batches bucketed by row length).
- naive: chosen and rejected as two separate forwards, every sequence padded to
  the longest in the data set, batches in random order, the model's own pooling.
- TRL: `trl.RewardTrainer` (fp32, no gradient checkpointing, pre-tokenised ids);
  skipped with the reason when `import trl` fails.

    python bench/bench_rm.py [--pairs 2000] [--epochs 1] [--batch 32] [--repeats 5] [--threads 2]
"""


import random
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from _common import (base_parser, interleaved, load_average, median, print_table, quiet, seconds, setup, spread,
                     trl_or_reason, world_pairs, world_policy, write_jsonl)
from tether.algos import bradley_terry_loss
from tether.data import pad_right, read_preferences, tokenize_pairs
from tether.models import load_tokenizer, reward_model_from_policy, set_seed
from tether.pipelines import reward as reward_pipeline
from tether.pipelines.common import cosine_lr, set_lr
from tether.pipelines.reward import RMTrainConfig, pair_scores, run_rm_train

MAX_LENGTH = 256
WARMUP = 20


@contextmanager
def training_clock(marks: dict):
    """Time `run_rm_train`'s training loop: from its first batch schedule to its held-out scoring.

    With `eval_every` out of reach, the held-out pairs are scored once, right after the last step.
    """
    schedule, scores = reward_pipeline.length_bucketed_batches, reward_pipeline.pair_scores

    def timed_schedule(*a, **kw):
        marks.setdefault("start", time.perf_counter())
        return schedule(*a, **kw)

    def timed_scores(*a, **kw):
        marks.setdefault("end", time.perf_counter())
        return scores(*a, **kw)

    reward_pipeline.length_bucketed_batches, reward_pipeline.pair_scores = timed_schedule, timed_scores
    try:
        yield
    finally:
        reward_pipeline.length_bucketed_batches, reward_pipeline.pair_scores = schedule, scores


def tether_run(policy, train, held, out, args) -> tuple[float, float]:
    """`run_rm_train` as a user runs it: (held-out accuracy, seconds in the training loop)."""
    marks = {}
    with training_clock(marks):
        metrics = run_rm_train(RMTrainConfig(init=str(policy), data=str(train), eval_data=str(held), out=str(out),
                                             epochs=args.epochs, batch_size=args.batch, lr=args.lr,
                                             warmup_steps=WARMUP, eval_every=10**9, seed=0, device="cpu"))
    return metrics["eval/accuracy"], marks["end"] - marks["start"]


def pad_to(seqs: list[list[int]], width: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad every sequence to `width` (the longest in the data set, not in the batch)."""
    return pad_right([s + [pad_id] * (width - len(s)) for s in seqs], pad_id)


def naive_scores(model, seqs, width, pad_id) -> torch.Tensor:
    """The model's own pooling (last token that is not the pad id) on sequences padded to `width`: (B,)."""
    ids, mask = pad_to(seqs, width, pad_id)
    return model(input_ids=ids, attention_mask=mask).logits.squeeze(-1)


def naive_run(policy, train, held, out, args) -> tuple[float, float]:
    """The plain loop: chosen and rejected as two forwards, padded to the data set's longest sequence."""
    tokenizer = load_tokenizer(policy)
    pad_id = tokenizer.pad_token_id
    tr = tokenize_pairs(read_preferences(train), tokenizer, MAX_LENGTH)
    ho = tokenize_pairs(read_preferences(held), tokenizer, MAX_LENGTH)
    width = max(map(len, tr.chosen_ids + tr.rejected_ids + ho.chosen_ids + ho.rejected_ids))
    set_seed(0)
    model = reward_model_from_policy(policy, pad_id).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    rng = random.Random(0)
    n = len(tr.chosen_ids)
    total = -(-n // args.batch) * args.epochs
    step, loop_start = 0, time.perf_counter()
    for _ in range(args.epochs):
        order = list(range(n))
        rng.shuffle(order)
        for start in range(0, n, args.batch):
            idx = order[start:start + args.batch]
            r_chosen = naive_scores(model, [tr.chosen_ids[i] for i in idx], width, pad_id)
            r_rejected = naive_scores(model, [tr.rejected_ids[i] for i in idx], width, pad_id)
            loss = bradley_terry_loss(r_chosen, r_rejected)
            set_lr(optimizer, cosine_lr(step, total, WARMUP, args.lr))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            step += 1
    train_s = time.perf_counter() - loop_start
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(ho.chosen_ids), 2 * args.batch):
            c = naive_scores(model, ho.chosen_ids[start:start + 2 * args.batch], width, pad_id)
            r = naive_scores(model, ho.rejected_ids[start:start + 2 * args.batch], width, pad_id)
            correct += (c > r).sum().item()
    model.save_pretrained(out / "model")
    tokenizer.save_pretrained(out / "model")
    return correct / len(ho.chosen_ids), train_s


def trl_run(policy, train, held, out, args) -> tuple[float, float]:
    """`trl.RewardTrainer` on the same token ids (fp32, no gradient checkpointing), then tether's scoring."""
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer
    tokenizer = load_tokenizer(policy)
    tr = tokenize_pairs(read_preferences(train), tokenizer, MAX_LENGTH)
    ho = tokenize_pairs(read_preferences(held), tokenizer, MAX_LENGTH)
    set_seed(0)
    model = reward_model_from_policy(policy, tokenizer.pad_token_id)
    config = RewardConfig(output_dir=str(out), per_device_train_batch_size=args.batch, num_train_epochs=args.epochs,
                          learning_rate=args.lr, lr_scheduler_type="cosine", warmup_steps=WARMUP, max_grad_norm=1.0,
                          gradient_checkpointing=False, bf16=False, use_cpu=True, report_to="none",
                          save_strategy="no", logging_steps=10**6, disable_tqdm=True, seed=0, max_length=MAX_LENGTH,
                          dataloader_num_workers=0)
    dataset = Dataset.from_dict({"chosen_ids": tr.chosen_ids, "rejected_ids": tr.rejected_ids})
    trainer = RewardTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
    _, train_s = seconds(trainer.train)
    r_chosen, r_rejected = pair_scores(trainer.model, ho, 2 * args.batch, "cpu")
    trainer.save_model(str(out / "model"))
    return (r_chosen > r_rejected).float().mean().item(), train_s


def main(argv=None) -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--pairs", type=int, default=2000, help="training pairs (default: 2000)")
    parser.add_argument("--eval-pairs", type=int, default=500, help="held-out pairs (default: 500)")
    parser.add_argument("--epochs", type=int, default=1, help="passes over the training pairs (default: 1)")
    parser.add_argument("--batch", type=int, default=32, help="pairs per optimiser step (default: 32)")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default: 1e-3)")
    parser.add_argument("--no-trl", action="store_true", help="leave TRL out even if it imports")
    args = parser.parse_args(argv)
    setup(args.threads)

    tmp = Path(tempfile.mkdtemp(prefix="tether-bench-rm-"))
    with quiet():
        policy = world_policy(tmp / "policy", threads=args.threads)
    train = write_jsonl(tmp / "train.jsonl", world_pairs(args.pairs, seed=0))
    held = write_jsonl(tmp / "held.jsonl", world_pairs(args.eval_pairs, seed=1))
    contenders = {"tether run_rm_train": tether_run, "naive loop": naive_run}
    trl, reason = (None, "TRL left out (--no-trl)") if args.no_trl else trl_or_reason()
    if trl is not None:
        contenders[f"TRL {trl.__version__} RewardTrainer"] = trl_run
    accuracy, train_s = {}, {name: [] for name in contenders}

    def job(name, fn):
        def run():
            out = Path(tempfile.mkdtemp(dir=tmp))
            with quiet():
                accuracy[name], s = fn(policy, train, held, out, args)
            train_s[name].append(s)
        return run

    times = interleaved({name: job(name, fn) for name, fn in contenders.items()}, args.repeats)
    train_s = {name: s[1:] for name, s in train_s.items()}  # the warm-up round is not timed
    pairs_done = args.pairs * args.epochs
    ours, ours_train = median(times["tether run_rm_train"]), median(train_s["tether run_rm_train"])
    print(f"\nreward model: {args.pairs} pairs × {args.epochs} epoch(s), batch {args.batch}, "
          f"{args.eval_pairs} held-out pairs; median of {args.repeats} (after 1 warm-up); {load_average()}")
    print("end to end: read, tokenise, build, train, score held-out pairs, save; training: the epochs' loop alone; "
          "÷ tether: seconds / tether's seconds (above 1: tether is faster)")
    print_table(["trainer", "end-to-end s", "min–max", "pairs/s", "÷ tether", "training s", "train pairs/s",
                 "÷ tether", "held-out acc"],
                [[name, median(t), spread(t), pairs_done / median(t), f"{median(t) / ours:.2f}×", median(train_s[name]),
                  pairs_done / median(train_s[name]), f"{median(train_s[name]) / ours_train:.2f}×",
                  f"{accuracy[name]:.3f}"] for name, t in times.items()])
    if reason:
        print(reason)


if __name__ == "__main__":
    main()
