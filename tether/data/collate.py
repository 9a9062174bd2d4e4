"""Tokenise, pad and collate.

The convention every stage shares: a sequence is `prompt_ids + response_ids`, where

- `encode_prompt`: messages → the chat template with the generation prompt
  (`apply_chat_template(..., add_generation_prompt=True)`); text → the tokenizer
  with its special tokens (a BOS where the tokenizer adds one);
- `encode_response`: text → tokens without special tokens, then EOS (unless the
  text already ends in it). A conversational response is rendered with the chat
  template as the suffix of the whole conversation after the prompt's rendering,
  so it carries the template's end-of-turn markup; without a template, a single
  assistant message is encoded as its text.

Padding is `tether.data.padding`'s.
"""

import sys
from dataclasses import dataclass, field

import torch

from tether.data.prefs import PreferencePair
from tether.data.records import SHOWN_PROBLEMS, Text
from tether.errors import InputError

TRUNCATIONS = ("error", "left", "skip")


def encode_prompt(tokenizer, prompt: Text) -> list[int]:
    """Token ids of a prompt: text with the tokenizer's special tokens, or messages
    rendered by the chat template followed by the assistant's generation prompt."""
    if isinstance(prompt, str):
        return tokenizer(prompt, add_special_tokens=True)["input_ids"]
    if not tokenizer.chat_template:
        raise InputError("conversational data needs a tokenizer with a chat template; this one has none",
                         field="chat_template")
    return list(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True,
                                              return_dict=False))


def _response_text(tokenizer, response: Text, prompt: Text | None) -> str:
    """The text of a response; for messages with a chat template, the rendering of
    prompt + response that follows the rendering of the prompt with the generation prompt."""
    if isinstance(response, str):
        return response
    if tokenizer.chat_template:
        if not isinstance(prompt, list):
            raise ValueError("encode_response needs prompt= (messages) to render a conversational response")
        before = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        whole = tokenizer.apply_chat_template(prompt + response, tokenize=False)
        if not whole.startswith(before):
            raise InputError("the chat template does not render the prompt as the start of the conversation",
                             field="chat_template")
        return whole[len(before):]
    if len(response) == 1 and response[0]["role"] == "assistant":
        return response[0]["content"]
    raise InputError("a response of several messages needs a tokenizer with a chat template",
                     field="chat_template")


