"""The default rollout engine: a plain PyTorch sampling loop over any Hugging Face causal LM.

At the sizes of the built-in world (a 0.5M-parameter GPT-2) a decoding step is a
few dozen tiny ops, so Python and dispatch overhead, not arithmetic, sets the
speed (DESIGN §7). The loop therefore does the least per step: the model sees
one new token per row with a reused KV cache, an attention mask and position
ids that are views of buffers built once, and the next token is drawn by
inverse-CDF sampling instead of `torch.multinomial`.
"""

import inspect

import torch
from transformers import DynamicCache

from tether.errors import InputError
from tether.rollout.interface import Rollout, SamplingConfig
from tether.rollout.masks import left_pad, position_ids_from_mask, truncate_after_eos
from tether.rollout.sampling import sample_next_token


class TorchSampler:
    """Batched sampling with a KV cache from any HF causal LM whose forward takes a `Cache`.

    Prompts are left-padded and get position ids cumsum(mask) − 1, so a prompt's
    response does not depend on the prompts it is batched with. Sampling stops
    when every row has emitted EOS or after `max_new_tokens`. The model is used
    in whatever mode it is in (callers put it in eval mode with dropout off).
    The returned tensors are ordinary tensors (not inference tensors), so they
    can feed a training forward.
    """

    def generate(self, model, prompt_ids: list[list[int]], cfg: SamplingConfig,
                 generator: torch.Generator | None = None) -> Rollout:
        device = next(model.parameters()).device
        prompt, prompt_mask = left_pad(prompt_ids, cfg.pad_token_id, device)
        check_fits_context(model, prompt.shape[1] + cfg.max_new_tokens)
        with torch.inference_mode():
            sampled, logprobs = sample_loop(model, prompt, prompt_mask, cfg, generator)
        response_ids, response_mask, ended_with_eos = truncate_after_eos(sampled, cfg.eos_token_id, cfg.pad_token_id)
        return Rollout(prompt_ids=prompt, prompt_mask=prompt_mask, response_ids=response_ids,
                       response_mask=response_mask, logprobs=logprobs * response_mask,
                       ended_with_eos=ended_with_eos)


def check_fits_context(model, total_length: int) -> None:
    """Raise InputError when prompt + max_new_tokens exceeds the model's position table."""
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and total_length > limit:
        raise InputError(f"longest prompt + max_new_tokens = {total_length} exceeds the model's "
                         f"{limit} positions", field="max_new_tokens")


def sample_loop(model, prompt: torch.Tensor, prompt_mask: torch.Tensor, cfg: SamplingConfig,
                generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode up to max_new_tokens tokens: (sampled ids (B, R), their log-probs (B, R)), not yet cut at EOS."""
    batch, prompt_len = prompt.shape
    steps, device = cfg.max_new_tokens, prompt.device
    forward = ForwardArgs(model)
    # (B, P + R) mask and (B, R) positions of the response tokens, built once; step t
    # passes views of them. Response columns are 1 from the start: step t only
    # shows the model the first P + t columns.
    attention = torch.cat([prompt_mask, prompt_mask.new_ones(batch, steps)], dim=1)
    positions = prompt_mask.sum(-1, keepdim=True) + torch.arange(steps, device=device)
    sampled = torch.empty(batch, steps, dtype=torch.long, device=device)
    logprobs = torch.empty(batch, steps, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)

    cache = DynamicCache(config=model.config)
    logits = model(input_ids=prompt, attention_mask=prompt_mask, position_ids=position_ids_from_mask(prompt_mask),
                   use_cache=True, **forward.prefill(cache)).logits[:, -1]
    for t in range(steps):
        if t > 0:  # feed token t − 1, get the logits for token t
            logits = model(input_ids=sampled[:, t - 1:t], attention_mask=attention[:, :prompt_len + t],
                           position_ids=positions[:, t - 1:t], use_cache=True, **forward.decode(cache)).logits[:, -1]
        sampled[:, t], logprobs[:, t] = sample_next_token(logits, cfg.temperature, cfg.top_k, cfg.top_p, generator)
        done |= sampled[:, t] == cfg.eos_token_id
        if done.all():
            break
    return sampled[:, :t + 1], logprobs[:, :t + 1]


class ForwardArgs:
    """The keyword names this model's forward takes for the KV cache and for computing only the last logits.

    transformers 5 renames `past_key_values` to `cache` (the old name warns on every
    call); models written for either name work. `logits_to_keep=1` skips the LM
    head over the prompt when the model supports it.
    """

    def __init__(self, model):
        params = inspect.signature(model.forward).parameters
        self.cache_name = "cache" if "cache" in params else "past_key_values"
        self.keeps_last_logits = "logits_to_keep" in params

    def prefill(self, cache) -> dict:
        kwargs = self.decode(cache)
        if self.keeps_last_logits:
            kwargs["logits_to_keep"] = 1
        return kwargs

    def decode(self, cache) -> dict:
        return {self.cache_name: cache}
