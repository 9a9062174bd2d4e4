"""Preference pairs: read, validate and write them (rows are read by `tether.data.records`).

Pair formats (DESIGN.md §9, the formats TRL and the public data sets use):

- explicit: `{"prompt": str, "chosen": str, "rejected": str}`.
- implicit: `{"chosen": str, "rejected": str}`, both full transcripts sharing a
  prompt, as Anthropic HH's `"\\n\\nHuman: …\\n\\nAssistant: …"`; the prompt is split
  off by `split_implicit_prompt`.
- conversational: the fields are lists of `{"role", "content"}` messages. With a
  `"prompt"` list, `chosen`/`rejected` are the assistant response(s); without one,
  the prompt is the leading messages both share (`split_shared_messages`). A text
  `"prompt"` beside message lists is superseded by the shared messages, as TRL's
  `maybe_extract_prompt` does (UltraFeedback-binarized rows look like that).

The format is detected per row, or forced with `format=`; a row that does not
fit the forced format is an error naming the field. Every field other than
prompt/chosen/rejected is kept verbatim in `PreferencePair.extra`.

A response may be empty (text "", an implicit transcript that ends at the
assistant marker, an assistant message with content ""): the assistant said
nothing, a rater judged it, and it is tokenised as its EOS alone
(`tether.data.collate.encode_response`). A prompt may not be empty, and chosen
identical to rejected is an error: it carries no preference.

Invalid rows raise `InputError(path, line, field)` at the first one, or, with
`skip_invalid=True`, are skipped with a warning on stderr that gives their count
and the first reasons: no row is ever dropped silently.
"""

import math
import os
import re
from dataclasses import dataclass, field
from typing import Iterable

from tether.data.records import (Text, json_type, messages_field, read_records, response_messages_field, settle,
                                 string_field, text_field)
from tether.errors import InputError
from tether.io import write_jsonl_atomic

FORMATS = ("explicit", "implicit", "conversational")
HH_ASSISTANT_MARKER = re.compile(r"(?:\r?\n){2}Assistant:")  # "\n\nAssistant:", or with Windows line ends
IDENTICAL = "chosen identical to rejected"


@dataclass
class PreferencePair:
    """One comparison: `chosen` was preferred to `rejected` as a reply to `prompt`.

    Text fields are strings; conversational ones are lists of {"role", "content"}
    messages (the prompt before the response, the response's assistant message(s)).
    `extra` holds every other field of the input row verbatim; `source_line` is the
    1-based line (or row) it came from, for error messages.
    """

    prompt: Text
    chosen: Text
    rejected: Text
    extra: dict = field(default_factory=dict)
    source_line: int | None = None

    @property
    def margin(self) -> float | None:
        """`extra["margin"]` as a float (validated finite when read), or None when absent."""
        value = self.extra.get("margin")
        return None if value is None else float(value)


def _margin_field(extra: dict, path, line: int) -> None:
    """`margin`, when present and not null, is a finite number."""
    value = extra.get("margin")
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"expected a number, got {json_type(value)}", path=path, line=line, field="margin")
    if not math.isfinite(value):
        raise InputError(f"expected a finite number, got {value}", path=path, line=line, field="margin")


# ---------------------------------------------------------------- prompt splitting


def split_implicit_prompt(chosen: str, rejected: str) -> tuple[str, str, str]:
    """(prompt, chosen_response, rejected_response) of two transcripts that share a prompt.

    The prompt is the longest common prefix cut just after the last "\\n\\nAssistant:"
    marker inside it (Anthropic HH; "\\r\\n\\r\\nAssistant:" too), so the prompt ends with "Assistant:"
    and each response keeps its leading space: " Paris is …"; a side that ends at the marker is
    the empty response (the assistant said nothing). A first word both responses
    share stays in the responses. Without a shared marker, the common prefix is cut
    at the start of its last whitespace run (prompt "The sky is", responses " blue",
    " green"). Raises ValueError when nothing is shared before such a cut.
    """
    shared = os.path.commonprefix([chosen, rejected])
    markers = list(HH_ASSISTANT_MARKER.finditer(shared))
    if markers:
        cut = markers[-1].end()
    else:
        last_space = re.search(r"\s+\S*\Z", shared)
        cut = last_space.start() if last_space else 0
    if not chosen[:cut].strip():
        raise ValueError('no shared prompt prefix with "rejected"')
    return chosen[:cut], chosen[cut:], rejected[cut:]


