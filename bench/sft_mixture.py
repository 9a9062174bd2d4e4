"""Does the SFT policy reproduce its corpus? Style shares per prompt family, sampled vs corpus.

Samples one response per prompt from an SFT model of the built-in world (by default
on fresh draws of the train distribution, as the demo evaluates), classifies every
response with the world's `classify`, and prints, per family and style, the share
among the samples beside the share in the SFT corpus the model was trained on
(`--corpus`, the `family`/`style` fields the world writes), with the difference and
the EOS rate. The "form" columns classify samples and corpus alike with
`classify_form`, which accepts the number or capital a response states: the style
the model chose, apart from whether it knew the answer (a wrong sum is "wrong" in
the first columns and a concise answer in the second).

    python bench/sft_mixture.py --model RUN/sft/model --corpus RUN/data/sft.jsonl [--prompts 4096] [--split train]

A demo run directory (`tether demo --out RUN`) holds both.
"""

import argparse
import json
from collections import Counter

import torch

from tether.data import encode_prompt
from tether.models import load_causal_lm, load_tokenizer
from tether.pipelines.common import decode_responses
from tether.rollout import SamplingConfig, TorchSampler
from tether.worlds.assistant import classify, classify_form, format_prompt, make_prompts


def shares(pairs) -> dict[str, dict[str, float]]:
    """{family: {style: share}} from (family, style) pairs."""
    by_family: dict[str, Counter] = {}
    for family, style in pairs:
        by_family.setdefault(family, Counter())[style] += 1
    return {f: {s: n / sum(c.values()) for s, n in c.items()} for f, c in by_family.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="SFT model directory")
    parser.add_argument("--corpus", required=True, help="the SFT corpus it was trained on (JSONL with family and style)")
    parser.add_argument("--prompts", type=int, default=4096, help="prompts to sample, one response each (default: 4096)")
    parser.add_argument("--split", default="train", help="prompt split: train (fresh draws) or heldout (default: train)")
    parser.add_argument("--seed", type=int, default=1, help="prompt and sampling seed (default: 1)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    with open(args.corpus, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    corpus = shares((row["family"], row["style"]) for row in rows)
    corpus_form = shares((row["family"], classify_form(row["prompt"], row["completion"])) for row in rows)
    tokenizer, model = load_tokenizer(args.model), load_causal_lm(args.model).eval()
    prompts = make_prompts(args.split, args.prompts, args.seed)
    sampling = SamplingConfig(max_new_tokens=48, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    generator = torch.Generator().manual_seed(args.seed)
    texts, eos = [], []
    with torch.no_grad():
        for i in range(0, len(prompts), 256):
            ids = [encode_prompt(tokenizer, format_prompt(p.text)) for p in prompts[i:i + 256]]
            rollout = TorchSampler().generate(model, ids, sampling, generator)
            texts += decode_responses(tokenizer, rollout)
            eos += rollout.ended_with_eos.tolist()
    sampled = shares((p.family, classify(p, t)) for p, t in zip(prompts, texts))
    sampled_form = shares((p.family, classify_form(p, t)) for p, t in zip(prompts, texts))

    print(f"{args.prompts} {args.split} prompts, one sample each; EOS rate {sum(eos) / len(eos):.3f}")
    print(f"{'family':<11} {'style':<19} {'sampled':>8} {'corpus':>8} {'diff':>7}   "
          f"{'form: sampled':>13} {'corpus':>8} {'diff':>7}")
    worst = {"style": 0.0, "form": 0.0}
    for family in sorted(corpus):
        cells = [(sampled.get(family, {}), corpus[family]), (sampled_form.get(family, {}), corpus_form[family])]
        for style in sorted(set().union(*(set(a) | set(b) for a, b in cells))):
            (got, want), (got_form, want_form) = ((a.get(style, 0.0), b.get(style, 0.0)) for a, b in cells)
            worst["style"] = max(worst["style"], abs(got - want))
            worst["form"] = max(worst["form"], abs(got_form - want_form))
            print(f"{family:<11} {style:<19} {got:8.3f} {want:8.3f} {got - want:+7.3f}   "
                  f"{got_form:13.3f} {want_form:8.3f} {got_form - want_form:+7.3f}")
    print(f"largest difference: style {worst['style']:.3f}, form {worst['form']:.3f}")


if __name__ == "__main__":
    main()
