"""Reading, validating and writing preference pairs (tether.data.prefs)."""

import json
import os
import re
from pathlib import Path

import pytest

from tether.data import PreferencePair, pair_to_row, read_pairs, read_pairs_report, write_pairs
from tether.data.prefs import split_implicit_prompt, split_shared_messages
from tether.errors import InputError

DATA = Path(__file__).parent / "data"
HUMAN, ASSISTANT = "\n\nHuman:", "\n\nAssistant:"


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def row(**fields) -> str:
    return json.dumps(fields)


def raises_at(path: Path, line: int, field: str | None, message: str, **read_kw):
    """Assert read_pairs fails with exactly `path:line: "field": message`."""
    where = f'{path}:{line}: ' + (f'"{field}": ' if field else "")
    with pytest.raises(InputError, match="^" + re.escape(where + message)) as info:
        read_pairs(path, **read_kw)
    assert (info.value.line, info.value.field) == (line, field)


# ---------------------------------------------------------------- formats


def test_explicit_fixture_keeps_every_extra_field():
    pairs = read_pairs(DATA / "pairs_explicit.jsonl")
    assert [p.source_line for p in pairs] == [1, 2, 3, 4]
    first = pairs[0]
    assert (first.prompt, first.chosen, first.rejected) == ("What is 17 plus 25?", "42.", "Great question! It is 41.")
    assert first.extra == {"id": "p1", "margin": 1.5, "source": "gold"}
    assert first.margin == 1.5 and pairs[1].margin == 0.0 and pairs[2].margin is None
    assert pairs[1].extra["labeler"] == {"name": "ann", "seconds": 4.2}


def test_implicit_hh_prompt_ends_at_the_last_shared_assistant_marker():
    first, multi_turn, no_marker = read_pairs(DATA / "pairs_implicit_hh.jsonl")
    # Both responses start with "Paris": the shared word stays in the responses.
    assert first.prompt == "\n\nHuman: What is the capital of France?\n\nAssistant:"
    assert (first.chosen, first.rejected) == (" Paris is the capital.", " Paris, I think, or Lyon.")
    assert multi_turn.prompt == ("\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: How do I shoot a great photo?"
                                 "\n\nAssistant:")
    assert (multi_turn.chosen, multi_turn.rejected) == (" Use soft light.", " I cannot help with that.")
    # No marker: cut at the last whitespace of the common prefix "The sky is blu".
    assert (no_marker.prompt, no_marker.chosen, no_marker.rejected) == ("The sky is", " blue today", " bluish")


def test_implicit_split_reassembles_the_transcripts():
    chosen = f"{HUMAN} Hi{ASSISTANT} Sure thing, here you go."
    rejected = f"{HUMAN} Hi{ASSISTANT} Sure, no."
    prompt, c, r = split_implicit_prompt(chosen, rejected)
    assert prompt.endswith("Assistant:") and c.startswith(" Sure") and r.startswith(" Sure")
    assert (prompt + c, prompt + r) == (chosen, rejected)


def test_implicit_split_with_one_response_a_prefix_of_the_other():
    assert split_implicit_prompt(f"{HUMAN} q{ASSISTANT} a", f"{HUMAN} q{ASSISTANT} a b") == \
        (f"{HUMAN} q{ASSISTANT}", " a", " a b")


def test_conversational_fixture_explicit_implicit_and_text_prompt_rows():
    explicit, implicit, text_prompt = read_pairs(DATA / "pairs_conversational.jsonl")
    assert explicit.prompt == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 plus 2?"}]
    assert explicit.chosen == [{"role": "assistant", "content": "4."}]
    assert implicit.prompt == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                               {"role": "user", "content": "Capital of Peru?"}]
    assert (implicit.chosen, implicit.rejected) == ([{"role": "assistant", "content": "Lima."}],
                                                    [{"role": "assistant", "content": "Cusco."}])
    # A text prompt beside full conversations is superseded by the shared messages (as TRL does).
    assert text_prompt.prompt == [{"role": "user", "content": "Capital of Chile?"}]
    assert text_prompt.rejected == [{"role": "assistant", "content": "Valparaiso."}]
    assert text_prompt.extra == {"id": "c3"}


def test_shared_messages_never_end_the_prompt_with_an_assistant_message():
    u1, a1, u2 = ({"role": "user", "content": "x"}, {"role": "assistant", "content": "y"},
                  {"role": "user", "content": "z"})
    a2 = {"role": "assistant", "content": "w"}
    assert split_shared_messages([u1, a1], [u1, a1, u2, a2]) == ([u1], [a1], [a1, u2, a2])