def split_shared_messages(chosen: list[dict], rejected: list[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    """(prompt, chosen_tail, rejected_tail): the prompt is the leading messages both share,
    cut back so that it does not end with an assistant message (the response starts with
    one). Raises ValueError when no message is shared."""
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    while n > 0 and chosen[n - 1]["role"] == "assistant":
        n -= 1
    if n == 0:
        raise ValueError('no shared leading messages (the prompt) with "rejected"')
    return chosen[:n], chosen[n:], rejected[n:]


# ---------------------------------------------------------------- pair rows


def _detect_pair_format(row: dict, path, line: int) -> str:
    is_list = [isinstance(row[key], list) for key in ("chosen", "rejected")]
    if is_list[0] != is_list[1]:
        raise InputError('"chosen" and "rejected" must both be text or both be message lists',
                         path=path, line=line, field="rejected")
    if is_list[0]:
        return "conversational"
    return "explicit" if "prompt" in row else "implicit"


def _format_mismatch(asked: str, detected: str, path, line: int) -> InputError:
    """The error for a row of format `detected` read with `format=asked`, naming the telling field."""
    if "conversational" in (asked, detected):
        kind = "a list of messages" if detected == "conversational" else "text"
        return InputError(f"{kind}, but the format asked for is {asked}", path=path, line=line, field="chosen")
    if asked == "explicit":
        return InputError("missing field (format explicit)", path=path, line=line, field="prompt")
    return InputError("not allowed in format implicit, where the prompt is the prefix chosen and rejected share",
                      path=path, line=line, field="prompt")


def _text_pair(row: dict, fmt: str, path, line: int) -> tuple[str, str, str]:
    chosen = string_field(row["chosen"], path, line, "chosen")
    rejected = string_field(row["rejected"], path, line, "rejected")
    if chosen == rejected:
        raise InputError(IDENTICAL, path=path, line=line, field="rejected")
    if fmt == "explicit":
        return text_field(row["prompt"], path, line, "prompt"), chosen, rejected
    try:
        prompt, chosen, rejected = split_implicit_prompt(chosen, rejected)
    except ValueError as e:
        raise InputError(str(e), path=path, line=line, field="chosen") from None
    return prompt, chosen, rejected


def _conversational_pair(row: dict, path, line: int) -> tuple[list, list, list]:
    chosen = messages_field(row["chosen"], path, line, "chosen")
    rejected = messages_field(row["rejected"], path, line, "rejected")
    if chosen == rejected:
        raise InputError(IDENTICAL, path=path, line=line, field="rejected")
    if isinstance(row.get("prompt"), list):
        prompt = messages_field(row["prompt"], path, line, "prompt")
    else:  # no prompt, or a text prompt that the shared messages supersede
        if "prompt" in row:
            text_field(row["prompt"], path, line, "prompt")
        try:
            prompt, chosen, rejected = split_shared_messages(chosen, rejected)
        except ValueError as e:
            raise InputError(str(e), path=path, line=line, field="chosen") from None
    response_messages_field(chosen, path, line, "chosen")
    response_messages_field(rejected, path, line, "rejected")
    return prompt, chosen, rejected


def parse_pair_row(row: dict, path, line: int, format: str | None = None) -> tuple[str, PreferencePair]:
    """(format, pair) of one row, validated; `format` None detects it, else forces it."""
    for key in ("chosen", "rejected"):
        if key not in row:
            raise InputError("missing field", path=path, line=line, field=key)
    detected = _detect_pair_format(row, path, line)
    if format is not None and format != detected:
        raise _format_mismatch(format, detected, path, line)
    if detected == "conversational":
        prompt, chosen, rejected = _conversational_pair(row, path, line)
    else:
        prompt, chosen, rejected = _text_pair(row, detected, path, line)
    extra = {k: v for k, v in row.items() if k not in ("prompt", "chosen", "rejected")}
    _margin_field(extra, path, line)
    return detected, PreferencePair(prompt, chosen, rejected, extra, source_line=line)


def check_format(format: str | None) -> None:
    if format not in (None, *FORMATS):
        raise InputError(f"unknown format {format!r}; known: {', '.join(FORMATS)}", field="format")


def read_pairs_report(path, format: str | None = None, *, split: str | None = None
                      ) -> tuple[list[PreferencePair], list[InputError]]:
    """(valid pairs, one InputError per invalid row) of a pair file; see the module docstring."""
    check_format(format)
    formatted, problems = read_records(path, lambda row, p, line: parse_pair_row(row, p, line, format), split)
    return [pair for _, pair in formatted], problems


def read_pairs(path, format: str | None = None, *, skip_invalid: bool = False,
               split: str | None = None) -> list[PreferencePair]:
    """Preference pairs of a JSON Lines / Parquet file or a datasets folder.

    format: None (detect per row), "explicit", "implicit" or "conversational".
    skip_invalid: False raises InputError(path, line, field) for the first invalid
    row; True skips invalid rows and reports their count and first reasons on stderr.
    split: the split of a datasets folder holding a DatasetDict (default "train").
    """
    pairs, problems = read_pairs_report(path, format, split=split)
    return settle(pairs, problems, path, skip_invalid)


# ---------------------------------------------------------------- writing


def pair_to_row(pair: PreferencePair) -> dict:
    """The explicit-format row {"prompt", "chosen", "rejected", **extra} (message lists stay lists)."""
    clash = {"prompt", "chosen", "rejected"} & pair.extra.keys()
    if clash:
        raise ValueError(f"extra repeats the pair's own field(s) {sorted(clash)}")
    return {"prompt": pair.prompt, "chosen": pair.chosen, "rejected": pair.rejected, **pair.extra}


def write_pairs(path, pairs: Iterable[PreferencePair]) -> None:
    """Write pairs as JSON Lines in explicit (or explicit conversational) form, atomically:
    a failure part-way leaves the previous file, or none, never a partial one."""
    write_jsonl_atomic(path, (pair_to_row(pair) for pair in pairs))
