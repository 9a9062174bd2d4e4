"""`tether data check FILE`: validate a pair, prompt or SFT file and print what it holds.

Prints the kind, the rows and their formats, length statistics of each field
(characters and whitespace-separated words: mean, median, max), and for pairs the
share of pairs whose chosen response is longer than the rejected one (a length
bias a reward model will learn), identical pairs, ties and margins. An invalid row
stops the check with one line naming file, line and field (exit 2), unless
`--skip-invalid true`, which reports the skipped rows by reason. Empty responses are
valid (scored at their EOS) and counted ("empty chosen: N, empty rejected: M"). A label file
written by `tether label` is checked as training reads it (undo rows included).
"""

import statistics
from collections import Counter
from dataclasses import dataclass

from tether.config import check_fields, opt, require
from tether.data.labels import effective_labels, read_label_rows, read_preferences
from tether.data.prefs import FORMATS, IDENTICAL, parse_pair_row
from tether.data.records import decode_row, iter_raw_rows, read_records, settle, skipped_by_reason, skipped_lines
from tether.data.token_fit import HIGH_UNKNOWN_RATE, token_fit
from tether.data.prompts import parse_prompt_row, parse_sft_row
from tether.errors import InputError

KINDS = ("auto", "pairs", "labels", "prompts", "sft")
TIE_FIELDS = ("tie", "label", "winner", "preference")


@dataclass
class DataCheckConfig:
    """Prints rows per format, length statistics and, for pairs, length bias, identical pairs, ties and
    margins; exits 2 at the first invalid row."""

    positional = "file"  # the CLI also accepts `tether data check FILE`

    file: str = opt("", "JSON Lines or Parquet file, or a folder saved with datasets' save_to_disk")
    format: str | None = opt(None, "force the pair format: explicit, implicit or conversational; "
                                   "None detects it per row", choices=FORMATS)
    kind: str = opt("auto", "what the file holds: pairs, labels (written by tether label), prompts, sft, "
                            "or auto (from the first row's fields)", choices=KINDS)
    split: str | None = opt(None, "split of a datasets folder holding a DatasetDict; None means train")
    skip_invalid: bool = opt(False, "skip invalid rows and report them by reason, instead of stopping at the first")
    tokenizer: str | None = opt(None, "model directory (or builtin:NAME) whose tokenizer reads the file: report the "
                                      "unknown-token rate and the token lengths")

    def __post_init__(self):
        check_fields(self)
        require(bool(self.file), "file", "required: the file to check")
        require(self.format is None or self.kind in ("auto", "pairs"), "format", "applies to preference pairs only")


def detect_kind(path, split: str | None = None) -> str:
    """"labels", "pairs", "sft" or "prompts", from the fields of the first row that decodes to an object."""
    for line, raw in iter_raw_rows(path, split):
        try:
            row = decode_row(raw, path, line)
        except InputError:
            continue
        messages = row.get("messages")
        ends_with_reply = (isinstance(messages, list) and messages and isinstance(messages[-1], dict)
                           and messages[-1].get("role") == "assistant")
        if "event" in row:
            return "labels"
        if "chosen" in row or "rejected" in row:
            return "pairs"
        if "completion" in row or ends_with_reply:
            return "sft"
        return "prompts"
    return "pairs"


def as_text(value) -> str:
    """A text field, or the contents of a message list joined by newlines."""
    return value if isinstance(value, str) else "\n".join(m["content"] for m in value)


def length_stats(texts: list[str]) -> dict:
    """{"chars": (mean, median, max), "words": (mean, median, max)} of non-empty `texts`."""
    def summary(values):
        return statistics.fmean(values), statistics.median(values), max(values)
    return {"chars": summary([len(t) for t in texts]), "words": summary([len(t.split()) for t in texts])}


def tie_value(extra: dict) -> bool | None:
    """Whether a row marks a tie (`tie: true`, or label/winner/preference "tie…"); None without such a field."""
    present = [name for name in TIE_FIELDS if name in extra]
    if not present:
        return None
    return any(extra[name] is True if name == "tie" else str(extra[name]).lower().startswith("tie")
               for name in present)


def _parser(kind: str, format: str | None):
    if kind == "pairs":
        return lambda row, path, line: parse_pair_row(row, path, line, format)
    return parse_prompt_row if kind == "prompts" else parse_sft_row


def _fields(kind: str) -> tuple[str, ...]:
    return {"pairs": ("prompt", "chosen", "rejected"), "prompts": ("prompt",), "sft": ("prompt", "completion")}[kind]


def _responses(kind: str) -> tuple[str, ...]:
    """The fields that hold what a model said: empty is valid there, and counted."""
    return {"pairs": ("chosen", "rejected"), "labels": ("chosen", "rejected"), "prompts": (), "sft": ("completion",)}[kind]


def empty_counts(records: list, kind: str) -> dict[str, int]:
    """{response field: rows whose response is empty or only whitespace} (scored at its EOS, not an error)."""
    return {name: sum(not as_text(getattr(r, name)).strip() for r in records) for name in _responses(kind)}