def encode_response(tokenizer, response: Text, *, prompt: Text | None = None) -> list[int]:
    """Token ids of a response, without special tokens, ending in EOS (appended unless already last).

    `prompt` (messages) is needed only for a conversational response with a chat template.
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        raise InputError("the tokenizer has no EOS token; responses must end in one", field="eos_token")
    ids = list(tokenizer(_response_text(tokenizer, response, prompt), add_special_tokens=False)["input_ids"])
    return ids if ids and ids[-1] == eos else ids + [eos]


@dataclass
class TokenizedPairs:
    """Token ids of pairs: `chosen_ids[i] = prompt + chosen response`, same prompt in `rejected_ids[i]`.

    prompt_lens[i]: prompt tokens at the start of both; margins[i]: the pair's margin or None;
    pair_indices[i]: index of the pair in the list given to `tokenize_pairs` (pairs may be skipped).
    """

    chosen_ids: list[list[int]]
    rejected_ids: list[list[int]]
    prompt_lens: list[int]
    margins: list[float | None]
    pair_indices: list[int] = field(default_factory=list)


def truncate_prompt_left(prompt_ids: list[int], chosen: list[int], rejected: list[int], max_length: int
                         ) -> tuple[list[int], list[int], list[int]]:
    """Fit prompt + each response in `max_length` by dropping the prompt's first tokens.

    Responses stay whole when at least the prompt's last token fits beside the longer
    one; otherwise the prompt keeps its last token and the responses are cut on the
    right to `max_length - 1` (losing their EOS).
    """
    room = max_length - max(len(chosen), len(rejected))
    if room >= 1:
        return prompt_ids[-room:], chosen, rejected
    return prompt_ids[-1:], chosen[:max_length - 1], rejected[:max_length - 1]


def _line_of(pair: PreferencePair, path) -> str:
    if path is not None:
        return f"{path}:{pair.source_line}"
    return f"line {pair.source_line}"


def tokenize_pairs(pairs: list[PreferencePair], tokenizer, max_length: int, truncation: str = "error",
                   *, path=None) -> TokenizedPairs:
    """Tokenise pairs as prompt + response (module docstring), enforcing `max_length` tokens.

    truncation, for a pair whose prompt + longer response exceeds max_length:
      "error": InputError naming the line (and `path`, the file the pairs came from);
      "left":  `truncate_prompt_left`, with a count on stderr;
      "skip":  drop the pair, with a count and the first lines on stderr.
    """
    if truncation not in TRUNCATIONS:
        raise InputError(f"unknown truncation {truncation!r}; known: {', '.join(TRUNCATIONS)}", field="truncation")
    if max_length < 2:
        raise InputError(f"must be at least 2 (a prompt token and EOS), got {max_length}", field="max_length")
    out = TokenizedPairs([], [], [], [], [])
    too_long = []
    for index, pair in enumerate(pairs):
        prompt_ids = encode_prompt(tokenizer, pair.prompt)
        chosen = encode_response(tokenizer, pair.chosen, prompt=pair.prompt)
        rejected = encode_response(tokenizer, pair.rejected, prompt=pair.prompt)
        length = len(prompt_ids) + max(len(chosen), len(rejected))
        if length > max_length:
            if truncation == "error":
                longer = "chosen" if len(chosen) >= len(rejected) else "rejected"
                message = f"{length} tokens (prompt + {longer}), more than max_length {max_length}"
                if path is None:
                    message = f"line {pair.source_line}: {message}"
                raise InputError(message, path=path, line=pair.source_line, field=longer)
            too_long.append(pair)
            if truncation == "skip":
                continue
            prompt_ids, chosen, rejected = truncate_prompt_left(prompt_ids, chosen, rejected, max_length)
        out.chosen_ids.append(prompt_ids + chosen)
        out.rejected_ids.append(prompt_ids + rejected)
        out.prompt_lens.append(len(prompt_ids))
        out.margins.append(pair.margin)
        out.pair_indices.append(index)
    if too_long:
        action = "skipped" if truncation == "skip" else "truncated (prompt cut from the left)"
        lines = ", ".join(_line_of(pair, path) for pair in too_long[:SHOWN_PROBLEMS])
        print(f"tether: warning: {action} {len(too_long)} of {len(pairs)} pairs longer than "
              f"max_length {max_length} tokens; first: {lines}", file=sys.stderr)
    return out


def shared_prefix_length(a: list[int], b: list[int]) -> int:
    """Tokens at the start of both sequences, at most min(|a|, |b|) − 1 so that each keeps a token of its own.

    >>> shared_prefix_length([5, 6, 7], [5, 6, 9, 4]), shared_prefix_length([5, 6], [5, 6, 9])
    (2, 1)
    """
    n, most = 0, min(len(a), len(b)) - 1
    while n < most and a[n] == b[n]:
        n += 1
    return n


def collate_pairs(chosen_ids: list[list[int]], rejected_ids: list[list[int]], pad_id: int) -> dict:
    """B pairs packed one per row: [shared prefix | chosen's own tokens | rejected's own tokens | padding].

    The prefix (`shared_prefix_length`: the prompt, and more where the two responses start alike)
    goes through the model once; both sides continue it from its length S (`position_ids`). `segments`
    marks the parts (0 prefix, 1 chosen, 2 rejected, −1 padding) for `pair_attention_mask`, under which
    rejected tokens do not see chosen ones. chosen_last, rejected_last (B,): the column of each side's
    last token, where its score is read. On the built-in world a row holds 0.75 of the two sides' tokens.

    >>> b = collate_pairs([[5, 6, 7], [4, 8, 9]], [[5, 6, 2], [4, 3]], pad_id=0)
    >>> b["input_ids"], b["position_ids"], b["segments"]
    (tensor([[5, 6, 7, 2],
            [4, 8, 9, 3]]), tensor([[0, 1, 2, 2],
            [0, 1, 2, 1]]), tensor([[0, 0, 1, 2],
            [0, 1, 1, 2]]))
    >>> b["chosen_last"], b["rejected_last"]
    (tensor([2, 2]), tensor([3, 3]))
    """
    if len(chosen_ids) != len(rejected_ids):
        raise ValueError(f"{len(chosen_ids)} chosen but {len(rejected_ids)} rejected sequences")
    rows, positions, segments, chosen_last, rejected_last = [], [], [], [], []
    for c, r in zip(chosen_ids, rejected_ids):
        n = shared_prefix_length(c, r)
        rows.append(c + r[n:])
        positions.append(list(range(len(c))) + list(range(n, len(r))))
        segments.append([0] * n + [1] * (len(c) - n) + [2] * (len(r) - n))
        chosen_last.append(len(c) - 1)
        rejected_last.append(len(rows[-1]) - 1)
    width = max(map(len, rows))
    pad = lambda xs, value: torch.tensor([x + [value] * (width - len(x)) for x in xs], dtype=torch.long)
    return {"input_ids": pad(rows, pad_id), "position_ids": pad(positions, 0), "segments": pad(segments, -1),
            "chosen_last": torch.tensor(chosen_last), "rejected_last": torch.tensor(rejected_last)}


def unpack_pairs(batch: dict) -> tuple[list[list[int]], list[list[int]]]:
    """The (chosen, rejected) token lists of a `collate_pairs` batch: its inverse."""
    chosen, rejected = [], []
    for ids, segments, last in zip(batch["input_ids"].tolist(), batch["segments"].tolist(), batch["chosen_last"].tolist()):
        chosen.append(ids[:last + 1])
        rejected.append([t for t, s in zip(ids, segments) if s in (0, 2)])
    return chosen, rejected


def pair_attention_mask(segments: torch.Tensor) -> torch.Tensor:
    """(B, T) `collate_pairs` segments -> (B, 1, T, T) bool, True where query t may attend to key s:
    s ≤ t, s is not padding, and not (t is a rejected token and s a chosen one). Each side then sees
    exactly what it would see alone: the prefix and its own earlier tokens.

    >>> pair_attention_mask(torch.tensor([[0, 1, 2, -1]]))[0, 0].int()
    tensor([[1, 0, 0, 0],
            [1, 1, 0, 0],
            [1, 0, 1, 0],
            [1, 1, 1, 0]], dtype=torch.int32)
    """
    query, key = segments.unsqueeze(2), segments.unsqueeze(1)
    width = segments.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool, device=segments.device).tril()
    return (causal & (key >= 0) & ~((query == 2) & (key == 1))).unsqueeze(1)
