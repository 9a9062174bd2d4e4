"""Rollout: masks that end at EOS, log-probs that PPO can recompute, padding and seed invariances."""

import math

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from tether.errors import InputError
from tether.rollout import (HFGenerateSampler, Rollout, SamplingConfig, TorchSampler, inverse_cdf_sample, left_pad,
                            no_eos_penalty, policy_forward, response_logits, response_logprobs, sample_next_token,
                            sequence_logprobs, top_k_filter, top_p_filter, truncate_after_eos)
from tether.rollout.gpt2_decoder import fast_gpt2_supported
from tether.rollout.llama_decoder import fast_llama_supported
from tether.rollout.torch_sampler import FastLlamaDecoder, ModelDecoder, decoder_class

VOCAB, EOS, PAD = 50, 1, 0
PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [14, 15, 16, 17], [18]]  # lengths 7, 2, 4, 1: left padding


# Every engine and decoding path: the fast decoders, the model's own forward, Hugging Face generate.
ENGINES = {"fast": TorchSampler(), "model": TorchSampler(fast=False), "hf": HFGenerateSampler()}
engines = pytest.mark.parametrize("engine", ENGINES.values(), ids=ENGINES.keys())


def tiny_gpt2(eos_bias: float = 0.0, attn_implementation: str = "sdpa", **config_overrides) -> GPT2LMHeadModel:
    """Random 2-layer GPT-2; `eos_bias` is added to the EOS logit so that responses end at varied steps."""
    torch.manual_seed(0)
    settings = dict(n_layer=2, n_embd=32, n_head=2, vocab_size=VOCAB, n_positions=64, resid_pdrop=0, embd_pdrop=0,
                    attn_pdrop=0, bos_token_id=EOS, eos_token_id=EOS, attn_implementation=attn_implementation)
    config = GPT2Config(**{**settings, **config_overrides})
    model = GPT2LMHeadModel(config).eval()
    head = torch.nn.Linear(config.n_embd, VOCAB, bias=True)
    head.weight = model.lm_head.weight
    with torch.no_grad():
        head.bias.zero_()
        head.bias[EOS] = eos_bias
    model.lm_head = head
    return model


def tiny_llama(**config_overrides):
    """Another architecture (rotary positions, grouped KV heads): `FastLlamaDecoder` or the model's own forward."""
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    settings = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                    num_key_value_heads=1, max_position_embeddings=64, bos_token_id=EOS, eos_token_id=EOS,
                    pad_token_id=PAD)
    return LlamaForCausalLM(LlamaConfig(**{**settings, **config_overrides})).eval()


def tiny_llama3_rope():
    """Llama 3's RoPE frequency scaling, 4 query heads on 2 KV heads of width 12, biases, tied embeddings."""
    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8}
    return tiny_llama(rope_parameters=rope, num_attention_heads=4, num_key_value_heads=2, head_dim=12,
                      attention_bias=True, mlp_bias=True, tie_word_embeddings=True)


def tiny_qwen2(**config_overrides):
    """Qwen2: Llama's layer with biases on q, k and v (none on o); 4 query heads on 2 KV heads."""
    from transformers import Qwen2Config, Qwen2ForCausalLM
    torch.manual_seed(0)
    settings = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, max_position_embeddings=64, bos_token_id=EOS, eos_token_id=EOS,
                    pad_token_id=PAD)
    model = Qwen2ForCausalLM(Qwen2Config(**{**settings, **config_overrides})).eval()
    with torch.no_grad():  # random q/k/v biases (they start at zero), so that a dropped bias shows
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(std=0.5)
    return model


LLAMA_FAMILY = [pytest.param(tiny_llama, id="llama"), pytest.param(tiny_llama3_rope, id="llama3-rope"),
                pytest.param(tiny_qwen2, id="qwen2")]


@pytest.fixture(scope="module")
def model():
    return tiny_gpt2()


@pytest.fixture(scope="module")
def eos_model():
    return tiny_gpt2(eos_bias=2.5)


