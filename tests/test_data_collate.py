"""Tokenise, pad and collate (tether.data.collate) with a tiny word-level tokenizer."""

import copy
import doctest
import re

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from tether.data import PreferencePair, collate_pairs, encode_prompt, encode_response, pad_left, pad_right, \
    pair_attention_mask, \
    tokenize_pairs
from tether.data import collate
from tether.data.collate import report_too_long, truncate_to_fit
from tether.errors import InputError

WORDS = "<pad> <unk> <bos> <eos> <user> <assistant> <system> what is two plus four five the sky blue green".split()
PAD, UNK, BOS, EOS, USER, ASSISTANT, SYSTEM, WHAT, IS, TWO, PLUS, FOUR, FIVE, THE, SKY, BLUE, GREEN = range(len(WORDS))
# Each message is "<role> content ", an assistant message ends with "<eos> ".
CHAT_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} "
                 "{% if m['role'] == 'assistant' %}<eos> {% endif %}{% endfor %}"
                 "{% if add_generation_prompt %}<assistant> {% endif %}")
QUESTION = [{"role": "user", "content": "what is two plus two"}]
SAYS_FOUR = [{"role": "assistant", "content": "four"}]
SAYS_FIVE = [{"role": "assistant", "content": "five"}]


@pytest.fixture(scope="module")
def tokenizer():
    """Word-level, adds <bos> to text with special tokens; pad <pad>, eos <eos>; a jinja chat template."""
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", BOS)])
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>",
                                  unk_token="<unk>", bos_token="<bos>")
    tok.chat_template = CHAT_TEMPLATE
    return tok


@pytest.fixture
def plain_tokenizer(tokenizer):
    """The same tokenizer without a chat template."""
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = None
    return tok


def test_docstring_examples_hold():
    assert doctest.testmod(collate).failed == 0


def test_pad_right_and_left_exact():
    ids, mask = pad_right([[7, 8, 9], [4], [5, 6]], pad_id=0)
    assert ids.tolist() == [[7, 8, 9], [4, 0, 0], [5, 6, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]
    ids, mask = pad_left([[7, 8, 9], [4], [5, 6]], pad_id=0)
    assert ids.tolist() == [[7, 8, 9], [0, 0, 4], [0, 5, 6]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 1, 1]]
    assert ids.dtype == mask.dtype == torch.long


def test_collate_pairs_packs_each_pair_as_its_shared_prefix_then_both_sides():
    chosen, rejected = [[2, 13, 15, 3], [2, 13, 3], [7, 3]], [[2, 13, 16, 16, 3], [2, 13, 3, 9], [8, 3]]
    batch = collate_pairs(chosen, rejected, pad_id=0)
    # pair 1: "2 13 3" is all of the chosen side, which keeps its last token; pair 2 shares nothing
    assert batch["input_ids"].tolist() == [[2, 13, 15, 3, 16, 16, 3], [2, 13, 3, 3, 9, 0, 0], [7, 3, 8, 3, 0, 0, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 2, 3, 4], [0, 1, 2, 2, 3, 0, 0], [0, 1, 0, 1, 0, 0, 0]]
    assert batch["segments"].tolist() == [[0, 0, 1, 1, 2, 2, 2], [0, 0, 1, 2, 2, -1, -1], [1, 1, 2, 2, -1, -1, -1]]
    assert batch["chosen_last"].tolist() == [3, 2, 1] and batch["rejected_last"].tolist() == [6, 4, 3]
    with pytest.raises(ValueError, match="2 chosen but 1 rejected"):
        collate_pairs([[1], [2]], [[3]], pad_id=0)


def test_pair_attention_mask_shows_each_side_the_prefix_and_its_own_tokens_only():
    segments = collate_pairs([[2, 13, 15, 3]], [[2, 13, 16, 16, 3]], pad_id=0)["segments"]
    mask = pair_attention_mask(torch.cat([segments, torch.tensor([[-1]])], 1))[0, 0]
    chosen_side, rejected_side = [0, 1, 2, 3], [0, 1, 4, 5, 6]
    for t in range(8):
        seen = mask[t].nonzero().flatten().tolist()
        if t in chosen_side:
            assert seen == [s for s in chosen_side if s <= t]
        elif t in rejected_side:
            assert seen == [s for s in rejected_side if s <= t]
        else:  # padding sees the real tokens before it (never a fully masked row); nothing sees padding
            assert seen == list(range(7))
    assert not mask[:, 7].any()


def test_text_prompt_gets_special_tokens_and_response_gets_eos(tokenizer):
    assert encode_prompt(tokenizer, "the sky is") == [BOS, THE, SKY, IS]
    assert encode_response(tokenizer, " blue") == [BLUE, EOS]
    assert encode_response(tokenizer, "blue <eos>") == [BLUE, EOS]  # EOS not doubled


def test_messages_use_the_chat_template(tokenizer):
    prompt_ids = encode_prompt(tokenizer, QUESTION)
    assert prompt_ids == [USER, WHAT, IS, TWO, PLUS, TWO, ASSISTANT]
    response_ids = encode_response(tokenizer, SAYS_FOUR, prompt=QUESTION)
    assert response_ids == [FOUR, EOS]  # the template's own <eos> ends it: none appended
    whole = tokenizer.apply_chat_template(QUESTION + SAYS_FOUR, tokenize=True, return_dict=False)
    assert prompt_ids + response_ids == whole
    with pytest.raises(ValueError, match="needs prompt="):
        encode_response(tokenizer, SAYS_FOUR)


