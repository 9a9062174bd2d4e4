"""Llama's (and Qwen2's) decoder layers run over the model's own submodules, with a preallocated KV cache.

Why: a Hugging Face `LlamaForCausalLM` call for one new token spends most of its
time at the built-in world's size outside the arithmetic: mask builders, kwarg
decorators, output dataclasses, the cache object, the rotary embedding recomputed
every step (DESIGN §7). This decoder keeps the arithmetic and drops the wrapper:
it calls the layer's own projections (`q_proj` … `down_proj`; plain `nn.Linear`
ones stacked, q/k/v in one matmul and gate/up in another), RMSNorm and activation
modules, so LoRA layers injected by peft take part as they do in the model's forward,
and computes RoPE's cos/sin with the model's own rotary module once for all
positions 0 … P + R − 1, then indexes them per step. `TorchSampler` uses it only
where `fast_llama_supported` says it reproduces the model's forward (to float
rounding, tests/test_rollout.py); every other model goes through `ModelDecoder`.

Layer math (Touvron et al. 2023; transformers' modeling_llama.py):
    h ← h + o_proj(attn(RoPE(q_proj(x)), RoPE(k_proj(x)), v_proj(x))),  x = RMSNorm_in(h)
    h ← h + down_proj(act(gate_proj(y)) · up_proj(y)),  y = RMSNorm_post(h)
    logits = lm_head(RMSNorm_final(h)),
attention scaled by 1/√d_head, with head i reading the keys of KV head i // (heads / kv_heads).
"""

import functools
import sys

import torch
import torch.nn.functional as F
from torch import nn

from tether.rollout.kv_cache import PrefixKVDecoder, attend, plain_weights_without_hooks, unsharded_class

# RoPE variants whose cos/sin depend on the position alone (no rescaling as the sequence grows).
STATIC_ROPE_TYPES = ("default", "linear", "llama3")


def llama_family():
    """{causal LM class: (base model, decoder layer, attention, MLP, rotary embedding) classes} of those covered."""
    from transformers import LlamaForCausalLM, Qwen2ForCausalLM
    from transformers.models.llama import modeling_llama as llama
    from transformers.models.qwen2 import modeling_qwen2 as qwen2
    return {
        LlamaForCausalLM: (llama.LlamaModel, llama.LlamaDecoderLayer, llama.LlamaAttention, llama.LlamaMLP,
                           llama.LlamaRotaryEmbedding),
        Qwen2ForCausalLM: (qwen2.Qwen2Model, qwen2.Qwen2DecoderLayer, qwen2.Qwen2Attention, qwen2.Qwen2MLP,
                           qwen2.Qwen2RotaryEmbedding),
    }


def unwrap_lora(model):
    """The causal LM inside a peft LoRA model (its adapters injected in place), or `model` itself.

    None for a peft model that changes more than layers: prompt learning, or activated
    LoRA (its adapters switch on after invocation tokens, by hooks set up in peft's forward).
    """
    from peft import PeftModelForCausalLM
    if type(model) is not PeftModelForCausalLM:
        return model
    config = model.active_peft_config
    if config.peft_type != "LORA" or config.is_prompt_learning or getattr(config, "alora_invocation_tokens", None):
        return None
    return model.get_base_model()


def fast_llama_supported(model) -> bool:
    """True for a Llama or Qwen2 causal LM (plain or LoRA-wrapped) whose forward `FastLlamaDecoder` reproduces.

    False (so the model's own forward is used) for subclasses, any module hook, active
    dropout, sliding-window layers, RoPE types that rescale with the sequence length,
    and any replaced decoder layer, attention, MLP or rotary module. Projections, norms,
    activations and the embedding may be any module (a LoRA layer, say): the decoder calls
    them as the model does. A model sharded with FSDP2 qualifies while its weights are
    gathered (`tether.distributed.unsharded`), as for `fast_gpt2_supported`.
    """
    model = unwrap_lora(model)
    family = llama_family()
    if unsharded_class(model) not in family or not plain_weights_without_hooks(model):
        return False
    base_class, layer_class, attention_class, mlp_class, rotary_class = family[unsharded_class(model)]
    config = model.config
    if model.training and (config.attention_dropout > 0
                           or any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules())):
        return False
    if set(getattr(config, "layer_types", None) or ["full_attention"]) != {"full_attention"}:
        return False
    base = model.model
    if (unsharded_class(base) is not base_class or type(base.rotary_emb) is not rotary_class
            or base.rotary_emb.rope_type not in STATIC_ROPE_TYPES or len(base.layers) != config.num_hidden_layers):
        return False
    return all(unsharded_class(layer) is layer_class and type(layer.self_attn) is attention_class and type(layer.mlp) is mlp_class
               for layer in base.layers)


