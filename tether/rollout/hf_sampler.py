"""The baseline engine: Hugging Face `generate`, returning the same `Rollout` as `TorchSampler`.

Used by the benchmark (the speed to beat) and by the tests (greedy tokens must
agree). Settings that `SamplingConfig` does not name (repetition penalty, …) come
from `model.generation_config`, as in any `generate` call.
"""

import torch

from tether.rollout.interface import Rollout, SamplingConfig
from tether.rollout.masks import left_pad, truncate_after_eos


class HFGenerateSampler:
    """`model.generate(do_sample=True, …)` with the raw logits kept to compute the same log-probs.

    `generate` draws from the global RNG; with a `generator`, a seed drawn from it
    seeds a forked global RNG, so runs are reproducible and the caller's global
    RNG state is left as it was.
    """

    def generate(self, model, prompt_ids: list[list[int]], cfg: SamplingConfig,
                 generator: torch.Generator | None = None) -> Rollout:
        device = next(model.parameters()).device
        prompt, prompt_mask = left_pad(prompt_ids, cfg.pad_token_id, device)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
            if generator is not None:
                torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator, device=generator.device)))
            out = model.generate(input_ids=prompt, attention_mask=prompt_mask, do_sample=True,
                                 max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_k=cfg.top_k,
                                 top_p=cfg.top_p, eos_token_id=cfg.eos_token_id, pad_token_id=cfg.pad_token_id,
                                 return_dict_in_generate=True, output_logits=True)
        sampled = out.sequences[:, prompt.shape[1]:]  # (B, R)
        logits = torch.stack(out.logits, dim=1) / cfg.temperature  # (B, R, V), before top-k/top-p
        logprobs = logits.log_softmax(-1).gather(-1, sampled.unsqueeze(-1)).squeeze(-1)
        response_ids, response_mask, ended_with_eos = truncate_after_eos(sampled, cfg.eos_token_id, cfg.pad_token_id)
        return Rollout(prompt_ids=prompt, prompt_mask=prompt_mask, response_ids=response_ids,
                       response_mask=response_mask, logprobs=logprobs * response_mask,
                       ended_with_eos=ended_with_eos)