def sampling(**overrides) -> SamplingConfig:
    return SamplingConfig(**{"max_new_tokens": 12, "eos_token_id": EOS, "pad_token_id": PAD, **overrides})


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def greedy_reference(model, prompt: list[int], steps: int) -> list[int]:
    """Slow reference: no cache, no padding, a full forward per token, argmax."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(steps):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt):]


# --- end of response: EOS, masks, the no-EOS rule ------------------------------------------------------------


def test_truncate_after_eos_by_hand():
    sampled = torch.tensor([[5, 1, 7, 1],   # EOS at 1: kept, the rest padded (a second EOS too)
                            [5, 6, 7, 8],   # no EOS: all kept, ended False
                            [1, 9, 9, 9]])  # EOS first: a one-token response
    ids, mask, ended = truncate_after_eos(sampled, eos_token_id=1, pad_token_id=0)
    assert ids.tolist() == [[5, 1, 0, 0], [5, 6, 7, 8], [1, 0, 0, 0]]
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert ended.tolist() == [True, False, True]


def test_truncate_after_eos_when_pad_is_eos():
    ids, mask, ended = truncate_after_eos(torch.tensor([[4, 1, 4], [4, 4, 4]]), eos_token_id=1, pad_token_id=1)
    assert ids.tolist() == [[4, 1, 1], [4, 4, 4]]
    assert mask.tolist() == [[1, 1, 0], [1, 1, 1]]
    assert ended.tolist() == [True, False]


@engines
def test_masks_end_at_eos_inclusive(eos_model, engine):
    rollout = engine.generate(eos_model, PROMPTS * 4, sampling(), seeded(1))
    assert 0 < int(rollout.ended_with_eos.sum()) < len(rollout.ended_with_eos), "want rows with and without EOS"
    for ids, mask, logprobs, ended in zip(rollout.response_ids.tolist(), rollout.response_mask.tolist(),
                                          rollout.logprobs.tolist(), rollout.ended_with_eos.tolist()):
        length = ids.index(EOS) + 1 if EOS in ids else len(ids)
        assert ended == (EOS in ids)
        assert mask == [1] * length + [0] * (len(ids) - length)
        assert ids[length:] == [PAD] * (len(ids) - length)
        assert all(lp < 0 for lp in logprobs[:length]) and logprobs[length:] == [0.0] * (len(ids) - length)
        if not ended:
            assert length == 12


@engines
def test_sampling_stops_once_every_row_has_ended(engine):
    rollout = engine.generate(tiny_gpt2(eos_bias=30.0), PROMPTS, sampling(), seeded())
    assert rollout.response_ids.tolist() == [[EOS]] * len(PROMPTS)
    assert rollout.response_mask.tolist() == [[1]] * len(PROMPTS)


def test_no_eos_penalty_by_hand():
    scores = torch.tensor([0.5, 2.0, -0.3])
    ended = torch.tensor([True, False, True])
    assert no_eos_penalty(scores, ended, penalty=-1.0).tolist() == pytest.approx([0.5, -1.0, -0.3])
    kept = no_eos_penalty(scores, ended, penalty=None)
    assert kept.tolist() == pytest.approx([0.5, 2.0, -0.3])
    assert scores.tolist() == pytest.approx([0.5, 2.0, -0.3])  # the input is not modified


# --- log-probs agree with one teacher-forced forward ----------------------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@engines
def test_rollout_logprobs_equal_teacher_forced_logprobs(eos_model, engine, temperature):
    rollout = engine.generate(eos_model, PROMPTS, sampling(temperature=temperature), seeded(2))
    with torch.no_grad():
        recomputed, logits = sequence_logprobs(eos_model, rollout.sequences, rollout.attention_mask,
                                               rollout.prompt_ids.shape[1], temperature)
    assert logits.shape == (*rollout.response_ids.shape, VOCAB)
    torch.testing.assert_close(rollout.logprobs, recomputed * rollout.response_mask, rtol=0, atol=1e-5)


@pytest.mark.parametrize("model", [
    pytest.param(lambda: tiny_gpt2(eos_bias=2.5, scale_attn_by_inverse_layer_idx=True, activation_function="relu"),
                 id="gpt2-layer-scaled-relu"),
    pytest.param(lambda: tiny_gpt2(eos_bias=2.5, attn_implementation="eager"), id="gpt2-eager"),
    *LLAMA_FAMILY,
])
@pytest.mark.parametrize("engine", [ENGINES["fast"], ENGINES["model"]], ids=["fast", "model"])
def test_logprobs_equal_teacher_forced_logprobs_for_other_models(model, engine):
    model = model()
    rollout = engine.generate(model, PROMPTS, sampling(temperature=0.7), seeded(2))
    with torch.no_grad():
        recomputed, _ = sequence_logprobs(model, rollout.sequences, rollout.attention_mask,
                                          rollout.prompt_ids.shape[1], 0.7)
    torch.testing.assert_close(rollout.logprobs, recomputed * rollout.response_mask, rtol=0, atol=1e-5)


def test_logprobs_ignore_top_k_and_top_p_truncation(eos_model):
    """Filtering decides which tokens can be drawn; the log-prob stays that of softmax(logits / τ)."""
    cfg = sampling(temperature=0.7, top_k=5, top_p=0.8)
    rollout = TorchSampler().generate(eos_model, PROMPTS, cfg, seeded(3))
    with torch.no_grad():
        recomputed, logits = sequence_logprobs(eos_model, rollout.sequences, rollout.attention_mask,
                                               rollout.prompt_ids.shape[1], cfg.temperature)
    torch.testing.assert_close(rollout.logprobs, recomputed * rollout.response_mask, rtol=0, atol=1e-5)
    rank = (logits > logits.gather(-1, rollout.response_ids.unsqueeze(-1))).sum(-1)  # tokens more probable
    assert (rank[rollout.response_mask.bool()] < 5).all()


def test_sequence_logprobs_match_a_hand_loop_and_ignore_left_padding(model):
    tokens = [5, 6, 7, 8, 9]  # prompt 5 6, response 7 8 9
    padded = torch.tensor([[PAD, PAD, 5, 6, 7, 8, 9]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        logprobs, _ = sequence_logprobs(model, padded, mask, response_start=4, temperature=0.7)
        alone = model(torch.tensor([tokens])).logits[0]  # (5, V)
    expected = [torch.log_softmax(alone[t - 1] / 0.7, -1)[tokens[t]].item() for t in (2, 3, 4)]
    assert logprobs[0].tolist() == pytest.approx(expected, abs=1e-5)


def test_policy_forward_from_the_response_start_keeps_only_the_rows_that_score_the_response(model):
    seqs = torch.tensor([[PAD, 5, 6, 7, 8, 9], [5, 6, 5, 9, PAD, PAD]])
    mask = torch.tensor([[0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    with torch.no_grad():
        full = policy_forward(model, seqs, mask)  # (2, 6, V)
        kept = policy_forward(model, seqs, mask, response_start=3)  # positions 2 … 5
    assert full.shape[1] == 6 and kept.shape[1] == 4
    torch.testing.assert_close(kept, full[:, 2:], atol=1e-5, rtol=0)
    for fn in (response_logprobs, response_logits):
        torch.testing.assert_close(fn(kept, seqs, 3, 0.7), fn(full, seqs, 3, 0.7), atol=1e-5, rtol=0)
    assert response_logits(kept, seqs, 3, 0.7).shape[1] == 3  # one row per response token


def test_sequence_logprobs_rejects_a_start_outside_the_sequence(model):
    with pytest.raises(ValueError, match=r"response_start must be in \[1, 2\], got 0"):
        sequence_logprobs(model, torch.tensor([[5, 6, 7]]), torch.ones(1, 3, dtype=torch.long), 0, 1.0)


# --- invariances: padding, seeds, greedy --------------------------------------------------------------------


@pytest.mark.parametrize("engine, model", [
    (ENGINES["fast"], lambda: tiny_gpt2(eos_bias=1.0)),
    (ENGINES["model"], lambda: tiny_gpt2(eos_bias=1.0)),
    (ENGINES["model"], lambda: tiny_gpt2(eos_bias=1.0, attn_implementation="eager")),
    (ENGINES["hf"], lambda: tiny_gpt2(eos_bias=1.0)),
    (ENGINES["model"], tiny_llama),
    (ENGINES["fast"], tiny_llama),
    (ENGINES["fast"], tiny_qwen2),
], ids=["fast", "model", "model-eager", "hf", "model-llama", "fast-llama", "fast-qwen2"])
def test_left_padding_does_not_change_a_greedy_response(engine, model):
    model = model()
    cfg = sampling(top_k=1)
    alone = engine.generate(model, [PROMPTS[1]], cfg, seeded(4))
    batched = engine.generate(model, PROMPTS, cfg, seeded(5))
    width = alone.response_ids.shape[1]
    assert batched.response_ids[1, :width].tolist() == alone.response_ids[0].tolist()
    assert batched.response_mask[1].sum() == alone.response_mask[0].sum()
    torch.testing.assert_close(batched.logprobs[1, :width], alone.logprobs[0], rtol=0, atol=1e-5)
    assert alone.response_ids[0].tolist() == greedy_reference(model, PROMPTS[1], 12)[:width]


@pytest.fixture(scope="module")
def greedy_responses(model):
    return [greedy_reference(model, prompt, 12) for prompt in PROMPTS]


@engines
def test_top_k_1_is_greedy_argmax(model, engine, greedy_responses):
    rollout = engine.generate(model, PROMPTS, sampling(temperature=1.3, top_k=1), seeded(6))
    assert rollout.response_ids.tolist() == greedy_responses


@engines
def test_same_seed_same_rollout(eos_model, engine):
    first, second, other = (engine.generate(eos_model, PROMPTS, sampling(temperature=0.9, top_p=0.95), seeded(s))
                            for s in (7, 7, 8))
    for name in ("prompt_ids", "prompt_mask", "response_ids", "response_mask", "logprobs", "ended_with_eos"):
        assert torch.equal(getattr(first, name), getattr(second, name)), name
    assert not torch.equal(first.response_ids, other.response_ids)


def test_hf_sampler_leaves_the_global_rng_alone(model):
    state = torch.get_rng_state()
    HFGenerateSampler().generate(model, PROMPTS, sampling(), seeded())
    assert torch.equal(torch.get_rng_state(), state)


def test_all_engines_agree_on_greedy_tokens(eos_model):
    cfg = sampling(top_k=1)
    fast, *others = (engine.generate(eos_model, PROMPTS, cfg, seeded()) for engine in ENGINES.values())
    for other in others:
        for name in ("prompt_ids", "prompt_mask", "response_ids", "response_mask", "ended_with_eos"):
            assert torch.equal(getattr(fast, name), getattr(other, name)), name
        torch.testing.assert_close(fast.logprobs, other.logprobs, rtol=0, atol=1e-5)


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")  # raised by peft
def test_fast_gpt2_only_for_a_plain_gpt2_without_dropout():
    from peft import LoraConfig, get_peft_model
    assert fast_gpt2_supported(tiny_gpt2())
    assert not fast_gpt2_supported(tiny_llama())
    assert fast_gpt2_supported(tiny_gpt2().train())  # dropout p = 0: training mode changes nothing
    assert not fast_gpt2_supported(tiny_gpt2(resid_pdrop=0.1).train())
    assert fast_gpt2_supported(tiny_gpt2(resid_pdrop=0.1).eval())
    hooked = tiny_gpt2()
    hooked.transformer.h[1].mlp.register_forward_hook(lambda module, args, out: out * 2)
    assert not fast_gpt2_supported(hooked)
    lora = get_peft_model(tiny_gpt2(), LoraConfig(r=2, target_modules=["c_attn"], fan_in_fan_out=True))
    assert not fast_gpt2_supported(lora)
    assert not fast_gpt2_supported(lora.get_base_model())  # the LoRA layers are injected in place


@pytest.mark.parametrize("model", LLAMA_FAMILY)
def test_fast_llama_decoder_samples_what_the_model_forward_samples(model):
    model = model()
    assert decoder_class(model) is FastLlamaDecoder and decoder_class(model, fast=False) is ModelDecoder
    cfg = sampling(temperature=0.8, top_p=0.95)
    fast = TorchSampler().generate(model, PROMPTS * 2, cfg, seeded(11))
    slow = TorchSampler(fast=False).generate(model, PROMPTS * 2, cfg, seeded(11))
    for name in ("response_ids", "response_mask", "ended_with_eos"):
        assert torch.equal(getattr(fast, name), getattr(slow, name)), name
    torch.testing.assert_close(fast.logprobs, slow.logprobs, rtol=0, atol=1e-5)


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")  # raised by peft
def test_fast_llama_only_where_it_reproduces_the_model():
    from peft import LoraConfig, PrefixTuningConfig, get_peft_model
    from transformers import LlamaForCausalLM
    assert fast_llama_supported(tiny_llama()) and fast_llama_supported(tiny_qwen2())
    assert not fast_llama_supported(tiny_gpt2())
    assert fast_llama_supported(tiny_llama().train())  # dropout 0: training mode changes nothing
    assert not fast_llama_supported(tiny_llama(attention_dropout=0.1).train())
    assert fast_llama_supported(tiny_llama(attention_dropout=0.1).eval())
    assert not fast_llama_supported(tiny_qwen2(use_sliding_window=True, sliding_window=8, max_window_layers=0))
    dynamic = {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0}
    assert not fast_llama_supported(tiny_llama(rope_parameters=dynamic))  # its frequencies change with the length
    subclassed = tiny_llama()
    subclassed.__class__ = type("MyLlama", (LlamaForCausalLM,), {})
    assert not fast_llama_supported(subclassed)
    hooked = tiny_llama()
    hooked.model.layers[1].mlp.register_forward_hook(lambda module, args, out: out * 2)
    assert not fast_llama_supported(hooked)
    replaced = tiny_llama()
    replaced.model.layers[0].self_attn = torch.nn.Identity()
    assert not fast_llama_supported(replaced)
    lora = get_peft_model(tiny_llama(), LoraConfig(r=2, target_modules=["q_proj", "v_proj", "down_proj"],
                                                   task_type="CAUSAL_LM"))
    assert fast_llama_supported(lora)  # the decoder calls the LoRA layers as the model does
    prefix = get_peft_model(tiny_llama(), PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=2))
    assert not fast_llama_supported(prefix)  # prompt learning changes the forward, not a layer


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_lora_llama_is_sampled_with_its_adapters_on_and_off():
    """The fast decoder runs peft's LoRA layers: the adapter shapes the log-probs, and `disable_adapter` removes it."""
    from peft import LoraConfig, get_peft_model
    adapter = LoraConfig(r=2, target_modules=["q_proj", "k_proj", "o_proj", "up_proj"], task_type="CAUSAL_LM",
                         init_lora_weights=False)
    policy = get_peft_model(tiny_llama(), adapter).eval()
    assert decoder_class(policy) is FastLlamaDecoder
    cfg = sampling(temperature=0.7)
    rollout = TorchSampler().generate(policy, PROMPTS, cfg, seeded(9))
    with torch.no_grad():
        recomputed, _ = sequence_logprobs(policy, rollout.sequences, rollout.attention_mask,
                                          rollout.prompt_ids.shape[1], 0.7)
        without_adapter, _ = sequence_logprobs(tiny_llama(), rollout.sequences, rollout.attention_mask,
                                               rollout.prompt_ids.shape[1], 0.7)
    torch.testing.assert_close(rollout.logprobs, recomputed * rollout.response_mask, rtol=0, atol=1e-5)
    assert (rollout.logprobs - without_adapter * rollout.response_mask).abs().max() > 1e-3
    with policy.disable_adapter():
        base = TorchSampler().generate(policy, PROMPTS, cfg, seeded(9))
    reference = TorchSampler().generate(tiny_llama(), PROMPTS, cfg, seeded(9))
    assert torch.equal(base.response_ids, reference.response_ids)
    torch.testing.assert_close(base.logprobs, reference.logprobs, rtol=0, atol=1e-6)


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_lora_adapters_are_sampled_with(eos_model):
    """A LoRA policy goes through its own forward, so the adapter shapes the samples and log-probs."""
    from peft import LoraConfig, get_peft_model
    policy = get_peft_model(tiny_gpt2(eos_bias=2.5), LoraConfig(r=2, target_modules=["c_attn"], fan_in_fan_out=True,
                                                                 init_lora_weights=False)).eval()
    rollout = TorchSampler().generate(policy, PROMPTS, sampling(temperature=0.7), seeded(9))
    with torch.no_grad():
        recomputed, _ = sequence_logprobs(policy, rollout.sequences, rollout.attention_mask,
                                          rollout.prompt_ids.shape[1], 0.7)
        without_adapter, _ = sequence_logprobs(eos_model, rollout.sequences, rollout.attention_mask,
                                               rollout.prompt_ids.shape[1], 0.7)
    torch.testing.assert_close(rollout.logprobs, recomputed * rollout.response_mask, rtol=0, atol=1e-5)
    assert (rollout.logprobs - without_adapter * rollout.response_mask).abs().max() > 1e-3


