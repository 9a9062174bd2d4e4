"""`tether label`: pairs in, security of the HTTP surface, no lost or duplicated answers.

The servers are real uvicorn servers on 127.0.0.1 (a thread, or a `python -m tether`
subprocess for the kill test); requests go through http.client so that paths and
headers reach the server exactly as written.
"""

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.parse
from pathlib import Path

import pytest

import tether
from tether.cli import main
from tether.errors import InputError
from tether.label.guard import allowed_hosts, request_refusal
from tether.label.pairs import display_text, load_items, presentation_order, stable_pair_id
from tether.label.server import LabelConfig, exposure_warning, serve_in_background
from tether.label.store import LabelStore, repair_torn_tail
from tether.data.labels import effective_labels, read_label_rows

XSS = ['<script>window.__pwned = 1</script>', '"><img src=x onerror="window.__pwned = 2">']


def pair_rows(n):
    rows = [{"prompt": f"What is {i} plus {i}?", "response_a": f"{2 * i}.", "response_b": f"Great question! {2 * i}!"}
            for i in range(n)]
    rows[0] = {"prompt": "Say " + XSS[0], "response_a": XSS[0] + "\n  kept  spaces", "response_b": XSS[1]}
    return rows


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def call(url, method, path, body=None, headers=None):
    """(status, lower-cased headers, body bytes) of one request sent exactly as given."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def page_token(url):
    status, _, page = call(url, "GET", "/")
    assert status == 200
    return re.search(rb'<meta name="tether-token" content="([A-Za-z0-9_-]+)">', page).group(1).decode()


def api(url, token, path, payload=None, headers=None):
    """(status, JSON) of an API call with the page's token; POST when there is a payload."""
    body = None if payload is None else json.dumps(payload).encode()
    all_headers = {"X-Tether-Token": token, "Content-Type": "application/json", **(headers or {})}
    status, _, data = call(url, "GET" if payload is None else "POST", path, body, all_headers)
    return status, json.loads(data)


class Running:
    """A running server seen from a client: its URL, the page's token, the label file."""

    def __init__(self, url, out, store=None, labeler="alice", seed=0):
        self.url, self.out, self.store, self.labeler, self.seed = url, out, store, labeler, seed
        self.token = page_token(url)

    def answer(self, item, choice="left", reason=None, order=None):
        order = order or list(presentation_order(self.seed, self.labeler, item))
        return api(self.url, self.token, "/api/answer",
                   {"id": item.id, "repeat": item.repeat, "choice": choice, "order": order, "reason": reason})


def _serve(folder):
    pairs = write_jsonl(folder / "pairs.jsonl", pair_rows(6))
    store = LabelStore(load_items(pairs), folder / "labels.jsonl", "alice", seed=0)
    with serve_in_background(store) as url:
        yield Running(url, folder / "labels.jsonl", store)
    store.close()


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    """One server for the tests of refused requests: none of them may write, so its label file stays empty."""
    yield from _serve(tmp_path_factory.mktemp("refused"))


@pytest.fixture
def fresh(tmp_path):
    yield from _serve(tmp_path)


# ---------------------------------------------------------------- pairs in


def test_load_items_ids_and_repeats(tmp_path):
    rows = [{"prompt": "p", "response_a": "x", "response_b": "y"},
            {"prompt": "q", "response_a": "x", "response_b": "y", "id": 7},
            {"prompt": "p", "response_a": "y", "response_b": "x"}]  # the first pair again, responses swapped
    items = load_items(write_jsonl(tmp_path / "pairs.jsonl", rows))
    assert stable_pair_id("p", "x", "y") == stable_pair_id("p", "y", "x") != stable_pair_id("q", "x", "y")
    assert [(i.id, i.repeat) for i in items] == [(stable_pair_id("p", "x", "y"), 0), ("7", 0),
                                                 (stable_pair_id("p", "x", "y"), 1)]
    assert (items[2].a, items[2].b) == ("y", "x")


def test_load_items_reads_unlabelled_pairs_of_tether_collect(tmp_path):
    rows = [{"prompt": "What is 2 plus 2?", "chosen": "4.", "rejected": "5.", "labeler": None, "id": "c-1"},
            {"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "Hello"}],
             "rejected": [{"role": "assistant", "content": "Go away"}], "labeler": None}]
    first, second = load_items(write_jsonl(tmp_path / "pairs.jsonl", rows))
    assert (first.id, first.prompt, first.a, first.b) == ("c-1", "What is 2 plus 2?", "4.", "5.")
    assert second.prompt == [{"role": "user", "content": "Hi"}] and second.b[0]["content"] == "Go away"
    assert display_text(second.prompt + second.a) == "user: Hi\n\nassistant: Hello"