class FastLlamaDecoder(PrefixKVDecoder):
    """Decodes a Llama-family model from `PrefixKVLayer` buffers (B, kv_heads, P + R, d_head).

    Same interface as `ModelDecoder`: `prefill(prompt, prompt_mask)`, then
    `decode(token_ids, position_ids, length)` once per new token.
    """

    def __init__(self, model, prompt_mask: torch.Tensor, steps: int):
        self.model = unwrap_lora(model)
        base = self.model.model
        super().__init__(prompt_mask, steps, len(base.layers), base.embed_tokens.weight.dtype)
        attention = base.layers[0].self_attn
        self.head_dim, self.groups, self.scale = attention.head_dim, attention.num_key_value_groups, attention.scaling
        self.kv_heads = self.model.config.num_key_value_heads
        self.apply_rotary = sys.modules[type(attention).__module__].apply_rotary_pos_emb
        positions = torch.arange(prompt_mask.shape[1] + steps, device=prompt_mask.device)[None]
        weight = base.embed_tokens.weight
        cos, sin = base.rotary_emb(weight, positions)  # each (1, P + R, d_head), attention_scaling applied
        self.cos, self.sin = cos[0], sin[0]
        self.qkv = [stacked_projection([layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj])
                    for layer in base.layers]
        self.gate_up = [stacked_projection([layer.mlp.gate_proj, layer.mlp.up_proj]) for layer in base.layers]

    def last_logits(self, input_ids: torch.Tensor, position_ids: torch.Tensor,
                    attention_mask: torch.Tensor) -> torch.Tensor:
        """Append T tokens (B, T) to the cache; attention_mask (B, 1, T, keys) is 0 where
        query t may attend to key j. Returns the logits after the last token (B, V)."""
        base = self.model.model
        h = base.embed_tokens(input_ids)  # (B, T, E)
        cos, sin = self.cos[position_ids], self.sin[position_ids]  # (B, T, d_head)
        mask = attention_mask.repeat(1, 1, self.groups, 1) if input_ids.shape[1] > 1 else attention_mask
        for layer, cache, qkv, gate_up in zip(base.layers, self.caches, self.qkv, self.gate_up):
            h = h + self.attention(layer.self_attn, qkv, layer.input_layernorm(h), cos, sin, mask, cache)
            gate, up = gate_up(layer.post_attention_layernorm(h)).chunk(2, dim=-1)
            h = h + layer.mlp.down_proj(layer.mlp.act_fn(gate) * up)
        return self.model.lm_head(base.norm(h[:, -1]))

    def attention(self, attention, qkv, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor,
                  cache) -> torch.Tensor:
        """Grouped-query attention of x (B, T, E) over the cache after appending its keys and values → (B, T, E).

        The `groups` query heads that share KV head j are stacked as G·T queries of j
        (HF's repeat_kv maps head i to KV head i // G), so no key is copied; `mask` is
        the (B, 1, T, keys) mask repeated G times along the queries (broadcast when T = 1).
        """
        batch, new, _ = x.shape
        heads = qkv(x).view(batch, new, -1, self.head_dim).transpose(1, 2)  # (B, heads + 2 kv_heads, T, d)
        query, key, value = heads.split([self.kv_heads * self.groups, self.kv_heads, self.kv_heads], dim=1)
        query, key = self.apply_rotary(query, key, cos, sin)
        keys, values = cache.update(key, value)
        grouped = query.reshape(batch, self.kv_heads, self.groups * new, self.head_dim)
        attended = attend(grouped, keys, values, mask, self.scale)
        return attention.o_proj(attended.view(batch, -1, new, self.head_dim).transpose(1, 2).reshape(batch, new, -1))


def stacked_projection(modules: list[nn.Module]):
    """A function x ↦ cat([m(x) for m in modules], −1).

    When every module is a plain `nn.Linear` (all with or all without bias) it is one
    `F.linear` over the weights stacked once (a copy that lives for one rollout): at
    decoding sizes a matmul costs mostly its dispatch, so q/k/v in one call and gate/up
    in one call make a step ~10% faster. Otherwise (a LoRA layer, say) the modules are called.
    """
    if all(type(m) is nn.Linear for m in modules) and len({m.bias is None for m in modules}) == 1:
        weight = torch.cat([m.weight for m in modules])
        bias = None if modules[0].bias is None else torch.cat([m.bias for m in modules])
        return functools.partial(F.linear, weight=weight, bias=bias)
    return lambda x: torch.cat([m(x) for m in modules], dim=-1)