# --- the Rollout object -------------------------------------------------------------------------------------


def test_rollout_sequences_concatenate_prompt_and_response():
    rollout = Rollout(prompt_ids=torch.tensor([[0, 5]]), prompt_mask=torch.tensor([[0, 1]]),
                      response_ids=torch.tensor([[7, 1, 0]]), response_mask=torch.tensor([[1, 1, 0]]),
                      logprobs=torch.tensor([[-0.5, -0.1, 0.0]]), ended_with_eos=torch.tensor([True]))
    assert rollout.sequences.tolist() == [[0, 5, 7, 1, 0]]
    assert rollout.attention_mask.tolist() == [[0, 1, 1, 1, 0]]


def test_rollout_tensors_can_feed_a_training_forward(model):
    rollout = TorchSampler().generate(model, PROMPTS, sampling(), seeded())
    logprobs, _ = sequence_logprobs(model, rollout.sequences, rollout.attention_mask,
                                    rollout.prompt_ids.shape[1], 1.0)
    (logprobs * rollout.response_mask).sum().backward()  # inference tensors would raise here
    assert model.transformer.wte.weight.grad is not None
    model.zero_grad(set_to_none=True)


# --- sampling helpers by hand -------------------------------------------------------------------------------


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = torch.tensor([[0.2, 0.5, 0.3]]).log()  # sorted: 0.5, 0.3, 0.2
    kept = lambda p: torch.isfinite(top_p_filter(logits, p))[0].tolist()  # noqa: E731
    assert kept(0.5) == [False, True, False]  # 0.5 alone reaches 0.5
    assert kept(0.6) == [False, True, True]   # 0.5 < 0.6: the crossing token 0.3 is kept
    assert kept(0.8) == [False, True, True]   # 0.5 + 0.3 = 0.8 reaches 0.8
    assert kept(0.81) == [True, True, True]
    assert kept(1.0) == [True, True, True]
    assert torch.equal(top_p_filter(logits, 0.6)[0, 1:], logits[0, 1:])  # kept logits are unchanged


