"""GPT-2's forward as plain tensor ops over the model's own weights, with a preallocated KV cache.

Why: calling a Hugging Face `GPT2LMHeadModel` for one new token runs some forty
module calls, decorators and mask builders; at the built-in world's size
(2 layers, n_embd 128) that Python overhead is most of a decoding step (DESIGN
§7). The same arithmetic written as ~15 tensor ops per layer decodes 1.7–2× as
fast, which is what brings `TorchSampler` past 2× `generate` on two CPU cores
(bench/bench_rollout.py). `TorchSampler` uses it only for a plain GPT-2
(`fast_gpt2_supported`); anything else — another architecture, LoRA adapters,
hooks, active dropout — goes through the model's own forward. tests/test_rollout.py
checks its log-probs against the Hugging Face forward.

Layer math (Radford et al. 2019; transformers' modeling_gpt2.py):
    h ← h + W_o · attn(LN_1(h)),   h ← h + MLP(LN_2(h)),   logits = lm_head(LN_f(h)),
with Conv1D layers computing x·W + b and attention scaled by 1/√d_head
(and 1/(layer + 1) when `scale_attn_by_inverse_layer_idx`).
"""

import torch
import torch.nn.functional as F
from torch import nn

from tether.rollout.kv_cache import PrefixKVDecoder, attend, plain_weights_without_hooks, unsharded_class


def fast_gpt2_supported(model) -> bool:
    """True for a plain `GPT2LMHeadModel` whose forward this module reproduces (to float rounding).

    False (so the model's own forward is used) for subclasses, active dropout
    (training mode with p > 0), cross-attention, upcast/reordered attention, any
    module hook but FSDP2's, sharded weights, or any layer replaced by a wrapper
    (LoRA, quantisation). A model sharded with FSDP2 qualifies while its weights are
    gathered (`tether.distributed.unsharded`): they are plain tensors then, and FSDP2's
    hooks, which only gather and free them, are what this decoder skips.
    """
    from transformers import GPT2LMHeadModel
    from transformers.pytorch_utils import Conv1D
    if unsharded_class(model) is not GPT2LMHeadModel or not plain_weights_without_hooks(model):
        return False
    if model.training and any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules()):
        return False
    config = model.config
    if config.add_cross_attention or config.reorder_and_upcast_attn:
        return False
    gpt2 = model.transformer
    expected = [(gpt2.wte, nn.Embedding), (gpt2.wpe, nn.Embedding), (gpt2.ln_f, nn.LayerNorm),
                (model.lm_head, nn.Linear)]
    for block in gpt2.h:
        expected += [(block.ln_1, nn.LayerNorm), (block.ln_2, nn.LayerNorm), (block.attn.c_attn, Conv1D),
                     (block.attn.c_proj, Conv1D), (block.mlp.c_fc, Conv1D), (block.mlp.c_proj, Conv1D)]
    return all(type(module) is kind for module, kind in expected)


def conv1d(x: torch.Tensor, layer) -> torch.Tensor:
    """GPT-2's Conv1D: x · W + b with W of shape (in, out). x: (B, T, in) → (B, T, out)."""
    return torch.addmm(layer.bias, x.reshape(-1, x.shape[-1]), layer.weight).view(*x.shape[:-1], -1)


def layer_norm(x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GPT-2's "gelu_new", 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), in one kernel instead of eight ops."""
    return F.gelu(x, approximate="tanh")


def fast_activation(act: nn.Module):
    """The MLP activation to call: `gelu_tanh` for transformers' NewGELUActivation, else the module itself."""
    from transformers.activations import NewGELUActivation
    return gelu_tanh if type(act) is NewGELUActivation else act


class FastGPT2Decoder(PrefixKVDecoder):
    """Decodes a plain GPT-2 from its own KV buffers (B, heads, P + R, d_head), filled left to right.

    Same interface as `ModelDecoder`: `prefill(prompt, prompt_mask)`, then
    `decode(token_ids, position_ids, length)` once per new token.
    """

    def __init__(self, model, prompt_mask: torch.Tensor, steps: int):
        config = model.config
        super().__init__(prompt_mask, steps, config.n_layer, model.transformer.wte.weight.dtype)
        self.model = model
        self.heads, self.head_dim = config.n_head, config.n_embd // config.n_head
        self.scales = [(self.head_dim ** -0.5 if config.scale_attn_weights else 1.0)
                       / (i + 1 if config.scale_attn_by_inverse_layer_idx else 1) for i in range(config.n_layer)]
        self.activations = [fast_activation(block.mlp.act) for block in model.transformer.h]

    def last_logits(self, input_ids: torch.Tensor, position_ids: torch.Tensor,
                    attention_mask: torch.Tensor) -> torch.Tensor:
        """Append T tokens (B, T) to the cache; attention_mask (B, 1, T, keys) is 0 where
        query t may attend to key j. Returns the logits after the last token (B, V)."""
        batch, new = input_ids.shape
        gpt2 = self.model.transformer
        h = F.embedding(input_ids, gpt2.wte.weight) + F.embedding(position_ids, gpt2.wpe.weight)  # (B, T, E)
        for block, cache, scale, act in zip(gpt2.h, self.caches, self.scales, self.activations):
            qkv = conv1d(layer_norm(h, block.ln_1), block.attn.c_attn).view(batch, new, 3, self.heads, self.head_dim)
            query, key, value = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, T, d_head)
            keys, values = cache.update(key, value)
            attended = attend(query, keys, values, attention_mask, scale)
            h = h + conv1d(attended.transpose(1, 2).reshape(batch, new, -1), block.attn.c_proj)
            h = h + conv1d(act(conv1d(layer_norm(h, block.ln_2), block.mlp.c_fc)), block.mlp.c_proj)
        head = self.model.lm_head
        return F.linear(layer_norm(h[:, -1], gpt2.ln_f), head.weight, head.bias)