def data_stats(cfg: DataCheckConfig, tokenizer=None) -> dict:
    """Validate `cfg.file` and return its statistics (printed by `run_data_check`); with a `tokenizer`, also how
    the texts fit it (`token_fit`)."""
    kind = detect_kind(cfg.file, cfg.split) if cfg.kind == "auto" else cfg.kind
    if cfg.format is not None and kind != "pairs":
        raise InputError(f"applies to preference pairs only; this file holds {kind}", field="format")
    if kind == "labels":
        return _label_stats(cfg, tokenizer)
    formatted, problems = read_records(cfg.file, _parser(kind, cfg.format), cfg.split)
    settle(formatted, problems, cfg.file, cfg.skip_invalid)
    records = [record for _, record in formatted]
    stats = {
        "file": str(cfg.file), "kind": kind,
        "rows": len(formatted) + len(problems), "valid": len(records),
        "formats": dict(Counter(fmt for fmt, _ in formatted)),
        "skipped": skipped_by_reason(problems),
        "empty": empty_counts(records, kind),
        "lengths": {name: length_stats(texts) for name, texts in _field_texts(records, _fields(kind)).items()},
    }
    if kind == "pairs":
        stats.update(_pair_stats(records, len(problems), sum(p.message == IDENTICAL for p in problems)))
    if tokenizer is not None:
        stats["token_fit"] = token_fit(_field_texts(records, _fields(kind)), tokenizer)
    return stats


def _field_texts(records: list, fields: tuple[str, ...]) -> dict[str, list[str]]:
    return {name: [as_text(getattr(r, name)) for r in records] for name in fields}


def _label_stats(cfg: DataCheckConfig, tokenizer) -> dict:
    """A label file as training reads it: every row validated, undone answers withdrawn, the left/right
    answers kept as pairs (ties, both-bad and skips are not preferences)."""
    rows = read_label_rows(cfg.file)
    pairs = read_preferences(cfg.file)
    texts = _field_texts(pairs, _fields("pairs"))
    stats = {
        "file": str(cfg.file), "kind": "labels", "rows": len(rows), "valid": len(rows),
        "formats": dict(Counter(row["event"] for row in rows)), "skipped": {}, "empty": empty_counts(pairs, "labels"),
        "choices": dict(Counter(row["choice"] for row in effective_labels(rows))),
        "lengths": {name: length_stats(field) for name, field in texts.items()},
        **_pair_stats(pairs, 0, 0),
    }
    if tokenizer is not None:
        stats["token_fit"] = token_fit(texts, tokenizer)
    return stats


def _pair_stats(pairs: list, n_invalid: int, n_identical: int) -> dict:
    ties = [t for t in (tie_value(p.extra) for p in pairs) if t is not None]
    margins = [p.margin for p in pairs if p.margin is not None]
    return {
        "chosen_longer": sum(len(as_text(p.chosen)) > len(as_text(p.rejected)) for p in pairs) / len(pairs),
        "identical": n_identical / (len(pairs) + n_invalid),
        "ties": (sum(ties) / len(ties)) if ties else None, "rows_with_tie_field": len(ties),
        "margins": (len(margins), statistics.fmean(margins), min(margins), max(margins)) if margins else None,
    }


def format_report(stats: dict) -> str:
    """The text `tether data check` prints."""
    formats = ", ".join(f"{name} {count}" for name, count in stats["formats"].items())
    lines = [f"{stats['file']}: {stats['rows']} rows, {stats['valid']} valid ({stats['kind']})",
             f"{'events' if stats['kind'] == 'labels' else 'format'}: {formats}"]
    if stats["kind"] == "labels":
        choices = ", ".join(f"{name} {count}" for name, count in stats["choices"].items())
        lines.append(f"answers in force: {choices} (left/right become pairs)")
    lines += skipped_lines(stats["skipped"])
    if stats["empty"]:
        lines.append(", ".join(f"empty {name}: {count}" for name, count in stats["empty"].items()))
    lines.append(f"{'length':<10} {'chars mean':>11} {'median':>8} {'max':>8}   "
                 f"{'words mean':>11} {'median':>8} {'max':>8}")
    for name, lengths in stats["lengths"].items():
        (cm, cmed, cmax), (wm, wmed, wmax) = lengths["chars"], lengths["words"]
        lines.append(f"{name:<10} {cm:>11.1f} {cmed:>8.1f} {cmax:>8d}   {wm:>11.1f} {wmed:>8.1f} {wmax:>8d}")
    if stats["kind"] in ("pairs", "labels"):
        lines.append(f"chosen longer than rejected: {stats['chosen_longer']:.1%} of pairs")
        lines.append(f"identical pairs (chosen == rejected): {stats['identical']:.1%} of rows")
        if stats["ties"] is not None:
            lines.append(f"ties: {stats['ties']:.1%} of {stats['rows_with_tie_field']} rows with a tie field")
        if stats["margins"] is not None:
            n, mean, low, high = stats["margins"]
            lines.append(f"margin: {n} pairs, mean {mean:.3g}, min {low:.3g}, max {high:.3g}")
    if "token_fit" in stats:
        lines += _token_fit_lines(stats["token_fit"])
    return "\n".join(lines)


def _token_fit_lines(fit: dict) -> list[str]:
    lines = [f"unknown tokens: {fit['unknown_rate']:.1%} ({fit['unknown_tokens']} of {fit['tokens']})"
             + (f", e.g. {', '.join(fit['unknown_examples'])}" if fit["unknown_examples"] else "")]
    if fit["unknown_rate"] > HIGH_UNKNOWN_RATE:
        lines.append(f"warning: over {HIGH_UNKNOWN_RATE:.0%}: a model with this tokenizer cannot read this text")
    lines.append(f"{'tokens':<10} {'mean':>11} {'median':>8} {'max':>8}")
    lines += [f"{name:<10} {mean:>11.1f} {median:>8.1f} {high:>8d}" for name, (mean, median, high) in fit["lengths"].items()]
    return lines


def run_data_check(cfg: DataCheckConfig, tokenizer=None) -> dict:
    """Print the report of `cfg.file`; InputError (exit 2) on the first invalid row unless skip_invalid.

    `tokenizer` is `cfg.tokenizer` loaded (by `tether.pipelines.data_check`, which the CLI calls)."""
    stats = data_stats(cfg, tokenizer)
    print(format_report(stats))
    return stats
