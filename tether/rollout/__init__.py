"""tether.rollout: sampling responses from a causal LM, with masks that end at EOS and log-probs.

`TorchSampler` is the default engine (a KV-cached PyTorch loop, fast on CPU);
`HFGenerateSampler` wraps `model.generate` as a baseline. Both satisfy
`RolloutEngine`, so a faster engine can be dropped in (DESIGN §7): it joins
`ENGINES`, and `make_engine(name)` builds the one a config names.
"""

from tether.rollout.chunks import length_sorted_chunks, over_length_chunks, trim_padding
from tether.rollout.engines import DEFAULT_ENGINE, ENGINES, make_engine
from tether.rollout.hf_sampler import HFGenerateSampler
from tether.rollout.interface import Rollout, RolloutEngine, SamplingConfig
from tether.rollout.logprobs import policy_forward, response_logits, response_logprobs, sequence_logprobs
from tether.data.padding import position_ids_from_mask
from tether.rollout.masks import left_pad, no_eos_penalty, truncate_after_eos
from tether.rollout.sampling import inverse_cdf_sample, sample_next_token, top_k_filter, top_p_filter
from tether.rollout.torch_sampler import TorchSampler

__all__ = [
    "SamplingConfig",
    "Rollout",
    "RolloutEngine",
    "TorchSampler",
    "HFGenerateSampler",
    "ENGINES",
    "DEFAULT_ENGINE",
    "make_engine",
    "sequence_logprobs",
    "policy_forward",
    "response_logprobs",
    "response_logits",
    "no_eos_penalty",
    "truncate_after_eos",
    "left_pad",
    "trim_padding",
    "length_sorted_chunks",
    "over_length_chunks",
    "position_ids_from_mask",
    "top_k_filter",
    "top_p_filter",
    "inverse_cdf_sample",
    "sample_next_token",
]
