"""The pairs a person labels: read from a pairs file, identified, and shown left/right in a stable order."""

import hashlib
import json
import random
from dataclasses import dataclass

from tether.data.prefs import parse_pair_row
from tether.data.records import Text, read_records, response_field, settle, text_or_messages_field
from tether.errors import InputError


@dataclass(frozen=True)
class Item:
    """One showing of a pair: `a`, `b` are its two responses (y1, y2) as read; `repeat` counts earlier showings."""

    id: str
    repeat: int
    prompt: Text
    a: Text
    b: Text


def stable_pair_id(prompt: Text, y1: Text, y2: Text) -> str:
    """16 hex digits of SHA-256 over the prompt and the two responses in sorted order, so (y1, y2) ~ (y2, y1)."""
    responses = sorted(json.dumps(y, ensure_ascii=False, sort_keys=True) for y in (y1, y2))
    blob = json.dumps([json.dumps(prompt, ensure_ascii=False, sort_keys=True), *responses], ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _parse_pair_to_label(row: dict, path, line: int) -> tuple[str, Text, Text, Text]:
    """(id, prompt, y1, y2) of a row {prompt, response_a, response_b} or of any pair format of `read_pairs`."""
    if "response_a" in row or "response_b" in row:
        names = ("prompt", "response_a", "response_b")
        for name in names:
            if name not in row:
                raise InputError("missing field", path=path, line=line, field=name)
        prompt = text_or_messages_field(row["prompt"], path, line, "prompt")
        y1, y2 = (response_field(row[name], path, line, name) for name in names[1:])
        if y1 == y2:
            raise InputError("identical to response_a", path=path, line=line, field="response_b")
        given_id = row.get("id")
    else:  # from `tether collect` with no labeler: "chosen"/"rejected" are only y1/y2
        names = ("prompt", "chosen", "rejected")
        _, pair = parse_pair_row(row, path, line)
        prompt, y1, y2, given_id = pair.prompt, pair.chosen, pair.rejected, pair.extra.get("id")
    if given_id is None:
        return stable_pair_id(prompt, y1, y2), prompt, y1, y2
    if isinstance(given_id, bool) or not isinstance(given_id, (str, int)) or given_id == "":
        raise InputError(f"expected a non-empty string or an integer, got {given_id!r}",
                         path=path, line=line, field="id")
    return str(given_id), prompt, y1, y2


def load_items(path, skip_invalid: bool = False) -> list[Item]:
    """The showings of a pairs file in file order. A pair's id is its "id" field, else `stable_pair_id`;
    a pair that occurs again gets repeat 1, 2, … (self-agreement); one id naming two different pairs is an error.
    Invalid rows stop the read at the first, or (skip_invalid) are skipped and reported by reason."""
    parsed, problems = read_records(path, lambda row, p, line: (line, *_parse_pair_to_label(row, p, line)))
    first_seen: dict[str, tuple[str, int]] = {}  # id -> (content hash, line)
    repeats: dict[str, int] = {}
    items = []
    for line, pair_id, prompt, y1, y2 in settle(parsed, problems, path, skip_invalid):
        content = stable_pair_id(prompt, y1, y2)
        seen_content, seen_line = first_seen.setdefault(pair_id, (content, line))
        if seen_content != content:
            raise InputError(f"id {pair_id!r} already names a different pair on line {seen_line}",
                             path=path, line=line, field="id")
        items.append(Item(pair_id, repeats.get(pair_id, 0), prompt, y1, y2))
        repeats[pair_id] = repeats.get(pair_id, 0) + 1
    return items


def display_text(value: Text) -> str:
    """What the page shows: a string as it is, a message list as "role: content" blocks."""
    if isinstance(value, str):
        return value
    return "\n\n".join(f"{message['role']}: {message['content']}" for message in value)


def presentation_order(seed: int, labeler: str, item: Item) -> tuple[str, str]:
    """("a", "b") or ("b", "a"), each with probability ½, drawn from (seed, labeler, id, repeat).

    Stable across restarts (str seeds hash with SHA-512, not Python's salted hash)."""
    rng = random.Random(f"{seed}\x1f{labeler}\x1f{item.id}\x1f{item.repeat}")
    return ("a", "b") if rng.random() < 0.5 else ("b", "a")