def test_format_detected_per_row_and_forced(tmp_path):
    path = write_lines(tmp_path / "mixed.jsonl", [
        row(prompt="p", chosen="a", rejected="b"),
        row(chosen="x y", rejected="x z"),
    ])
    _, problems = read_pairs_report(path)
    assert problems == []
    raises_at(path, 2, "prompt", "missing field (format explicit)", format="explicit")
    raises_at(path, 1, "prompt", "not allowed in format implicit", format="implicit")
    raises_at(path, 1, "chosen", "text, but the format asked for is conversational", format="conversational")
    question = {"role": "user", "content": "q"}
    conv = write_lines(tmp_path / "conv.jsonl", [row(chosen=[question, {"role": "assistant", "content": "a"}],
                                                     rejected=[question, {"role": "assistant", "content": "b"}])])
    raises_at(conv, 1, "chosen", "a list of messages, but the format asked for is explicit", format="explicit")
    with pytest.raises(InputError, match='"format": unknown format'):
        read_pairs(path, format="hh")


# ---------------------------------------------------------------- bad input


def test_missing_file_names_it(tmp_path):
    with pytest.raises(InputError, match=re.escape(f"{tmp_path / 'nope.jsonl'}: no such file")):
        read_pairs(tmp_path / "nope.jsonl")


def test_empty_file_and_blank_only_file_have_no_rows(tmp_path):
    for text in ("", "\n\n  \n"):
        (tmp_path / "empty.jsonl").write_text(text)
        with pytest.raises(InputError, match=re.escape(f"{tmp_path / 'empty.jsonl'}: no rows")):
            read_pairs(tmp_path / "empty.jsonl")


def test_invalid_json_names_line_and_column(tmp_path):
    path = write_lines(tmp_path / "p.jsonl", [row(prompt="p", chosen="a", rejected="b"), '{"prompt": "p", "chosen": }'])
    raises_at(path, 2, None, "invalid JSON: Expecting value (column 27)")


def test_json_array_gets_a_hint_and_non_objects_are_rejected(tmp_path):
    path = write_lines(tmp_path / "p.json", ["[", row(prompt="p", chosen="a", rejected="b") + ",", "]"])
    raises_at(path, 1, None, "invalid JSON: Expecting value (column 2); a JSON array?")
    raises_at(write_lines(tmp_path / "q.jsonl", ['["p", "a", "b"]']), 1, None, "expected a JSON object, got a list")


@pytest.mark.parametrize("fields, field, message", [
    (dict(prompt="p", rejected="b"), "chosen", "missing field"),
    (dict(prompt="p", chosen="a"), "rejected", "missing field"),
    (dict(prompt="p", chosen=7, rejected="b"), "chosen", "expected a string, got a number"),
    (dict(prompt=None, chosen="a", rejected="b"), "prompt", "expected a string, got null"),
    (dict(prompt=" \r\n", chosen="a", rejected="b"), "prompt", "empty string"),
    (dict(prompt="", chosen="a", rejected="b"), "prompt", "empty string"),
    (dict(prompt="p", chosen="", rejected=""), "rejected", "chosen identical to rejected"),
    (dict(prompt="p", chosen="same", rejected="same"), "rejected", "chosen identical to rejected"),
    (dict(chosen="same", rejected="same"), "rejected", "chosen identical to rejected"),
    (dict(chosen="abc", rejected="abd"), "chosen", 'no shared prompt prefix with "rejected"'),
    (dict(chosen="Hi there", rejected="Bye there"), "chosen", 'no shared prompt prefix with "rejected"'),
    (dict(chosen=f"{HUMAN} q{ASSISTANT}", rejected=f"{HUMAN} q{ASSISTANT}"), "rejected",
     "chosen identical to rejected"),
    (dict(prompt="p", chosen="a", rejected="b", margin="big"), "margin", "expected a number, got a string"),
    (dict(prompt="p", chosen="a", rejected="b", margin=True), "margin", "expected a number, got a boolean"),
    (dict(prompt="p", chosen="a", rejected=[{"role": "assistant", "content": "b"}]), "rejected",
     '"chosen" and "rejected" must both be text or both be message lists'),
])
def test_each_bad_field_is_named_with_its_line(tmp_path, fields, field, message):
    path = write_lines(tmp_path / "p.jsonl", [row(prompt="ok", chosen="a", rejected="b"), "", row(**fields)])
    raises_at(path, 3, field, message)