def test_a_template_that_rewrites_the_prompt_is_an_error(tokenizer):
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = "{{ messages|length }} " + CHAT_TEMPLATE
    with pytest.raises(InputError, match='"chat_template": the chat template does not render the prompt'):
        encode_response(tok, SAYS_FOUR, prompt=QUESTION)


def test_without_a_template(plain_tokenizer):
    assert encode_response(plain_tokenizer, SAYS_FOUR) == [FOUR, EOS]
    with pytest.raises(InputError, match='"chat_template": conversational data needs a tokenizer with a chat template'):
        encode_prompt(plain_tokenizer, QUESTION)
    with pytest.raises(InputError, match="a response of several messages needs a tokenizer with a chat template"):
        encode_response(plain_tokenizer, SAYS_FOUR + SAYS_FIVE)


def test_tokenize_pairs_text_and_conversational(tokenizer):
    pairs = [PreferencePair("the sky is", " blue", " green green", {"margin": 2}, source_line=1),
             PreferencePair(QUESTION, SAYS_FOUR, SAYS_FIVE, {}, source_line=2)]
    out = tokenize_pairs(pairs, tokenizer, max_length=16)
    assert out.chosen_ids == [[BOS, THE, SKY, IS, BLUE, EOS], [USER, WHAT, IS, TWO, PLUS, TWO, ASSISTANT, FOUR, EOS]]
    assert out.rejected_ids == [[BOS, THE, SKY, IS, GREEN, GREEN, EOS],
                                [USER, WHAT, IS, TWO, PLUS, TWO, ASSISTANT, FIVE, EOS]]
    assert out.prompt_lens == [4, 7]
    assert out.margins == [2.0, None]
    assert out.pair_indices == [0, 1]


def test_too_long_pairs_error_truncate_or_skip(tokenizer, capsys):
    pairs = [PreferencePair("the sky is", " blue", " green green", {}, source_line=3),  # 4 + 3 = 7 tokens
             PreferencePair("sky", " blue", " green", {}, source_line=5)]  # 2 + 2 = 4 tokens
    with pytest.raises(InputError, match=re.escape('prefs.jsonl:3: "rejected": 7 tokens (prompt + rejected), '
                                                   "more than max_length 6")):
        tokenize_pairs(pairs, tokenizer, max_length=6, path="prefs.jsonl")
    with pytest.raises(InputError, match=re.escape('"rejected": line 3: 7 tokens')):
        tokenize_pairs(pairs, tokenizer, max_length=6)

    cut = tokenize_pairs(pairs, tokenizer, max_length=6, truncation="left", path="prefs.jsonl")
    # 6 - 3 (the longer response) leaves 3 prompt tokens: <bos> goes.
    assert cut.chosen_ids[0] == [THE, SKY, IS, BLUE, EOS] and cut.rejected_ids[0] == [THE, SKY, IS, GREEN, GREEN, EOS]
    assert cut.prompt_lens == [3, 2] and cut.too_long == [3]
    report_too_long("pairs", cut.too_long, 2, 6, "left", "prefs.jsonl")
    assert capsys.readouterr().err == ("tether: 1 of 2 pairs of prefs.jsonl longer than max_length 6 tokens "
                                       "truncated (the prompt's start cut); line 3\n")

    right = tokenize_pairs(pairs, tokenizer, max_length=6, truncation="right", path="prefs.jsonl")
    # The prompt (4 tokens) stays; each response keeps its first 2 tokens, the rejected one loses its EOS.
    assert right.chosen_ids[0] == [BOS, THE, SKY, IS, BLUE, EOS] and right.rejected_ids[0] == [BOS, THE, SKY, IS, GREEN, GREEN]

    kept = tokenize_pairs(pairs, tokenizer, max_length=6, truncation="skip", path="prefs.jsonl")
    assert kept.pair_indices == [1] and kept.chosen_ids == [[BOS, SKY, BLUE, EOS]] and kept.too_long == [3]

    with pytest.raises(InputError, match='"truncation": unknown truncation'):
        tokenize_pairs(pairs, tokenizer, max_length=6, truncation="middle")


def test_truncate_left_keeps_responses_whole_when_it_can():
    assert truncate_to_fit([1, 2, 3, 4], [[5, 6], [7, 8, 9]], 5, "left") == ([3, 4], [[5, 6], [7, 8, 9]])
    # No room beside the longer response: one prompt token, responses cut on the right.
    assert truncate_to_fit([1, 2, 3, 4], [[5, 6], [7, 8, 9]], 3, "left") == ([4], [[5, 6], [7, 8]])


def test_truncate_right_keeps_the_prompt_whole_when_it_can():
    assert truncate_to_fit([1, 2, 3], [[5, 6], [7, 8, 9]], 5, "right") == ([1, 2, 3], [[5, 6], [7, 8]])
    # No room after the prompt: one response token, the prompt cut at its start.
    assert truncate_to_fit([1, 2, 3, 4], [[5, 6], [7, 8, 9]], 3, "right") == ([3, 4], [[5], [7]])
