"""The default rollout engine: a plain PyTorch sampling loop over any Hugging Face causal LM.

At the sizes of the built-in world (a 0.5M-parameter GPT-2) a decoding step is a
few dozen tiny ops, so Python and dispatch overhead, not arithmetic, sets the
speed (DESIGN §7). The loop therefore does the least per step: one new token
per row against a KV cache, attention masks and position ids that are views of
buffers built once, and inverse-CDF sampling instead of `torch.multinomial`.
A plain GPT-2 skips the Hugging Face module stack altogether (`gpt2_decoder`), and
a Llama or Qwen2 runs its own submodules without the model-level wrapper (`llama_decoder`).
"""

import torch
from transformers.cache_utils import Cache

from tether.errors import InputError
from tether.rollout.gpt2_decoder import FastGPT2Decoder, fast_gpt2_supported
from tether.rollout.llama_decoder import FastLlamaDecoder, fast_llama_supported
from tether.rollout.interface import Rollout, SamplingConfig
from tether.rollout.logprobs import accepts_logits_to_keep, cache_argument
from tether.rollout.kv_cache import PrefixKVDecoder
from tether.rollout.masks import left_pad, truncate_after_eos
from tether.rollout.sampling import sample_next_token


class TorchSampler:
    """Batched sampling with a KV cache from any HF causal LM whose forward takes a `Cache`.

    Prompts are left-padded and get position ids cumsum(mask) − 1, so a prompt's
    response does not depend on the prompts it is batched with. Sampling stops
    when every row has emitted EOS or after `max_new_tokens`. The model is used
    in whatever mode it is in (callers put it in eval mode with dropout off).
    The returned tensors are ordinary tensors (not inference tensors), so they
    can feed a training forward.

    fast: decode a plain GPT-2 with `FastGPT2Decoder` and a Llama or Qwen2 with
    `FastLlamaDecoder` where they reproduce the model (the same numbers to float
    rounding, faster at the built-in world's size: bench/bench_rollout.py); False
    always calls the model's own forward (`ModelDecoder`).
    """

    def __init__(self, fast: bool = True):
        self.fast = fast

    def generate(self, model, prompt_ids: list[list[int]], cfg: SamplingConfig,
                 generator: torch.Generator | None = None) -> Rollout:
        device = next(model.parameters()).device
        prompt, prompt_mask = left_pad(prompt_ids, cfg.pad_token_id, device)
        check_fits_context(model, prompt.shape[1] + cfg.max_new_tokens)
        with torch.inference_mode():
            decoder = decoder_class(model, self.fast)(model, prompt_mask, cfg.max_new_tokens)
            sampled, logprobs = sample_loop(decoder, prompt, prompt_mask, cfg, generator)
        response_ids, response_mask, ended_with_eos = truncate_after_eos(sampled, cfg.eos_token_id, cfg.pad_token_id)
        return Rollout(prompt_ids=prompt, prompt_mask=prompt_mask, response_ids=response_ids,
                       response_mask=response_mask, logprobs=logprobs * response_mask,
                       ended_with_eos=ended_with_eos)


def decoder_class(model, fast: bool = True):
    """The decoder for `model`: a fast one where it reproduces the model's forward (if `fast`), else `ModelDecoder`."""
    if fast and fast_gpt2_supported(model):
        return FastGPT2Decoder
    if fast and fast_llama_supported(model):
        return FastLlamaDecoder
    return ModelDecoder


def check_fits_context(model, total_length: int) -> None:
    """Raise InputError when prompt + max_new_tokens exceeds the model's position table."""
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and total_length > limit:
        raise InputError(f"longest prompt + max_new_tokens = {total_length} exceeds the model's "
                         f"{limit} positions", field="max_new_tokens")


def sample_loop(decoder, prompt: torch.Tensor, prompt_mask: torch.Tensor, cfg: SamplingConfig,
                generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode up to max_new_tokens tokens: (sampled ids (B, R), their log-probs (B, R)), not yet cut at EOS."""
    batch, prompt_len = prompt.shape
    steps, device = cfg.max_new_tokens, prompt.device
    positions = prompt_mask.sum(-1, keepdim=True) + torch.arange(steps, device=device)  # (B, R)
    sampled = torch.empty(batch, steps, dtype=torch.long, device=device)
    logprobs = torch.empty(batch, steps, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    logits = decoder.prefill(prompt, prompt_mask)
    for t in range(steps):
        if t > 0:  # feed token t − 1, get the logits for token t
            logits = decoder.decode(sampled[:, t - 1:t], positions[:, t - 1:t], prompt_len + t)
        sampled[:, t], logprobs[:, t] = sample_next_token(logits, cfg.temperature, cfg.top_k, cfg.top_p, generator)
        done |= sampled[:, t] == cfg.eos_token_id
        if done.all():
            break
    return sampled[:, :t + 1], logprobs[:, :t + 1]


def check_full_attention(model, total_length: int) -> None:
    """InputError for a sliding-window model whose rollout outgrows its window: the decoder's masks
    let every token see all earlier ones, as full attention does."""
    window = getattr(model.config, "sliding_window", None)
    if getattr(model.config, "use_sliding_window", True) is False:  # Qwen2's configs name a window they do not use
        window = None
    if window is not None and total_length > window:
        raise InputError(f"longest prompt + max_new_tokens = {total_length} exceeds the model's sliding window of "
                         f"{window} tokens, which the torch engine does not apply; use --rollout-engine hf",
                         field="max_new_tokens")


class ModelDecoder(PrefixKVDecoder):
    """Decoding through the model's own forward (any causal LM) with a preallocated KV cache.

    The cache is transformers' `Cache` over the decoder's `PrefixKVLayer`s; the additive 4D
    mask (B, 1, queries, keys) is handed to the model as is, so the model skips its own
    mask construction every step (transformers returns a 4D mask unchanged). Recent
    transformers 5 releases rename the forward's `past_key_values` to `cache`; models written
    for either name work, and a PEFT model is asked about the model it wraps.
    `logits_to_keep=1` skips the LM head over the prompt when the model supports it.
    """

    def __init__(self, model, prompt_mask: torch.Tensor, steps: int):
        check_full_attention(model, prompt_mask.shape[1] + steps)
        num_layers = model.config.get_text_config().num_hidden_layers
        super().__init__(prompt_mask, steps, num_layers, next(model.parameters()).dtype)
        self.model = model
        self.forward_kwargs = {cache_argument(model) or "past_key_values": Cache(layers=self.caches), "use_cache": True}
        if accepts_logits_to_keep(model):
            self.forward_kwargs["logits_to_keep"] = 1

    def last_logits(self, input_ids: torch.Tensor, position_ids: torch.Tensor,
                    attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          **self.forward_kwargs).logits[:, -1]
