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

Rows over a length limit follow a stated rule (`truncate_to_fit`, TRUNCATIONS): cut
("left": the prompt's start first; "right": the response's end first), skip, or
error; a run prints one line counting them (`report_too_long`).

Padding is `tether.data.padding`'s.
"""

import sys
from dataclasses import dataclass, field

import torch

from tether.data.prefs import PreferencePair
from tether.data.records import SHOWN_PROBLEMS, Text
from tether.errors import InputError

TRUNCATIONS = ("left", "right", "skip", "error")


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
    pair_indices[i]: index of the pair in the list given to `tokenize_pairs` (pairs may be skipped);
    too_long: the source lines of the pairs over max_length (truncated, or skipped with "skip").
    """

    chosen_ids: list[list[int]]
    rejected_ids: list[list[int]]
    prompt_lens: list[int]
    margins: list[float | None]
    pair_indices: list[int] = field(default_factory=list)
    too_long: list[int | None] = field(default_factory=list)


def truncate_to_fit(prompt_ids: list[int], responses: list[list[int]], max_length: int, truncation: str
                    ) -> tuple[list[int], list[list[int]]]:
    """Fit prompt + each response in `max_length` tokens: the prompt loses tokens at its start, a
    response at its end, and each keeps at least one token (max_length ≥ 2).

    "left" cuts the prompt first: the responses stay whole when the prompt's last token fits beside
    the longest (a reward model reads its score at the response's last token). "right" cuts the
    responses first: the prompt stays whole when one response token fits after it (SFT's choice:
    the completion is learnt from its start).

    >>> truncate_to_fit([1, 2, 3, 4], [[5, 6], [7, 8, 9]], 5, "left")
    ([3, 4], [[5, 6], [7, 8, 9]])
    >>> truncate_to_fit([1, 2, 3, 4], [[5, 6], [7, 8, 9]], 5, "right")
    ([1, 2, 3, 4], [[5], [7]])
    """
    longest = max(map(len, responses))
    if truncation == "left":
        prompt_room = max(1, max_length - longest)
        response_room = max_length - min(prompt_room, len(prompt_ids))
    else:
        response_room = max(1, max_length - len(prompt_ids))
        prompt_room = max_length - min(response_room, longest)
    return prompt_ids[-prompt_room:], [r[:response_room] for r in responses]


TRUNCATION_HOW = {"left": "truncated (the prompt's start cut)", "right": "truncated (the response's end cut)",
                  "skip": "skipped"}


def report_too_long(what: str, too_long: list[int | None], n_rows: int, max_length: int, truncation: str,
                    path=None) -> None:
    """The one line a run prints on stderr about the rows of a file over max_length (none when there are none):
    'tether: 2 of 40 pairs of f longer than max_length 64 tokens truncated (the prompt's start cut); lines 3, 9'."""
    if not too_long:
        return
    lines = sorted(too_long, key=lambda n: -1 if n is None else n)
    shown = ", ".join(str(n) for n in lines[:SHOWN_PROBLEMS]) + (", …" if len(lines) > SHOWN_PROBLEMS else "")
    source = f" of {path}" if path is not None else ""
    print(f"tether: {len(too_long)} of {n_rows} {what}{source} longer than max_length {max_length} tokens "
          f"{TRUNCATION_HOW[truncation]}; {'line' if len(lines) == 1 else 'lines'} {shown}", file=sys.stderr)


def check_truncation(truncation: str, max_length: int) -> None:
    """InputError unless `truncation` is one of TRUNCATIONS and max_length leaves a prompt and a response token."""
    if truncation not in TRUNCATIONS:
        raise InputError(f"unknown truncation {truncation!r}; known: {', '.join(TRUNCATIONS)}", field="truncation")
    if max_length < 2:
        raise InputError(f"must be at least 2 (a prompt token and EOS), got {max_length}", field="max_length")


@dataclass
class LengthRule:
    """A length limit and what happens to a row over it (one of TRUNCATIONS); `too_long` collects
    the source lines of the rows it cut or skipped, for `report`. `path`: the file the rows came from."""

    max_length: int
    truncation: str
    path: object = None
    too_long: list[int | None] = field(default_factory=list)

    def __post_init__(self):
        check_truncation(self.truncation, self.max_length)

    def fit(self, prompt_ids: list[int], responses: list[list[int]], line: int | None, names: tuple[str, ...]
            ) -> tuple[list[int], list[list[int]]] | None:
        """(prompt, responses) within max_length (prompt + the longest response): as they are when they
        fit; else cut by `truncate_to_fit`, None with "skip", or InputError naming the line and the longest
        response's field (`names[i]` for `responses[i]`) with "error"."""
        longest = max(range(len(responses)), key=lambda i: len(responses[i]))  # the first, on a tie
        length = len(prompt_ids) + len(responses[longest])
        if length <= self.max_length:
            return prompt_ids, responses
        if self.truncation == "error":
            message = f"{length} tokens (prompt + {names[longest]}), more than max_length {self.max_length}"
            if self.path is None:
                message = f"line {line}: {message}"
            raise InputError(message, path=self.path, line=line, field=names[longest])
        self.too_long.append(line)
        if self.truncation == "skip":
            return None
        return truncate_to_fit(prompt_ids, responses, self.max_length, self.truncation)

    def report(self, what: str, n_rows: int) -> None:
        """`report_too_long` of the rows this rule cut or skipped, out of `n_rows`."""
        report_too_long(what, self.too_long, n_rows, self.max_length, self.truncation, self.path)


def tokenize_pairs(pairs: list[PreferencePair], tokenizer, max_length: int, truncation: str = "error",
                   *, path=None) -> TokenizedPairs:
    """Tokenise pairs as prompt + response (module docstring), enforcing `max_length` tokens.

    truncation, for a pair whose prompt + longer response exceeds max_length (`LengthRule`):
      "error": InputError naming the line (and `path`, the file the pairs came from);
      "left", "right": `truncate_to_fit`;
      "skip":  leave the pair out.
    The lines of the pairs over the limit are in `too_long` (`report_too_long` words them).
    """
    rule = LengthRule(max_length, truncation, path)
    out = TokenizedPairs([], [], [], [], [], rule.too_long)
    for index, pair in enumerate(pairs):
        fitted = rule.fit(encode_prompt(tokenizer, pair.prompt),
                          [encode_response(tokenizer, pair.chosen, prompt=pair.prompt),
                           encode_response(tokenizer, pair.rejected, prompt=pair.prompt)],
                          pair.source_line, ("chosen", "rejected"))
        if fitted is None:
            continue
        prompt_ids, (chosen, rejected) = fitted
        out.chosen_ids.append(prompt_ids + chosen)
        out.rejected_ids.append(prompt_ids + rejected)
        out.prompt_lens.append(len(prompt_ids))
        out.margins.append(pair.margin)
        out.pair_indices.append(index)
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