@pytest.mark.parametrize("row, message", [
    ({"prompt": "p", "response_a": "x"}, r'pairs.jsonl:2: "response_b": missing field'),
    ({"prompt": "p", "response_a": "x", "response_b": "x"}, r'pairs.jsonl:2: "response_b": identical to response_a'),
    ({"prompt": "", "response_a": "x", "response_b": "y"}, r'pairs.jsonl:2: "prompt": empty string'),
    ({"prompt": "p", "response_a": "x", "response_b": "y", "id": True}, r'pairs.jsonl:2: "id": expected a non-empty'),
    ({"prompt": "other", "response_a": "x", "response_b": "y", "id": "a"},
     r"pairs.jsonl:2: \"id\": id 'a' already names a different pair on line 1"),
    ({"prompt": "p", "chosen": "x"}, r'pairs.jsonl:2: "rejected": missing field'),
])
def test_load_items_names_line_and_field(tmp_path, row, message):
    first = {"prompt": "p", "response_a": "x", "response_b": "y", "id": "a"}
    path = write_jsonl(tmp_path / "pairs.jsonl", [first, row])
    with pytest.raises(InputError, match=message):
        load_items(path)


# ---------------------------------------------------------------- the page and its API


def test_page_holds_no_pair_text_and_api_sends_it_as_json(running):
    status, headers, page = call(running.url, "GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b"__pwned" not in page and b"What is" not in page and b"<script>" not in page  # only <script src=…>
    status, state = api(running.url, running.token, "/api/next")
    assert status == 200 and state["done"] == 0 and state["total"] == 6 and state["last"] is None
    assert state["item"]["prompt"] == "Say " + XSS[0]  # JSON data, rendered by textContent in label.js
    assert sorted([state["item"]["left"], state["item"]["right"]]) == sorted([XSS[0] + "\n  kept  spaces", XSS[1]])
    script = call(running.url, "GET", "/static/label.js")[2].decode()
    assert "textContent" in script
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(", script)


def test_security_headers_on_every_response(running):
    for path in ("/", "/static/label.js", "/nowhere"):
        _, headers, _ = call(running.url, "GET", path)
        assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert "unsafe-inline" not in headers["content-security-policy"]


@pytest.mark.parametrize("path", [
    "/static/../../pyproject.toml", "/static/..%2F..%2Fpyproject.toml", "/static/%2e%2e/%2e%2e/pyproject.toml",
    "/static/..%2f..%2f..%2fpyproject.toml", "/static/label.js/../../../pyproject.toml", "/../pyproject.toml",
    "/static/%2e%2e", "/static/..", "/static/index.html", "/static/__init__.py", "/static//etc/passwd",
    "/pyproject.toml", "/static/label.js%00.css",
])
def test_no_file_outside_the_page_assets(running, path):
    status, _, body = call(running.url, "GET", path)
    assert status == 404 and b"[project]" not in body and b"tether-token" not in body


@pytest.mark.parametrize("headers", [
    {"Origin": "http://evil.example"},
    {"Origin": "null"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},
    {"Host": "evil.example"},
    {"Host": "evil.example:{port}"},  # DNS rebinding: the attacker's name resolves to 127.0.0.1
])
def test_other_sites_and_host_names_are_refused(running, headers):
    port = urllib.parse.urlsplit(running.url).port
    headers = {k: v.format(port=port) for k, v in headers.items()}
    item = running.store.items[1]
    payload = {"id": item.id, "repeat": 0, "choice": "left",
               "order": list(presentation_order(0, "alice", item))}
    assert api(running.url, running.token, "/api/answer", payload, headers)[0] == 403
    assert api(running.url, running.token, "/api/next", None, headers)[0] == 403
    assert call(running.url, "GET", "/", headers=headers)[0] == 403
    assert running.out.read_bytes() == b""


def test_loopback_names_and_same_origin_are_accepted(running):
    port = urllib.parse.urlsplit(running.url).port
    for headers in ({"Host": f"localhost:{port}"}, {"Sec-Fetch-Site": "none"},
                    {"Sec-Fetch-Site": "same-origin", "Origin": f"http://127.0.0.1:{port}"}):
        assert api(running.url, running.token, "/api/next", None, headers)[0] == 200


@pytest.mark.parametrize("token", [None, "", "wrong"])
def test_api_needs_the_page_token(running, token):
    headers = {"Content-Type": "application/json"} | ({} if token is None else {"X-Tether-Token": token})
    item = running.store.items[1]
    body = json.dumps({"id": item.id, "repeat": 0, "choice": "left", "order": ["a", "b"]}).encode()
    assert call(running.url, "POST", "/api/answer", body, headers)[0] == 403
    assert call(running.url, "POST", "/api/undo", body, headers)[0] == 403
    assert call(running.url, "GET", "/api/next", None, headers)[0] == 403
    assert running.out.read_bytes() == b""


def test_answers_only_as_post(running):
    assert call(running.url, "GET", "/api/answer", headers={"X-Tether-Token": running.token})[0] == 405


@pytest.mark.parametrize("body, content_type, status", [
    (b'{"id": "' + b"x" * 20000 + b'"}', "application/json", 413),
    (b"{not json", "application/json", 400),
    (b"\xff\xfe", "application/json", 400),
    (b"[1, 2]", "application/json", 400),
    (b'{"id": "ID", "repeat": 0, "choice": "probably_left", "order": ORDER}', "application/json", 400),
    (b'{"id": "nope", "repeat": 0, "choice": "left", "order": ORDER}', "application/json", 400),
    (b'{"id": "ID", "repeat": 5, "choice": "left", "order": ORDER}', "application/json", 400),
    (b'{"id": "ID", "repeat": "0", "choice": "left", "order": ORDER}', "application/json", 400),
    (b'{"id": "ID", "repeat": 0, "choice": "left", "order": ORDER, "admin": true}', "application/json", 400),
    (b'{"id": "ID", "repeat": 0, "choice": "left", "order": ORDER, "reason": "' + b"r" * 501 + b'"}',
     "application/json", 400),
    (b'{"id": "ID", "repeat": 0, "choice": "left", "order": ["a", "a"]}', "application/json", 400),
    (b'{"id": "ID", "repeat": 0, "choice": "left", "order": FLIPPED}', "application/json", 409),
    (b'{"id": "ID", "repeat": 0, "choice": "left", "order": ORDER}', "text/plain", 415),
])
def test_oversized_or_malformed_answers_change_nothing(running, body, content_type, status):
    item = running.store.items[1]
    order = list(presentation_order(0, "alice", item))
    body = (body.replace(b"ID", item.id.encode()).replace(b"FLIPPED", json.dumps(order[::-1]).encode())
            .replace(b"ORDER", json.dumps(order).encode()))
    headers = {"X-Tether-Token": running.token, "Content-Type": content_type}
    assert call(running.url, "POST", "/api/answer", body, headers)[0] == status
    assert running.out.read_bytes() == b""
    assert api(running.url, running.token, "/api/next")[1]["done"] == 0


def test_oversized_chunked_body_without_content_length(running):
    parts = urllib.parse.urlsplit(running.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request("POST", "/api/answer", body=iter([b'{"id": "', b"x" * 10000, b"y" * 10000, b'"}']),
                     headers={"X-Tether-Token": running.token, "Content-Type": "application/json"},
                     encode_chunked=True)
        assert conn.getresponse().status == 413
    finally:
        conn.close()
    assert running.out.read_bytes() == b""


def test_answer_retry_is_idempotent_and_undo_is_a_record(fresh):
    first, second = fresh.store.items[:2]
    status, reply = fresh.answer(first, "right", reason="  the left one is wrong ")
    assert status == 200 and not reply["duplicate"] and reply["done"] == 1 and reply["item"]["id"] == second.id
    assert fresh.answer(first, "left")[1]["duplicate"]  # a retry (even a different key) writes nothing
    rows = read_label_rows(fresh.out)
    assert len(rows) == 1
    row = rows[0]
    shown = {"a": first.a, "b": first.b}
    assert row["event"] == "label" and row["choice"] == "right" and row["reason"] == "the left one is wrong"
    assert (row["chosen"], row["rejected"]) == (shown[row["order"][1]], shown[row["order"][0]])
    assert row["labeler"] == "alice" and row["time"].endswith("Z") and row["prompt"] == first.prompt

    last = reply["last"]
    assert last == {"id": first.id, "repeat": 0, "time": row["time"]}
    status, reply = api(fresh.url, fresh.token, "/api/undo", last)
    assert status == 200 and reply["undone"] and reply["done"] == 0 and reply["item"]["id"] == first.id
    assert api(fresh.url, fresh.token, "/api/undo", last)[1]["undone"] is False  # a retried undo
    assert api(fresh.url, fresh.token, "/api/undo", {**last, "time": "never"})[0] == 409
    rows = read_label_rows(fresh.out)
    assert len(rows) == 2 and rows[1]["event"] == "undo" and rows[1]["undoes_time"] == row["time"]
    assert effective_labels(rows) == []

    assert fresh.answer(first, "tie")[0] == 200
    assert [r["choice"] for r in effective_labels(read_label_rows(fresh.out))] == ["tie"]


def test_concurrent_clients_write_each_answer_exactly_once(tmp_path):
    """8 threads × 10 answers, and each answer is also sent by a second thread at the same time."""
    pairs = write_jsonl(tmp_path / "pairs.jsonl",
                        [{"prompt": f"p{i}", "response_a": f"x{i}", "response_b": f"y{i}"} for i in range(80)])
    store = LabelStore(load_items(pairs), tmp_path / "labels.jsonl", "alice", seed=3)
    errors = []
    with serve_in_background(store) as url:
        client = Running(url, tmp_path / "labels.jsonl", store, seed=3)

        def worker(t):
            for k in range(10):
                for owner in (t, (t + 1) % 8):  # its own item, then its neighbour's
                    status, reply = client.answer(store.items[owner * 10 + k], "left")
                    if status != 200:
                        errors.append(reply)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert api(url, client.token, "/api/next")[1]["done"] == 80
    store.close()
    assert errors == []
    rows = read_label_rows(tmp_path / "labels.jsonl")
    assert sorted(row["id"] for row in rows) == sorted(item.id for item in store.items)


def test_restart_resumes_after_what_is_labelled(tmp_path):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(4))
    out = tmp_path / "labels.jsonl"
    items = load_items(pairs)
    store = LabelStore(items, out, "alice")
    store.answer(items[0].id, 0, "skip", presentation_order(0, "alice", items[0]), None)
    row, _ = store.answer(items[1].id, 0, "left", presentation_order(0, "alice", items[1]), None)
    store.close()
    bob = LabelStore(items, out, "bob")  # another labeler's progress is their own
    assert bob.state()["done"] == 0
    bob.close()
    again = LabelStore(items, out, "alice")
    state = again.state()
    assert state["done"] == 2 and state["item"]["id"] == items[2].id and state["last"]["time"] == row["time"]
    again.close()


def _start_cli(pairs, out):
    env = {**os.environ, "PYTHONPATH": str(Path(tether.__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "tether", "label", "--pairs", str(pairs), "--out", str(out),
                             "--labeler", "alice"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:\d+/", line)
    assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc, match.group(0)


def test_sigkill_between_answers_loses_no_acknowledged_answer(tmp_path):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(40))
    out = tmp_path / "labels.jsonl"
    items = load_items(pairs)
    proc, url = _start_cli(pairs, out)
    client = Running(url, out)
    acknowledged, stop = [], threading.Event()

    assert client.answer(items[0], "left")[0] == 200
    status, reply = client.answer(items[1], "right")
    assert api(url, client.token, "/api/undo", reply["last"])[0] == 200  # items[1] is open again

    def stream():
        for item in items[1:]:
            try:
                status, reply = client.answer(item, "tie")
            except (OSError, http.client.HTTPException):  # the server is gone
                return
            if status == 200:
                acknowledged.append(item.id)
            if len(acknowledged) == 5:
                stop.set()

    thread = threading.Thread(target=stream)
    thread.start()
    assert stop.wait(20)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    thread.join()
    proc.stdout.close()
    proc.stderr.close()

    proc, url = _start_cli(pairs, out)
    try:
        labels = effective_labels(read_label_rows(out))
        answered = [row["id"] for row in labels]
        assert set(acknowledged) | {items[0].id} <= set(answered)
        assert len(answered) == len(set(answered))  # no duplicates
        assert answered == [item.id for item in items[:len(answered)]]  # in order, no gap
        status, state = api(url, page_token(url), "/api/next")
        assert state["done"] == len(answered) and state["item"]["id"] == items[len(answered)].id
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


# ---------------------------------------------------------------- pieces and the command line


def test_request_refusal_rules():
    allowed = allowed_hosts("127.0.0.1", 8123)
    assert allowed == {"127.0.0.1:8123", "localhost:8123", "[::1]:8123"}
    assert request_refusal("127.0.0.1:8123", None, None, allowed) is None
    assert request_refusal("LOCALHOST:8123", "http://localhost:8123", "same-origin", allowed) is None
    assert "not this server" in request_refusal("127.0.0.1:9999", None, None, allowed)
    assert "not this server" in request_refusal(None, None, None, allowed)
    assert "another origin" in request_refusal("127.0.0.1:8123", "http://localhost:8123", None, allowed)
    assert "another site" in request_refusal("127.0.0.1:8123", None, "cross-site", allowed)
    assert "[::1]:80" in allowed_hosts("::1", 80) and "localhost" in allowed_hosts("127.0.0.1", 80)
    assert "192.168.1.5:8123" in allowed_hosts("192.168.1.5", 8123)


def test_exposure_warning_only_off_loopback():
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert exposure_warning(host) is None
    for host in ("0.0.0.0", "::", "192.168.1.5", "myhost.lan"):
        assert "not a loopback address" in exposure_warning(host)


def test_repair_torn_tail(tmp_path):
    path = tmp_path / "labels.jsonl"
    path.write_bytes(b'{"a": 1}\n{"b": 2')
    assert "removed 7 bytes" in repair_torn_tail(path) and path.read_bytes() == b'{"a": 1}\n'
    assert repair_torn_tail(path) is None
    path.write_bytes(b'{"a": 1}\n{"b": 2}')
    assert "added the newline" in repair_torn_tail(path) and path.read_bytes() == b'{"a": 1}\n{"b": 2}\n'


def test_config_validation():
    with pytest.raises(InputError, match='"pairs": required unless --stats'):
        LabelConfig(out="labels.jsonl")
    with pytest.raises(InputError, match='"gold": only used with --stats'):
        LabelConfig(pairs="p.jsonl", out="labels.jsonl", gold="assistant")
    with pytest.raises(InputError, match='"labeler": 1 to 64 printable characters'):
        LabelConfig(pairs="p.jsonl", out="labels.jsonl", labeler="a\nb")
    assert LabelConfig(pairs="p.jsonl", out="labels.jsonl").labeler == (os.environ.get("USER") or "anonymous")


def test_cli_stats_prints_json(tmp_path, capsys):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(3))
    items = load_items(pairs)
    for labeler, choice in (("alice", "left"), ("bob", "left")):
        store = LabelStore(items, tmp_path / f"{labeler}.jsonl", labeler)
        for item in items:
            store.answer(item.id, 0, choice, presentation_order(0, labeler, item), None)
        store.close()
    code = main(["label", "--stats", "true", "--out", str(tmp_path / "alice.jsonl"),
                 "--labels", str(tmp_path / "bob.jsonl"), "--pairs", str(pairs)])
    assert code == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["labels"] == 6 and stats["pairs"] == 3
    assert stats["position_bias_left_wins"]["rate"] == 1.0
    assert stats["inter_labeler"][0]["labelers"] == ["alice", "bob"] and stats["inter_labeler"][0]["n"] == 3


def test_cli_stats_passes_the_reward_model_to_score_texts(tmp_path, monkeypatch, capsys):
    import tether.models.reward
    out = tmp_path / "labels.jsonl"
    store = LabelStore(load_items(write_jsonl(tmp_path / "pairs.jsonl", pair_rows(2))), out, "alice")
    for item in store.items:
        store.answer(item.id, 0, "left", presentation_order(0, "alice", item), None)
    store.close()
    seen = []
    monkeypatch.setattr(tether.models.reward, "score_texts",
                        lambda model_dir, prompts, responses: seen.append(model_dir) or [0.0] * len(responses))
    assert main(["label", "--stats", "true", "--out", str(out), "--reward-model", str(tmp_path)]) == 0
    assert seen == [str(tmp_path)]
    assert json.loads(capsys.readouterr().out)["reward_model_agreement"] == {
        "n": 2, "rate": 0.5, "by_labeler": {"alice": {"n": 2, "rate": 0.5}}}  # equal scores count half


def test_cli_stats_with_the_assistant_gold_labeler(tmp_path, capsys):
    pytest.importorskip("tether.worlds.assistant")
    out = write_jsonl(tmp_path / "labels.jsonl", [
        {"event": "label", "prompt": "What is 2 plus 3?", "chosen": "5.", "rejected": "idk lol just google it",
         "id": "g1", "repeat": 0, "labeler": "alice", "time": "t1", "choice": "left", "order": ["a", "b"],
         "reason": None}])
    assert main(["label", "--stats", "true", "--out", str(out), "--gold", "assistant"]) == 0
    gold = json.loads(capsys.readouterr().out)["gold_agreement"]
    assert gold["n"] == 1 and gold["rate"] == 1.0 and gold["mean_gold_prob"] > 0.5


def test_cli_bad_input_exits_2(tmp_path, capsys):
    assert main(["label", "--pairs", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o.jsonl")]) == 2
    assert "missing.jsonl: no such file" in capsys.readouterr().err