def test_top_k_keeps_the_k_largest_and_their_ties():
    logits = torch.tensor([[1.0, 3.0, 2.0, 3.0, 0.0]])
    assert torch.isfinite(top_k_filter(logits, 1))[0].tolist() == [False, True, False, True, False]
    assert torch.isfinite(top_k_filter(logits, 3))[0].tolist() == [False, True, True, True, False]
    assert torch.equal(top_k_filter(logits, 0), logits)


def test_inverse_cdf_sample_follows_the_weights_and_never_draws_a_zero():
    weights = torch.tensor([[0.0, 1.0, 0.0, 3.0, 0.0]]).expand(20000, 5)  # unnormalised: ¼ and ¾
    draws = inverse_cdf_sample(weights, seeded())
    counts = torch.bincount(draws, minlength=5).tolist()
    assert counts[0] == counts[2] == counts[4] == 0
    assert counts[1] / 20000 == pytest.approx(0.25, abs=0.015)  # 5 standard deviations ≈ 0.015


def test_sample_next_token_returns_the_unfiltered_logprob():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    token, logprob = sample_next_token(logits, temperature=0.5, top_k=1, top_p=1.0, generator=seeded())
    assert token.tolist() == [0]
    expected = 4.0 - math.log(sum(math.exp(x / 0.5) for x in (2.0, 1.0, 0.0, -1.0)))
    assert logprob.tolist() == pytest.approx([expected])