def test_infinite_margin_is_rejected(tmp_path):
    path = write_lines(tmp_path / "p.jsonl", ['{"prompt": "p", "chosen": "a", "rejected": "b", "margin": Infinity}'])
    raises_at(path, 1, "margin", "expected a finite number, got inf")


@pytest.mark.parametrize("messages, field, message", [
    ([], "chosen", "empty list of messages"),
    (["hi"], "chosen[0]", "expected a message object, got a string"),
    ([{"content": "x"}], "chosen[0].role", "missing field"),
    ([{"role": "robot", "content": "x"}], "chosen[0].role", "role must be one of system, user, assistant, got 'robot'"),
    ([{"role": "user", "content": ""}], "chosen[0].content", "empty string"),
    ([{"role": "assistant", "content": None}], "chosen[0].content", "expected a string, got null"),
    ([{"role": "assistant", "content": ["part"]}], "chosen[0].content", "expected a string, got a list"),
    ([{"role": "user", "content": "again"}], "chosen[0].role", "a response starts with an assistant message, got 'user'"),
])
def test_bad_messages_name_the_message_and_key(tmp_path, messages, field, message):
    prompt = [{"role": "user", "content": "q"}]
    rejected = [{"role": "assistant", "content": "b"}]
    path = write_lines(tmp_path / "p.jsonl", [json.dumps({"prompt": prompt, "chosen": messages, "rejected": rejected})])
    raises_at(path, 1, field, message)


def test_conversations_with_nothing_shared_are_rejected(tmp_path):
    path = write_lines(tmp_path / "p.jsonl", [json.dumps({
        "chosen": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "x"}],
        "rejected": [{"role": "user", "content": "b"}, {"role": "assistant", "content": "y"}]})])
    raises_at(path, 1, "chosen", 'no shared leading messages (the prompt) with "rejected"')


def test_bom_at_start_and_crlf_parse_like_plain_utf8(tmp_path):
    plain = (DATA / "pairs_explicit.jsonl").read_bytes()
    windows = tmp_path / "windows.jsonl"
    windows.write_bytes(b"\xef\xbb\xbf" + plain.replace(b"\n", b"\r\n"))
    assert read_pairs(windows) == read_pairs(DATA / "pairs_explicit.jsonl")


def test_bom_in_the_middle_and_bad_bytes_name_the_line(tmp_path):
    good = row(prompt="p", chosen="a", rejected="b").encode()
    joined = tmp_path / "joined.jsonl"
    joined.write_bytes(good + b"\n" + b"\xef\xbb\xbf" + good + b"\n")
    raises_at(joined, 2, None, "byte-order mark inside the file (two files joined?)")
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes(good + b"\n\n" + '{"prompt": "caf\u00e9", "chosen": "a", "rejected": "b"}'.encode("latin-1") + b"\n")
    raises_at(latin1, 3, None, "not valid UTF-8 (byte 16 of the line)")


def test_skip_invalid_is_explicit_and_reported(tmp_path, capsys):
    path = write_lines(tmp_path / "p.jsonl", [
        row(prompt="p", chosen="a", rejected="b"),
        row(prompt="p", chosen="a", rejected="a"),
        "not json",
        row(prompt="q", chosen="c", rejected="d"),
    ])
    with pytest.raises(InputError, match="p.jsonl:2: \"rejected\": chosen identical to rejected"):
        read_pairs(path)
    pairs = read_pairs(path, skip_invalid=True)
    assert [p.source_line for p in pairs] == [1, 4]
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"tether: warning: skipped 2 of 4 rows of {path} as invalid:"
    assert err[1] == '  skipped 1: "rejected": chosen identical to rejected (line 2)'
    assert err[2].startswith("  skipped 1: invalid JSON") and err[2].endswith("(line 3)")
    pairs, problems = read_pairs_report(path)
    assert len(pairs) == 2 and [p.line for p in problems] == [2, 3]


def test_skip_invalid_with_no_valid_row_still_fails(tmp_path):
    path = write_lines(tmp_path / "p.jsonl", [row(prompt="p", chosen="a", rejected="a")])
    with pytest.raises(InputError, match=re.escape(f"{path}: no valid rows (1 invalid)")):
        read_pairs(path, skip_invalid=True)


# ---------------------------------------------------------------- parquet and datasets folders


