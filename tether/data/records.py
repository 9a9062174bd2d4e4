"""Rows of a data file and the validation of their fields, shared by every reader.

Files: JSON Lines (any name but `*.parquet`), Parquet, or a folder written by
`datasets.Dataset.save_to_disk`. JSON Lines rules: UTF-8; a byte-order mark at
the start of the file and CRLF line ends are accepted (Windows tools write them);
a BOM at the start of a later line or bytes that are not UTF-8 are errors; a
blank line is not a row and is skipped (it holds no data, so nothing is
dropped); numbers in messages are 1-based physical lines. For Parquet and
`datasets` folders they are 1-based row indices.

A reader applies its row parser to every row (`read_records`) and then settles
the problems (`settle`): the first one raised, or, with skip_invalid, all of
them reported on stderr and the valid rows kept. No row is dropped silently.
"""

import json
import sys
from pathlib import Path
from typing import Callable, Iterator

from tether.errors import InputError

ROLES = ("system", "user", "assistant")
UTF8_BOM = b"\xef\xbb\xbf"
SHOWN_PROBLEMS = 3

Text = str | list[dict]


# ---------------------------------------------------------------- rows of a file


def json_type(value) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _jsonl_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes) of each non-blank line; BOM at file start and CR before LF removed."""
    try:
        data = path.read_bytes().removeprefix(UTF8_BOM)
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror}", path=path) from None
    for number, raw in enumerate(data.split(b"\n"), start=1):
        raw = raw.removesuffix(b"\r")
        if raw.strip():
            yield number, raw


def _parquet_rows(path: Path) -> Iterator[tuple[int, dict]]:
    import pyarrow
    import pyarrow.parquet

    try:
        table = pyarrow.parquet.read_table(path)
    except (pyarrow.ArrowException, OSError) as e:
        raise InputError(f"not a readable Parquet file: {e}", path=path) from None
    return enumerate(table.to_pylist(), start=1)


def _dataset_rows(path: Path, split: str | None) -> Iterator[tuple[int, dict]]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except FileNotFoundError:
        raise InputError("a folder, but not one written by datasets' save_to_disk", path=path) from None
    if isinstance(loaded, datasets.DatasetDict):
        name = split or "train"
        if name not in loaded:
            raise InputError(f"no split {name!r}; the splits are {', '.join(loaded)}", path=path, field="split")
        loaded = loaded[name]
    elif split is not None:
        raise InputError(f"split {split!r} given, but the folder holds one Dataset without splits",
                         path=path, field="split")
    return enumerate(loaded.to_list(), start=1)


def iter_raw_rows(path, split: str | None = None) -> Iterator[tuple[int, bytes | dict]]:
    """(1-based line or row number, row) of a JSON Lines file (rows are undecoded bytes),
    a Parquet file or a `datasets` folder (rows are dicts). `split` picks a DatasetDict split."""
    path = Path(path)
    if not path.exists():
        raise InputError("no such file", path=path)
    if path.is_dir():
        return _dataset_rows(path, split)
    if split is not None:
        raise InputError("a split applies only to a datasets folder", path=path, field="split")
    if path.suffix.lower() == ".parquet":
        return _parquet_rows(path)
    return _jsonl_lines(path)


def decode_row(raw: bytes | dict, path, line: int) -> dict:
    """The JSON object of one JSON Lines line (a dict row passes through), or InputError."""
    if isinstance(raw, dict):
        return raw
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"not valid UTF-8 (byte {e.start + 1} of the line)", path=path, line=line) from None
    if text.startswith("\ufeff"):
        raise InputError("byte-order mark inside the file (two files joined?)", path=path, line=line)
    try:
        row = json.loads(text)
    except json.JSONDecodeError as e:
        looks_like_array = line == 1 and text.lstrip().startswith("[")
        hint = "; a JSON array? tether reads JSON Lines, one object a line" if looks_like_array else ""
        raise InputError(f"invalid JSON: {e.msg} (column {e.colno}){hint}", path=path, line=line) from None
    if not isinstance(row, dict):
        raise InputError(f"expected a JSON object, got {json_type(row)}", path=path, line=line)
    bad = unencodable_field(row)
    if bad is not None:
        raise InputError("holds a lone UTF-16 surrogate (a valid JSON escape), which is not Unicode text",
                         path=path, line=line, field=bad)
    return row


def unencodable_field(value, name: str = "") -> str | None:
    """The dotted name of the first string in `value` that is not encodable Unicode (a lone surrogate such
    as JSON's "\\ud800"), or None. Such text cannot be tokenised, written or shown."""
    if isinstance(value, str):
        return None if _encodable(value) else (name or "(value)")
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        shown = str(key).encode("utf-8", "backslashreplace").decode("utf-8")  # a bad key is named, escaped
        where = f"{name}[{shown}]" if isinstance(key, int) else f"{name}.{shown}" if name else shown
        bad = (None if _encodable(str(key)) else where) or unencodable_field(item, where)
        if bad is not None:
            return bad
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read_records(path, parse_row: Callable, split: str | None = None) -> tuple[list, list[InputError]]:
    """Apply `parse_row(row, path, line)` to every row: (records, problems), one problem per invalid row.

    An absent or empty file raises at once: it has no row to skip.
    """
    records, problems, n_rows = [], [], 0
    for line, raw in iter_raw_rows(path, split):
        n_rows += 1
        try:
            records.append(parse_row(decode_row(raw, path, line), path, line))
        except InputError as e:
            problems.append(e)
    if n_rows == 0:
        raise InputError("no rows", path=path)
    return records, problems


def problem_reason(problem: InputError) -> str:
    """What is wrong with a row, without where: '"chosen": expected a string, got null'."""
    return f'"{problem.field}": {problem.message}' if problem.field else problem.message


def skipped_by_reason(problems: list[InputError]) -> dict[str, list[int | None]]:
    """{reason: the lines (rows) it was found on}, reasons in order of first occurrence."""
    by_reason: dict[str, list[int | None]] = {}
    for problem in problems:
        by_reason.setdefault(problem_reason(problem), []).append(problem.line)
    return by_reason


def skipped_lines(by_reason: dict[str, list[int | None]]) -> list[str]:
    """One line per reason, as `tether data check` and every reader with skip_invalid print them:
    'skipped 2: "chosen": expected a string, got null (lines 4, 9)'."""
    def where(lines):
        shown = ", ".join(str(n) for n in lines[:SHOWN_PROBLEMS] if n is not None)
        more = ", …" if len(lines) > SHOWN_PROBLEMS else ""
        return f" ({'line' if len(lines) == 1 else 'lines'} {shown}{more})" if shown else ""
    return [f"skipped {len(lines)}: {reason}{where(lines)}" for reason, lines in by_reason.items()]


def warn_skipped(path, problems: list[InputError], n_rows: int, what: str = "rows") -> None:
    """The explicit skip policy's report on stderr: how many rows were skipped, by reason."""
    print(f"tether: warning: skipped {len(problems)} of {n_rows} {what} of {path} as invalid:", file=sys.stderr)
    for line in skipped_lines(skipped_by_reason(problems)):
        print(f"  {line}", file=sys.stderr)


def settle(records: list, problems: list[InputError], path, skip_invalid: bool) -> list:
    """Raise the first problem, or (skip_invalid) report them all and keep the valid records."""
    if problems and not skip_invalid:
        raise problems[0]
    if problems:
        warn_skipped(path, problems, len(records) + len(problems))
    if not records:
        raise InputError(f"no valid rows ({len(problems)} invalid)", path=path)
    return records


# ---------------------------------------------------------------- field validation


def string_field(value, path, line: int, name: str) -> str:
    """A string, possibly empty: what an assistant said may be nothing (Anthropic HH has such replies)."""
    if not isinstance(value, str):
        raise InputError(f"expected a string, got {json_type(value)}", path=path, line=line, field=name)
    return value


def text_field(value, path, line: int, name: str) -> str:
    """A non-empty (not only whitespace) string."""
    if not string_field(value, path, line, name).strip():
        raise InputError("empty string", path=path, line=line, field=name)
    return value


def messages_field(value, path, line: int, name: str) -> list[dict]:
    """A non-empty list of {"role": system|user|assistant, "content": string} messages; the content is
    non-empty text, except an assistant's, which may be empty (a reply of nothing is data)."""
    if not isinstance(value, list):
        raise InputError(f"expected a list of messages, got {json_type(value)}", path=path, line=line, field=name)
    if not value:
        raise InputError("empty list of messages", path=path, line=line, field=name)
    for i, message in enumerate(value):
        where = f"{name}[{i}]"
        if not isinstance(message, dict):
            raise InputError(f"expected a message object, got {json_type(message)}", path=path, line=line, field=where)
        for key in ("role", "content"):
            if key not in message:
                raise InputError("missing field", path=path, line=line, field=f"{where}.{key}")
        if message["role"] not in ROLES:
            raise InputError(f"role must be one of {', '.join(ROLES)}, got {message['role']!r}",
                             path=path, line=line, field=f"{where}.role")
        content_field = string_field if message["role"] == "assistant" else text_field
        content_field(message["content"], path, line, f"{where}.content")
    return value


def text_or_messages_field(value, path, line: int, name: str) -> Text:
    """A non-empty string or a well-formed message list."""
    if isinstance(value, list):
        return messages_field(value, path, line, name)
    if isinstance(value, str):
        return text_field(value, path, line, name)
    raise InputError(f"expected a string or a list of messages, got {json_type(value)}",
                     path=path, line=line, field=name)


def response_field(value, path, line: int, name: str) -> Text:
    """A response: a string (empty allowed: it is scored at its EOS) or a well-formed message list."""
    if isinstance(value, list):
        return messages_field(value, path, line, name)
    if isinstance(value, str):
        return value
    raise InputError(f"expected a string or a list of messages, got {json_type(value)}",
                     path=path, line=line, field=name)


def response_messages_field(value: list[dict], path, line: int, name: str) -> list[dict]:
    """A conversational response: at least one message, the first from the assistant."""
    if not value:
        raise InputError("empty response: every message is shared with the other response",
                         path=path, line=line, field=name)
    if value[0]["role"] != "assistant":
        raise InputError(f"a response starts with an assistant message, got {value[0]['role']!r}",
                         path=path, line=line, field=f"{name}[0].role")
    return value
