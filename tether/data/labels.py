"""Label files written by `tether label`: their rows and the undo rule (see `tether.label.stats` for the format).

Training reads a label file through `read_preferences`: it replays the file with
`effective_labels` (undone answers vanish) and keeps the "left"/"right" choices
(`preference_labels`); ties, both-bad, skips and undo rows are not preferences.
"""

from tether.data.prefs import PreferencePair, parse_pair_row, read_pairs
from tether.data.records import decode_row, iter_raw_rows, response_field, text_or_messages_field
from tether.errors import InputError

CHOICES = ("left", "right", "tie", "both_bad", "skip")
PREFERENCE_CHOICES = ("left", "right")
ORDERS = (["a", "b"], ["b", "a"])


# ---------------------------------------------------------------- reading


def _string(row, name, path, line) -> str:
    value = row.get(name)
    if not isinstance(value, str) or not value:
        raise InputError("expected a non-empty string", path=path, line=line, field=name)
    return value


def check_label_row(row: dict, path=None, line: int | None = None) -> dict:
    """Validate one row of a label file (module docstring); returns it with `repeat` defaulted to 0."""
    event = row.get("event")
    if event not in ("label", "undo"):
        raise InputError(f'expected "label" or "undo", got {event!r}', path=path, line=line, field="event")
    for name in ("id", "labeler", "time"):
        _string(row, name, path, line)
    repeat = row.setdefault("repeat", 0)
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 0:
        raise InputError(f"expected a whole number >= 0, got {repeat!r}", path=path, line=line, field="repeat")
    if event == "undo":
        _string(row, "undoes_time", path, line)
        return row
    if row.get("choice") not in CHOICES:
        raise InputError(f"expected one of {', '.join(CHOICES)}, got {row.get('choice')!r}",
                         path=path, line=line, field="choice")
    if row.get("order") not in ORDERS:
        raise InputError(f'expected ["a", "b"] or ["b", "a"], got {row.get("order")!r}',
                         path=path, line=line, field="order")
    if not isinstance(row.get("reason"), (str, type(None))):
        raise InputError("expected a string or null", path=path, line=line, field="reason")
    for name in ("prompt", "chosen", "rejected"):
        if name not in row:
            raise InputError("missing field", path=path, line=line, field=name)
        (text_or_messages_field if name == "prompt" else response_field)(row[name], path, line, name)
    return row


def read_label_rows(path) -> list[dict]:
    """The validated rows of a label file in file order; InputError names the line and field."""
    return [check_label_row(decode_row(raw, path, line), path, line) for line, raw in iter_raw_rows(path)]


# ---------------------------------------------------------------- the undo rule


def label_key(row: dict) -> tuple[str, str, int]:
    """(labeler, id, repeat): one labeler's answer to one showing of one pair."""
    return row["labeler"], row["id"], row.get("repeat", 0)


def effective_labels(rows) -> list[dict]:
    """The label rows in force after replaying `rows` in file order; they keep file order.

    Per key (labeler, id, repeat) at most one answer is in force:
      - a label row for a key with no answer in force comes into force;
      - a label row for a key that already has one is a duplicate and is ignored
        (the first answer stands, as the server answers a retry);
      - an undo row withdraws the answer in force for its key when that answer's
        `time` equals `undoes_time`; any other undo changes nothing.
    The server uses this to resume; training and `--stats` use it before reading choices.
    """
    in_force: dict[tuple, tuple[int, dict]] = {}
    for position, row in enumerate(rows):
        key = label_key(row)
        if row["event"] == "label":
            in_force.setdefault(key, (position, row))
        elif key in in_force and in_force[key][1]["time"] == row["undoes_time"]:
            del in_force[key]
    return [row for _, row in sorted(in_force.values(), key=lambda pair: pair[0])]


def preference_labels(rows) -> list[dict]:
    """What a reward model trains on: effective labels whose choice is "left" or "right" (chosen ≻ rejected)."""
    return [row for row in effective_labels(rows) if row["choice"] in PREFERENCE_CHOICES]


LABEL_ONLY_FIELDS = ("event", "repeat", "labeler", "time", "choice", "order", "reason")


def is_label_file(path) -> bool:
    """True when the file's first row carries an "event" field (written by `tether label`)."""
    for line, raw in iter_raw_rows(path):
        return "event" in decode_row(raw, path, line)
    return False


def read_preferences(path, format: str | None = None, **kw) -> list[PreferencePair]:
    """Preference pairs from a pairs file, or from a label file after the undo rule (ties and skips dropped)."""
    if not is_label_file(path):
        return read_pairs(path, format, **kw)
    rows = [(line, check_label_row(decode_row(raw, path, line), path, line)) for line, raw in iter_raw_rows(path)]
    line_of = {id(row): line for line, row in rows}
    kept = preference_labels([row for _, row in rows])
    return [parse_pair_row(row, path, line_of[id(row)], format)[1] for row in kept]
