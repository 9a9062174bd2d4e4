"""Reward pooling, interoperability with plain transformers, the value head and the actor–critic."""

import re
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification

import tether
from conftest import make_policy, make_tokenizer
from tether.data import collate_pairs, pad_left, pad_right, unpack_pairs
from tether.models import (ActorCritic, PolicyWithValue, load_causal_lm, load_reward_model, reward_model_from_policy,
                           score_head, score_pairs, score_sequences)
from tether.models.reward import packs_pairs, token_scores


def seqs_of(tokenizer, texts):
    return [tokenizer(t, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for t in texts]


def test_score_same_left_right_alone_and_in_batch(tiny_dirs):
    tokenizer = make_tokenizer()
    rm = load_reward_model(tiny_dirs["rm"])
    seqs = seqs_of(tokenizer, ["what is the capital of france ? paris .", "yes", "a b c d e f g h a b c"])
    alone = torch.stack([score_sequences(rm, *pad_right([s], tokenizer.pad_token_id)) for s in seqs]).squeeze(1)
    right = score_sequences(rm, *pad_right(seqs, tokenizer.pad_token_id))
    left = score_sequences(rm, *pad_left(seqs, tokenizer.pad_token_id))
    torch.testing.assert_close(right, alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(left, alone, atol=1e-5, rtol=0)


def pairs_of(tokenizer):
    """Pairs with a shared prompt, one side that is a prefix of the other, and no shared token at all."""
    chosen = seqs_of(tokenizer, ["what is the capital of france ? paris .", "yes", "paris . paris .", "a b c"])
    rejected = seqs_of(tokenizer, ["what is the capital of france ? i cannot help .", "yes yes", "paris .", "e f g h"])
    return chosen, rejected


def tiny_reward_model(tokenizer, architecture: str, attention: str):
    """A random reward model of a GPT-2 or a Llama config (another mask and position code path)."""
    from transformers import GPT2Config, LlamaConfig
    common = dict(vocab_size=len(tokenizer), num_labels=1, pad_token_id=tokenizer.pad_token_id)
    config = (GPT2Config(n_layer=2, n_embd=32, n_head=4, n_positions=64, **common) if architecture == "gpt2" else
              LlamaConfig(num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                          num_key_value_heads=2, max_position_embeddings=64, **common))
    config._attn_implementation = attention
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(config).eval()


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("pad_is_eos", [False, True])
def test_packed_pair_scores_equal_whole_sequence_scores_and_their_gradients(architecture, attention, pad_is_eos):
    """One row per pair (the shared prefix once, then both sides) changes neither scores nor gradients."""
    tokenizer = make_tokenizer(pad_is_eos=pad_is_eos)
    rm = tiny_reward_model(tokenizer, architecture, attention)
    chosen, rejected = pairs_of(tokenizer)
    r_chosen, r_rejected = score_pairs(rm, collate_pairs(chosen, rejected, tokenizer.pad_token_id))
    assert packs_pairs(rm)
    whole = score_sequences(rm, *pad_right(chosen + rejected, tokenizer.pad_token_id))
    torch.testing.assert_close(torch.cat([r_chosen, r_rejected]), whole, atol=1e-5, rtol=0)
    grads = []
    for loss in ((r_chosen - r_rejected).sum(), (whole[:4] - whole[4:]).sum()):
        rm.zero_grad()
        loss.backward(retain_graph=True)
        grads.append(torch.cat([p.grad.flatten() for p in rm.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)


def test_a_model_that_does_not_pack_pairs_scores_the_whole_sequences(tiny_dirs):
    from tether.models import reward
    tokenizer = make_tokenizer()
    rm = load_reward_model(tiny_dirs["rm"])
    chosen, rejected = pairs_of(tokenizer)
    batch = collate_pairs(chosen, rejected, tokenizer.pad_token_id)
    assert unpack_pairs(batch) == (chosen, rejected)
    reward._PACKS_PAIRS[rm] = False  # as the probe finds for a model that ignores the 4D mask
    whole = score_sequences(rm, *pad_right(chosen + rejected, tokenizer.pad_token_id))
    torch.testing.assert_close(torch.cat(score_pairs(rm, batch)), whole, atol=1e-6, rtol=0)


def test_score_ignores_pad_token_values(tiny_dirs):
    """Never a pad token's hidden state: changing what sits in padded slots changes nothing."""
    tokenizer = make_tokenizer()
    rm = load_reward_model(tiny_dirs["rm"])
    ids, mask = pad_right(seqs_of(tokenizer, ["paris .", "what is two plus three ? five ."]), tokenizer.pad_token_id)
    garbage = ids.clone()
    garbage[mask == 0] = 7
    torch.testing.assert_close(score_sequences(rm, garbage, mask), score_sequences(rm, ids, mask))


def test_pad_equal_to_eos_scores_at_the_eos_token():
    """pad == EOS (common in real models): the score is read at the response's EOS, not one before it."""
    tokenizer = make_tokenizer(pad_is_eos=True)
    policy = make_policy(tokenizer)
    policy.config.num_labels = 1
    rm = AutoModelForSequenceClassification.from_config(policy.config).eval()
    rm.transformer.load_state_dict(policy.transformer.state_dict())
    seq = seqs_of(tokenizer, ["what is two plus three ? five ."])[0]
    ids, mask = pad_right([seq, seq + seq], tokenizer.pad_token_id)
    hidden = rm.transformer(input_ids=ids[:1, :len(seq)]).last_hidden_state
    expected = score_head(rm)(hidden[0, len(seq) - 1]).squeeze()  # at the EOS itself
    got = score_sequences(rm, ids, mask)[0]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    one_before = score_head(rm)(hidden[0, len(seq) - 2]).squeeze()
    assert not torch.allclose(got, one_before), "score was read one token before EOS"


def test_reward_model_loads_in_plain_transformers_with_the_same_scores(tiny_dirs):
    tokenizer = make_tokenizer()
    plain = AutoModelForSequenceClassification.from_pretrained(tiny_dirs["rm"]).eval()
    ids, mask = pad_right(seqs_of(tokenizer, ["paris .", "what is two plus three ? five ."]), tokenizer.pad_token_id)
    with torch.no_grad():
        theirs = plain(input_ids=ids, attention_mask=mask).logits.squeeze(-1)
        ours = score_sequences(load_reward_model(tiny_dirs["rm"]), ids, mask)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_reward_model_is_initialised_from_the_policy_trunk(tiny_dirs):
    from transformers import AutoModelForCausalLM
    tokenizer = make_tokenizer()
    policy = AutoModelForCausalLM.from_pretrained(tiny_dirs["policy"])
    rm = reward_model_from_policy(tiny_dirs["policy"], tokenizer.pad_token_id)
    for name, p in policy.transformer.state_dict().items():
        torch.testing.assert_close(rm.transformer.state_dict()[name], p)
    assert rm.config.num_labels == 1 and rm.config.pad_token_id == tokenizer.pad_token_id
    assert score_head(rm).out_features == 1


def test_load_reward_model_rejects_several_labels(tmp_path, tiny_dirs):
    from tether.errors import InputError
    tokenizer = make_tokenizer()
    config = make_policy(tokenizer).config
    config.num_labels = 2
    model = AutoModelForSequenceClassification.from_config(config)
    model.save_pretrained(tmp_path / "two")
    with pytest.raises(InputError, match="num_labels=1"):
        load_reward_model(tmp_path / "two")


def test_policy_with_value_is_left_padding_invariant():
    tokenizer = make_tokenizer()
    pv = PolicyWithValue(make_policy(tokenizer)).eval()
    seqs = seqs_of(tokenizer, ["paris .", "what is two plus three ? five ."])
    ids, mask = pad_left(seqs, tokenizer.pad_token_id)
    alone_ids, alone_mask = pad_left(seqs[:1], tokenizer.pad_token_id)
    with torch.no_grad():
        logits, values = pv(ids, mask)
        logits1, values1 = pv(alone_ids, alone_mask)
    n = len(seqs[0])
    torch.testing.assert_close(values[0, -n:], values1[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(logits[0, -n:], logits1[0], atol=1e-4, rtol=0)


@pytest.mark.parametrize("value_model", ["critic", "shared"])
def test_actor_critic_values_are_read_at_the_token_before_each_response_token(tiny_dirs, value_model):
    """values[:, j] = V(s at position P + j − 1): the state in which response token j is chosen."""
    tokenizer = make_tokenizer()
    rm = load_reward_model(tiny_dirs["rm"])
    model = ActorCritic(load_causal_lm(tiny_dirs["policy"]), load_causal_lm(tiny_dirs["policy"]), rm, value_model)
    prompts = seqs_of(tokenizer, ["what is two plus three ?", "yes"])
    seqs, attn = pad_left([p + tokenizer("five . a", add_special_tokens=False)["input_ids"] for p in prompts],
                          tokenizer.pad_token_id)
    P = seqs.shape[1] - 3
    with torch.no_grad():
        _, values = model(seqs, attn, P)
        per_position = token_scores(model.critic, seqs, attn) if value_model == "critic" else model.actor(seqs, attn)[1]
    assert values.shape == (2, 3)
    for j in range(3):
        torch.testing.assert_close(values[:, j], per_position[:, P + j - 1])


def test_the_value_slice_is_written_once():
    """Only the actor–critic turns per-position values into response-aligned ones."""
    package = Path(tether.__file__).parent
    slicing = sorted(str(p.relative_to(package)) for p in package.rglob("*.py")
                     if re.search(r"values\[:, [^\]]*- 1:-1\]", p.read_text()))
    assert slicing == ["models/actor_critic.py"]
