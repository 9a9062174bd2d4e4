"""`tether label` where users trip (issue 21): two servers on one label file, text that is not Unicode,
bodies nested past the parser's depth, an unwritable --out.

Servers are real (a thread, or `python -m tether` subprocesses); helpers come from test_label_server.
"""

import json
import re
import os
import subprocess
import sys
from pathlib import Path

import pytest

import tether
from tether.cli import main
from tether.errors import InputError
from tether.label.pairs import load_items, presentation_order
from tether.label.server import serve_in_background
from tether.label.store import LabelStore
from tether.data.labels import read_label_rows
from test_label_server import Running, _start_cli, api, call, pair_rows, write_jsonl

ANOTHER = "another `tether label` is writing to this file"


def cli(*args):
    """(exit code, stdout, stderr) of `python -m tether label ARGS` run to its end."""
    env = {**os.environ, "PYTHONPATH": str(Path(tether.__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-m", "tether", "label", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=60)
    return done.returncode, done.stdout, done.stderr


# ---------------------------------------------------------------- one server per label file


def test_a_second_store_on_one_file_is_refused_until_the_first_closes(tmp_path):
    items = load_items(write_jsonl(tmp_path / "pairs.jsonl", pair_rows(2)))
    out = tmp_path / "labels.jsonl"
    first = LabelStore(items, out, "alice")
    with pytest.raises(InputError, match=f'labels.jsonl: "out": {ANOTHER}'):
        LabelStore(items, out, "bob")
    first.answer(items[0].id, 0, "left", presentation_order(0, "alice", items[0]), None)
    first.close()
    again = LabelStore(items, out, "bob")
    assert again.state()["done"] == 0 and len(read_label_rows(out)) == 1
    again.close()


def test_a_second_server_on_one_out_exits_2_with_one_line(tmp_path):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(3))
    out = tmp_path / "labels.jsonl"
    items = load_items(pairs)
    proc, url = _start_cli(pairs, out)
    try:
        client = Running(url, out)
        assert client.answer(items[0], "left")[0] == 200
        code, stdout, stderr = cli("--pairs", pairs, "--out", out, "--labeler", "bob")
        assert code == 2 and stdout == ""
        assert stderr.count("\n") == 1 and ANOTHER in stderr and "Traceback" not in stderr
        assert client.answer(items[1], "right")[0] == 200  # the first server is untouched
        assert [row["id"] for row in read_label_rows(out)] == [items[0].id, items[1].id]
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_an_out_that_cannot_be_opened_exits_2(tmp_path, capsys):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(2))
    not_a_folder = write_jsonl(tmp_path / "file", [])
    assert main(["label", "--pairs", str(pairs), "--out", str(not_a_folder / "labels.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and '"out": cannot open for appending' in err


# ---------------------------------------------------------------- text that is not Unicode


@pytest.mark.parametrize("row, field", [
    ({"prompt": "p\\ud800", "response_a": "x", "response_b": "y"}, "prompt"),
    ({"prompt": "p", "response_a": "x", "response_b": "\\udfff y"}, "response_b"),
    ({"prompt": "p", "response_a": "x", "response_b": "y", "id": "a\\ud800"}, "id"),
    ({"prompt": "p", "chosen": "x", "rejected": "\\ud800", "labeler": None}, "rejected"),
    ({"prompt": [{"role": "user", "content": "\\ud800"}], "response_a": "x", "response_b": "y"}, "prompt[0].content"),
])
def test_pairs_with_a_lone_surrogate_name_file_line_and_field(tmp_path, capsys, row, field):
    pairs = tmp_path / "pairs.jsonl"
    good = json.dumps({"prompt": "q", "response_a": "x", "response_b": "y"})
    pairs.write_text(good + "\n" + json.dumps(row).replace("\\\\u", "\\u") + "\n")  # the JSON escape, unpaired
    with pytest.raises(InputError, match=re.escape(f'pairs.jsonl:2: "{field}": holds a lone UTF-16 surrogate')):
        load_items(pairs)
    assert main(["label", "--pairs", str(pairs), "--out", str(tmp_path / "labels.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f'pairs.jsonl:2: "{field}": holds a lone UTF-16 surrogate' in err


@pytest.fixture
def served(tmp_path):
    store = LabelStore(load_items(write_jsonl(tmp_path / "pairs.jsonl", pair_rows(3))), tmp_path / "labels.jsonl",
                       "alice")
    with serve_in_background(store) as url:
        yield Running(url, tmp_path / "labels.jsonl", store)
    store.close()


NESTED = b"[" * 5000 + b"]" * 5000


@pytest.mark.parametrize("path, body, message", [
    ("/api/answer", b'{"id": "ID", "repeat": 0, "choice": "left", "order": ORDER, "reason": "\\ud800"}',
     "lone UTF-16 surrogate"),
    ("/api/answer", b'{"id": "ID", "repeat": 0, "choice": "left", "order": ORDER, "reason": "ok \\udc00 ok"}',
     "lone UTF-16 surrogate"),
    ("/api/undo", b'{"id": "ID", "repeat": 0, "time": "\\ud800"}', "lone UTF-16 surrogate"),
    ("/api/answer", NESTED, "nested too deeply"),
    ("/api/answer", b'{"id": "ID", "repeat": 0, "choice": "left", "order": ORDER, "reason": ' + NESTED + b"}",
     "nested too deeply"),
    ("/api/undo", b'{"id": "ID", "repeat": 0, "time": ' + NESTED + b"}", "nested too deeply"),
])
def test_surrogates_and_deep_nesting_get_400_and_change_nothing(served, path, body, message):
    item = served.store.items[1]
    body = body.replace(b"ID", item.id.encode()).replace(
        b"ORDER", json.dumps(list(presentation_order(0, "alice", item))).encode())
    headers = {"X-Tether-Token": served.token, "Content-Type": "application/json"}
    status, _, reply = call(served.url, "POST", path, body, headers)
    assert (status, message in json.loads(reply)["error"]) == (400, True), reply
    assert served.out.read_bytes() == b""
    assert api(served.url, served.token, "/api/next")[1]["done"] == 0
    assert served.answer(item, "left", reason="fine \U0001F600")[0] == 200  # a paired surrogate is a character
