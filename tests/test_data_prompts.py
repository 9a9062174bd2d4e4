"""Prompt files and SFT examples (tether.data.prompts)."""

import json
import re
from pathlib import Path

import pytest

from tether.data import read_prompts, read_sft_examples
from tether.errors import InputError

DATA = Path(__file__).parent / "data"
USER_HI = {"role": "user", "content": "Hi"}
REPLY = {"role": "assistant", "content": "Hello!"}


def one_row(tmp_path: Path, fields: dict) -> Path:
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(fields) + "\n")
    return path


def test_prompt_fixture_text_messages_and_completion_rows():
    text, messages, conversation, with_completion = read_prompts(DATA / "prompts.jsonl")
    assert (text.prompt, text.extra) == ("What is 3 plus 4?", {"family": "arithmetic"})
    assert messages.prompt == [{"role": "user", "content": "Capital of Spain?"}]
    # The assistant's reply ending a conversation is not part of the prompt.
    assert conversation.prompt == [{"role": "user", "content": "How do I tie a tie?"}]
    assert (with_completion.prompt, with_completion.extra) == ("Say hello.", {"completion": "Hello."})
    assert [r.source_line for r in (text, messages, conversation, with_completion)] == [1, 2, 3, 4]


@pytest.mark.parametrize("fields, field, message", [
    ({"text": "hi"}, "prompt", 'missing field (a prompt row has "prompt" or "messages")'),
    ({"prompt": ""}, "prompt", "empty string"),
    ({"prompt": 3}, "prompt", "expected a string or a list of messages, got a number"),
    ({"messages": [REPLY]}, "messages", "only assistant messages, no prompt"),
    ({"messages": [{"role": "user"}]}, "messages[0].content", "missing field"),
])
def test_bad_prompt_rows(tmp_path, fields, field, message):
    path = one_row(tmp_path, fields)
    with pytest.raises(InputError, match="^" + re.escape(f'{path}:1: "{field}": {message}')):
        read_prompts(path)


def test_sft_fixture_prompt_completion_and_messages():
    text, conversation, explicit_messages = read_sft_examples(DATA / "sft.jsonl")
    assert (text.prompt, text.completion) == ("What is 3 plus 4?", "7.")
    assert conversation.prompt == [{"role": "user", "content": "Capital of Spain?"}]
    assert conversation.completion == [{"role": "assistant", "content": "Madrid."}]
    assert conversation.extra == {"style": "concise"}
    assert (explicit_messages.prompt, explicit_messages.completion) == ([USER_HI], [REPLY])


@pytest.mark.parametrize("fields, field, message", [
    ({"prompt": "p"}, "completion", 'missing field (an SFT row has "prompt" and "completion", or "messages")'),
    ({"prompt": " ", "completion": "c"}, "prompt", "empty string"),
    ({"prompt": "p", "completion": None}, "completion", "expected a string or a list of messages, got null"),
    ({"prompt": "p", "completion": [REPLY]}, "completion",
     '"prompt" and "completion" must both be text or both be message lists'),
    ({"prompt": [USER_HI], "completion": [USER_HI]}, "completion[0].role",
     "a response starts with an assistant message, got 'user'"),
    ({"messages": [REPLY, USER_HI]}, "messages[1].role",
     "the last message is the completion and must be the assistant's, got 'user'"),
    ({"messages": [REPLY]}, "messages", "no prompt before the assistant's message"),
])
def test_bad_sft_rows(tmp_path, fields, field, message):
    path = one_row(tmp_path, fields)
    with pytest.raises(InputError, match="^" + re.escape(f'{path}:1: "{field}": {message}')):
        read_sft_examples(path)


def test_prompts_skip_invalid_reports(tmp_path, capsys):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a"}\n{"prompt": ""}\n')
    assert [r.prompt for r in read_prompts(path, skip_invalid=True)] == ["a"]
    assert "skipped 1 of 2 rows" in capsys.readouterr().err
