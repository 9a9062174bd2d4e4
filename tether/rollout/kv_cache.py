"""What every decoder of `TorchSampler` shares: one preallocated KV buffer per layer and the attention masks.

Prompts are left-padded (B, P) and the rollout adds R tokens, so each layer's keys and
values live in buffers (B, heads, P + R, d_head) filled left to right, and a new token
may attend to key j when j is a real prompt token or a response token already fed.
"""

import torch
from transformers.cache_utils import CacheLayerMixin

from tether.data.padding import position_ids_from_mask


def unsharded_class(module) -> type:
    """The module's class; for one that FSDP2 sharded, the class it was made from (`fully_shard` swaps in a
    subclass FSDP<Name> of FSDPModule and it)."""
    from torch.distributed.fsdp import FSDPModule
    bases = type(module).__bases__
    return bases[1] if isinstance(module, FSDPModule) and bases[0] is FSDPModule else type(module)


def fsdp_hook(hook) -> bool:
    """True for a forward hook that FSDP2 (`fully_shard`) registered: a method of its per-module state."""
    return type(getattr(hook, "__self__", None)).__module__.startswith("torch.distributed.fsdp")


def plain_weights_without_hooks(model) -> bool:
    """True when every parameter is a plain tensor (not an FSDP2 shard) and no module has a forward hook
    but FSDP2's, which only gather and free weights: what a decoder reading weights and calling
    submodules directly may skip."""
    from torch.distributed.tensor import DTensor
    if any(isinstance(p, DTensor) for p in model.parameters()):
        return False
    return all(fsdp_hook(hook) for m in model.modules() for hooks in (m._forward_hooks, m._forward_pre_hooks)
               for hook in hooks.values())



class PrefixKVLayer(CacheLayerMixin):
    """One layer's keys and values in buffers (B, heads, P + R, d_head) allocated once, on the first update.

    `update` writes the new tokens after the filled ones and returns the filled prefix as views,
    so a decoding step neither allocates nor concatenates (a `DynamicCache` grows by `torch.cat`
    every step) and attention reads only the keys written so far (a transformers `StaticCache`
    returns the whole buffer, unfilled slots too).
    """

    def __init__(self, max_length: int):
        super().__init__()
        self.max_length, self.length = max_length, 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        batch, heads, _, _ = key_states.shape
        self.keys = key_states.new_empty(batch, heads, self.max_length, key_states.shape[-1])
        self.values = value_states.new_empty(batch, heads, self.max_length, value_states.shape[-1])
        self.dtype, self.device = key_states.dtype, key_states.device
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start, end = self.length, self.length + key_states.shape[-2]
        self.keys[:, :, start:end] = key_states
        self.values[:, :, start:end] = value_states
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        """(key length, key offset) of the next forward's attention mask."""
        return self.length + query_length, 0

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        return self.max_length


def prompt_attention_mask(prompt_mask: torch.Tensor) -> torch.Tensor:
    """(B, P) left-padded prompt mask → (B, 1, P queries, P keys), True where query i may attend to key j.

    Query i attends to the real tokens at j ≤ i. A padding query attends to itself only:
    its output is never read, but some SDPA backends return NaN for an all-masked row,
    and NaN values times zero attention weights would reach the real rows through the cache.
    """
    prompt_len = prompt_mask.shape[1]
    causal = torch.ones(prompt_len, prompt_len, dtype=torch.bool, device=prompt_mask.device).tril()
    itself = torch.eye(prompt_len, dtype=torch.bool, device=prompt_mask.device)
    return (causal & (prompt_mask.bool()[:, None, :] | itself))[:, None]


def response_key_mask(prompt_mask: torch.Tensor, steps: int) -> torch.Tensor:
    """(B, 1, 1, P + R), True at the keys a new token may attend to: the real prompt tokens and every
    response column (a decoding step reads only the first `length` columns, all of them fed)."""
    batch = prompt_mask.shape[0]
    response = prompt_mask.new_ones(batch, steps, dtype=torch.bool)
    return torch.cat([prompt_mask.bool(), response], dim=1)[:, None, None, :]


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Boolean mask → the additive one added to attention scores: 0 where allowed, else the dtype's minimum
    (finite, so a row with every key closed gives uniform weights instead of NaN)."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, torch.finfo(dtype).min)


def attend(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
           scale: float) -> torch.Tensor:
    """softmax(q·kᵀ·scale + mask)·v (Vaswani et al. 2017, eq. 1), softmax in float32 as transformers' eager attention.

    query (B, heads, T, d), keys and values (B, heads, L, d), additive mask broadcastable to
    (B, heads, T, L) → (B, heads, T, d). Two matmuls: for a few queries against short caches
    they are 3–4× faster than `scaled_dot_product_attention`'s CPU kernel (bench/bench_rollout.py).
    """
    scores = torch.matmul(query, keys.transpose(-1, -2)) * scale + mask
    return torch.matmul(scores.softmax(-1, dtype=torch.float32).to(query.dtype), values)


class PrefixKVDecoder:
    """Base of the decoders of `TorchSampler`: one `PrefixKVLayer` per layer and additive masks built once.

    A subclass gives `last_logits(input_ids (B, T), position_ids (B, T), attention_mask (B, 1, T, keys))`
    → logits after the last token (B, V), appending the T tokens' keys and values to `self.caches`;
    the mask is 0 where query t may attend to key j and the dtype's minimum elsewhere.
    """

    def __init__(self, prompt_mask: torch.Tensor, steps: int, num_layers: int, dtype: torch.dtype):
        self.caches = [PrefixKVLayer(prompt_mask.shape[1] + steps) for _ in range(num_layers)]
        self.dtype = dtype
        self.key_mask = additive_mask(response_key_mask(prompt_mask, steps), dtype)  # (B, 1, 1, P + R)

    def prefill(self, prompt: torch.Tensor, prompt_mask: torch.Tensor) -> torch.Tensor:
        """Run the (B, P) left-padded prompt; return the logits for the first response token (B, V)."""
        mask = additive_mask(prompt_attention_mask(prompt_mask), self.dtype)
        return self.last_logits(prompt, position_ids_from_mask(prompt_mask), mask)

    def decode(self, token_ids: torch.Tensor, position_ids: torch.Tensor, length: int) -> torch.Tensor:
        """Feed one token per row (B, 1) at `position_ids` (B, 1); `length` = P + tokens so far. → (B, V)."""
        return self.last_logits(token_ids, position_ids, self.key_mask[..., :length])
