"""Prompt files and supervised fine-tuning examples, read and validated like preference pairs.

Prompt rows: `{"prompt": str | messages}` (a `completion` or any other field is
kept in `extra` and not used), or `{"messages": [...]}`, whose trailing assistant
message(s), if any, are a completion and are left out of the prompt.

SFT rows: `{"prompt", "completion"}`, both text or both messages (the completion
then starts with an assistant message), or `{"messages": [...]}` whose last
message, from the assistant, is the completion and the messages before it the prompt.
A completion may be empty, as a preference pair's response may: it teaches EOS.

Files, line numbers, blank lines and `skip_invalid` behave as in `tether.data.prefs`.
"""

from dataclasses import dataclass, field

from tether.data.records import (Text, messages_field, read_records, response_field, response_messages_field,
                                 settle, text_or_messages_field)
from tether.errors import InputError


@dataclass
class PromptRecord:
    """One prompt (text or messages); `extra` holds the row's other fields verbatim."""

    prompt: Text
    extra: dict = field(default_factory=dict)
    source_line: int | None = None


@dataclass
class SFTExample:
    """A prompt and the completion to imitate (text, or messages: the assistant's reply)."""

    prompt: Text
    completion: Text
    extra: dict = field(default_factory=dict)
    source_line: int | None = None


def _others(row: dict, *used: str) -> dict:
    return {k: v for k, v in row.items() if k not in used}


def parse_prompt_row(row: dict, path, line: int) -> tuple[str, PromptRecord]:
    """(format "text" or "conversational", record) of one prompt row."""
    if "prompt" in row:
        prompt = text_or_messages_field(row["prompt"], path, line, "prompt")
        used = "prompt"
    elif "messages" in row:
        messages = messages_field(row["messages"], path, line, "messages")
        n = len(messages)
        while n > 0 and messages[n - 1]["role"] == "assistant":
            n -= 1
        if n == 0:
            raise InputError("only assistant messages, no prompt", path=path, line=line, field="messages")
        prompt, used = messages[:n], "messages"
    else:
        raise InputError('missing field (a prompt row has "prompt" or "messages")', path=path, line=line,
                         field="prompt")
    fmt = "conversational" if isinstance(prompt, list) else "text"
    return fmt, PromptRecord(prompt, _others(row, used), source_line=line)


def parse_sft_row(row: dict, path, line: int) -> tuple[str, SFTExample]:
    """(format "prompt-completion" or "conversational", example) of one SFT row."""
    if "messages" in row and "completion" not in row:
        messages = messages_field(row["messages"], path, line, "messages")
        last = len(messages) - 1
        if messages[last]["role"] != "assistant":
            raise InputError(f"the last message is the completion and must be the assistant's, got "
                             f"{messages[last]['role']!r}", path=path, line=line, field=f"messages[{last}].role")
        if last == 0:
            raise InputError("no prompt before the assistant's message", path=path, line=line, field="messages")
        return "conversational", SFTExample(messages[:last], messages[last:], _others(row, "messages"), line)
    for key in ("prompt", "completion"):
        if key not in row:
            raise InputError('missing field (an SFT row has "prompt" and "completion", or "messages")',
                             path=path, line=line, field=key)
    prompt = text_or_messages_field(row["prompt"], path, line, "prompt")
    completion = response_field(row["completion"], path, line, "completion")
    if isinstance(prompt, list) != isinstance(completion, list):
        raise InputError('"prompt" and "completion" must both be text or both be message lists',
                         path=path, line=line, field="completion")
    fmt = "prompt-completion"
    if isinstance(completion, list):
        response_messages_field(completion, path, line, "completion")
        fmt = "conversational"
    return fmt, SFTExample(prompt, completion, _others(row, "prompt", "completion"), line)


def read_prompts_report(path, *, split: str | None = None) -> tuple[list[PromptRecord], list[InputError]]:
    """(valid prompts, one InputError per invalid row)."""
    formatted, problems = read_records(path, parse_prompt_row, split)
    return [record for _, record in formatted], problems


def read_prompts(path, *, skip_invalid: bool = False, split: str | None = None) -> list[PromptRecord]:
    """Prompts of a JSON Lines / Parquet file or a datasets folder; invalid rows as in `read_pairs`."""
    records, problems = read_prompts_report(path, split=split)
    return settle(records, problems, path, skip_invalid)


def read_sft_examples_report(path, *, split: str | None = None) -> tuple[list[SFTExample], list[InputError]]:
    """(valid SFT examples, one InputError per invalid row)."""
    formatted, problems = read_records(path, parse_sft_row, split)
    return [example for _, example in formatted], problems


def read_sft_examples(path, *, skip_invalid: bool = False, split: str | None = None) -> list[SFTExample]:
    """SFT examples of a JSON Lines / Parquet file or a datasets folder; invalid rows as in `read_pairs`."""
    examples, problems = read_sft_examples_report(path, split=split)
    return settle(examples, problems, path, skip_invalid)
