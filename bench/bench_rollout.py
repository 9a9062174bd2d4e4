"""Rollout speed on CPU: TorchSampler vs Hugging Face `generate`, in one run.

The model (`--arch`) is a 2-layer GPT-2 (n_embd 128, vocabulary 600, ~0.5M
parameters, the size of the built-in world's policy) or a Llama of the same
width (RoPE, RMSNorm, SwiGLU, grouped-query attention 4/2) with random weights. Prompts are 8–16
tokens (mean ~12), left-padded. EOS gets a logit bias of −inf, so no row stops
early and every engine makes exactly batch × new_tokens tokens. Each repeat
times every engine back to back; the table shows medians over the repeats,
after one warm-up run each. Run it on an otherwise idle machine: with two torch
threads on two cores, another busy process slows every engine several-fold.

Engines: every engine of the registry (`tether.rollout.ENGINES`, so a new one is
measured as soon as it joins): `torch` = `TorchSampler` (the default; a plain
GPT-2 decodes through `FastGPT2Decoder`, a Llama through `FastLlamaDecoder`) and
`hf` = `HFGenerateSampler` (`generate` plus the logits it needs for the same
`Rollout`: ids, masks, log-probs); then `TorchSampler(fast=False)` (the path every
other model takes: the model's own forward with a preallocated KV cache) and bare
`model.generate` (token ids only, nothing else kept).

    python bench/bench_rollout.py [--arch gpt2|llama] [--threads 2] [--batch 16 64] [--new-tokens 32] [--repeats 5]
"""

import argparse
import statistics
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from tether.rollout import DEFAULT_ENGINE, ENGINES, SamplingConfig, TorchSampler, left_pad

VOCAB = 600
EOS = VOCAB - 1
PAD = 0


def build_model(arch: str = "gpt2"):
    """Random 0.5M-parameter GPT-2 or Llama whose LM head gives EOS a logit of −inf (no early stop)."""
    if arch == "llama":
        config = LlamaConfig(num_hidden_layers=2, hidden_size=128, intermediate_size=344, num_attention_heads=4,
                             num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=128,
                             tie_word_embeddings=True, bos_token_id=PAD, eos_token_id=EOS, pad_token_id=PAD)
        model = LlamaForCausalLM(config).eval()
    else:
        config = GPT2Config(n_layer=2, n_embd=128, n_head=4, vocab_size=VOCAB, n_positions=128, resid_pdrop=0,
                            embd_pdrop=0, attn_pdrop=0, bos_token_id=PAD, eos_token_id=EOS)
        model = GPT2LMHeadModel(config).eval()
    head = torch.nn.Linear(config.hidden_size, VOCAB, bias=True)
    head.weight = model.lm_head.weight  # keep the tie to the input embeddings
    with torch.no_grad():
        head.bias.zero_()
        head.bias[EOS] = float("-inf")
    model.lm_head = head
    return model


def random_prompts(batch: int, generator: torch.Generator) -> list[list[int]]:
    lengths = torch.randint(8, 17, (batch,), generator=generator).tolist()
    return [torch.randint(1, EOS, (n,), generator=generator).tolist() for n in lengths]


class BareGenerate:
    """`model.generate` returning token ids only: the cheapest use of Hugging Face's loop."""

    def generate(self, model, prompt_ids, cfg, generator=None):
        prompt, prompt_mask = left_pad(prompt_ids, cfg.pad_token_id)
        with torch.no_grad():
            return model.generate(input_ids=prompt, attention_mask=prompt_mask, do_sample=True,
                                  max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_k=cfg.top_k,
                                  top_p=cfg.top_p, eos_token_id=cfg.eos_token_id, pad_token_id=cfg.pad_token_id)


def seconds_per_run(engines: dict, model, prompts, cfg, repeats: int) -> dict[str, list[float]]:
    """Wall-clock seconds of each engine's `generate`, `repeats` times, engines interleaved."""
    generator = torch.Generator().manual_seed(0)
    times = {name: [] for name in engines}
    for name, engine in engines.items():  # warm-up
        rollout = engine.generate(model, prompts, cfg, generator)
        if hasattr(rollout, "response_mask"):
            assert rollout.response_mask.sum() == len(prompts) * cfg.max_new_tokens, f"{name} stopped early"
    for _ in range(repeats):
        for name, engine in engines.items():
            start = time.perf_counter()
            engine.generate(model, prompts, cfg, generator)
            times[name].append(time.perf_counter() - start)
    return times


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=["gpt2", "llama"], default="gpt2", help="model shape (default: gpt2)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default: 2)")
    parser.add_argument("--batch", type=int, nargs="+", default=[16, 64], help="batch sizes (default: 16 64)")
    parser.add_argument("--new-tokens", type=int, default=32, help="tokens sampled per prompt (default: 32)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per engine (default: 5)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(args.arch)
    n_params = sum(p.numel() for p in model.parameters())
    cfg = SamplingConfig(max_new_tokens=args.new_tokens, eos_token_id=EOS, pad_token_id=PAD)
    engines = {f"{name} ({engine.__name__})": engine() for name, engine in ENGINES.items()}
    engines |= {"TorchSampler, HF fwd": TorchSampler(fast=False), "model.generate": BareGenerate()}
    default = f"{DEFAULT_ENGINE} ({ENGINES[DEFAULT_ENGINE].__name__})"
    print(f"{args.arch} {n_params / 1e6:.2f}M parameters, torch {torch.__version__}, {args.threads} threads, "
          f"{args.new_tokens} new tokens, median of {args.repeats} runs")
    print(f"{'batch':>5}  {'engine':<24} {'tokens/s':>9}  {DEFAULT_ENGINE + ' is':>10}")
    for batch in args.batch:
        prompts = random_prompts(batch, torch.Generator().manual_seed(batch))
        times = seconds_per_run(engines, model, prompts, cfg, args.repeats)
        medians = {name: statistics.median(t) for name, t in times.items()}
        for name, median in medians.items():
            speedup = medians[name] / medians[default]
            print(f"{batch:>5}  {name:<24} {batch * args.new_tokens / median:>9.0f}  {speedup:>9.2f}×")


if __name__ == "__main__":
    main()