def test_parquet_and_datasets_folder_read_like_jsonl(tmp_path):
    import datasets
    import pyarrow
    import pyarrow.parquet

    rows = [json.loads(line) for line in (DATA / "pairs_conversational.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "prompt" not in r]  # one schema: implicit conversational
    expected = read_pairs(write_lines(tmp_path / "p.jsonl", [json.dumps(r) for r in rows]))
    pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows), tmp_path / "p.parquet")
    assert read_pairs(tmp_path / "p.parquet") == expected
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "dict"))
    assert read_pairs(tmp_path / "dict") == expected
    no_split = f"{tmp_path / 'dict'}: \"split\": no split 'test'; the splits are train"
    with pytest.raises(InputError, match=re.escape(no_split)):
        read_pairs(tmp_path / "dict", split="test")
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "one"))
    assert read_pairs(tmp_path / "one") == expected
    with pytest.raises(InputError, match="\"split\": split 'train' given, but the folder holds one Dataset"):
        read_pairs(tmp_path / "one", split="train")


def test_parquet_rows_are_numbered_from_one(tmp_path):
    import pyarrow
    import pyarrow.parquet

    rows = [{"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "p", "chosen": "a", "rejected": "a"}]
    pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows), tmp_path / "p.parquet")
    raises_at(tmp_path / "p.parquet", 2, "rejected", "chosen identical to rejected")


def test_a_folder_that_is_not_a_dataset_and_a_broken_parquet(tmp_path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(InputError, match="folder: a folder, but not one written by datasets' save_to_disk"):
        read_pairs(tmp_path / "folder")
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(InputError, match="bad.parquet: not a readable Parquet file"):
        read_pairs(tmp_path / "bad.parquet")


# ---------------------------------------------------------------- writing


@pytest.mark.parametrize("fixture", ["pairs_explicit.jsonl", "pairs_implicit_hh.jsonl", "pairs_conversational.jsonl"])
def test_write_then_read_round_trips(tmp_path, fixture):
    pairs = read_pairs(DATA / fixture)
    write_pairs(tmp_path / "out.jsonl", pairs)
    again = read_pairs(tmp_path / "out.jsonl", format="conversational" if "conv" in fixture else "explicit")
    assert [(p.prompt, p.chosen, p.rejected, p.extra) for p in again] == \
        [(p.prompt, p.chosen, p.rejected, p.extra) for p in pairs]


def test_pair_to_row_puts_the_pair_first_then_extra():
    pair = PreferencePair("p", "a", "b", {"id": 3, "margin": 0.5})
    assert list(pair_to_row(pair).items()) == [("prompt", "p"), ("chosen", "a"), ("rejected", "b"), ("id", 3),
                                               ("margin", 0.5)]
    with pytest.raises(ValueError, match=re.escape("extra repeats the pair's own field(s) ['chosen']")):
        pair_to_row(PreferencePair("p", "a", "b", {"chosen": "c"}))


def test_a_failing_write_leaves_the_old_file_and_no_temporary(tmp_path):
    out = tmp_path / "out.jsonl"
    write_pairs(out, [PreferencePair("p", "a", "b", {})])
    before = out.read_bytes()

    def pairs_then_crash():
        yield PreferencePair("q", "c", "d", {})
        raise RuntimeError("labeler crashed")

    with pytest.raises(RuntimeError, match="labeler crashed"):
        write_pairs(out, pairs_then_crash())
    assert out.read_bytes() == before
    with pytest.raises(RuntimeError):
        write_pairs(tmp_path / "new.jsonl", pairs_then_crash())
    assert sorted(os.listdir(tmp_path)) == ["out.jsonl"]


@pytest.mark.parametrize("row, field", [
    ('{"prompt": "hi", "chosen": "a\\ud800", "rejected": "b"}', "chosen"),
    ('{"chosen": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "\\udfff"}], '
     '"rejected": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "no"}]}', "chosen[1].content"),
    ('{"prompt": "hi", "chosen": "a", "rejected": "b", "note": {"\\ud800": 1}}', "note.\\ud800"),
])
def test_a_lone_utf16_surrogate_is_an_error_naming_line_and_field(tmp_path, row, field):
    """Valid JSON, but not Unicode text: it would fail later when tokenised, written or shown (issue 21)."""
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"prompt": "ok", "chosen": "a", "rejected": "b"}\n' + row + "\n")
    with pytest.raises(InputError, match=re.escape(f'{path}:2: "{field}": holds a lone UTF-16 surrogate')):
        read_pairs(path)
    assert len(read_pairs(path, skip_invalid=True)) == 1