# --- bad input ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides, message", [
    ({"temperature": 0.0}, r'"temperature": must be > 0'),
    ({"top_k": -1}, r'"top_k": must be ≥ 0'),
    ({"top_p": 0.0}, r'"top_p": must be in \(0, 1\]'),
    ({"max_new_tokens": 0}, r'"max_new_tokens": must be ≥ 1'),
])
def test_sampling_config_names_the_bad_field(overrides, message):
    with pytest.raises(InputError, match=message):
        sampling(**overrides)


def test_empty_prompts_are_input_errors():
    with pytest.raises(InputError, match=r'"prompt_ids": prompt 1 is empty'):
        left_pad([[5], []], PAD)
    with pytest.raises(InputError, match=r'"prompt_ids": no prompts'):
        left_pad([], PAD)


def test_too_long_for_the_model_is_an_input_error(model):
    with pytest.raises(InputError, match=r'"max_new_tokens": longest prompt \+ max_new_tokens = 67 exceeds'):
        TorchSampler().generate(model, PROMPTS, sampling(max_new_tokens=60), seeded())


@pytest.mark.parametrize("decoder_class", [ModelDecoder, FastLlamaDecoder])
def test_decoders_write_every_step_into_one_preallocated_cache(decoder_class):
    """Each layer's keys and values are allocated once, P + R long, and read back as views of them."""
    from tether.rollout.torch_sampler import sample_loop
    model = tiny_llama()
    prompt, prompt_mask = left_pad(PROMPTS, PAD)
    cfg = sampling(max_new_tokens=6)
    decoder = decoder_class(model, prompt_mask, cfg.max_new_tokens)
    layers = decoder.caches
    written = []
    original_update = type(layers[0]).update

    def update(layer, keys, values, *args, **kwargs):
        filled = original_update(layer, keys, values, *args, **kwargs)
        written.append((layer.keys.data_ptr(), filled[0].data_ptr(), filled[0].shape[2]))
        return filled

    with torch.inference_mode(), pytest.MonkeyPatch.context() as patch:
        patch.setattr(type(layers[0]), "update", update)
        sample_loop(decoder, prompt, prompt_mask, cfg, seeded())
    assert all(layer.keys.shape[2] == prompt.shape[1] + cfg.max_new_tokens for layer in layers)
    assert all(buffer == view for buffer, view, _ in written)  # the returned keys are the buffer itself
    assert {buffer for buffer, _, _ in written} == {layer.keys.data_ptr() for layer in layers}
    assert [n for _, _, n in written[::len(layers)]] == list(range(prompt.shape[1], prompt.shape[1] + 6))


def test_a_rollout_beyond_a_sliding_window_is_an_input_error():
    qwen2 = tiny_qwen2(use_sliding_window=True, sliding_window=8, max_window_layers=0)
    with pytest.raises(InputError, match=r'"max_new_tokens": .* sliding window of 8 tokens'):
        TorchSampler().generate(qwen2, PROMPTS, sampling(max_new_tokens=4), seeded())
    model = tiny_llama()
    model.config.sliding_window = 8
    with pytest.raises(InputError, match=r'"max_new_tokens": .* sliding window of 8 tokens'):
        TorchSampler(fast=False).generate(model, PROMPTS, sampling(max_new_tokens=4), seeded())
    model.config.use_sliding_window = False  # a window the config names but the model does not use
    TorchSampler(fast=False).generate(model, PROMPTS, sampling(max_new_tokens=4), seeded())
