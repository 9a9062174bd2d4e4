"""`tether label`: a local web page where a person says which of two responses is better.

One page shows the prompt and the pair's two responses side by side, in a
left/right order drawn per pair and labeler and recorded with the answer. Each
answer is one row appended to the label file (format: `tether.label.stats`),
written and fsynced under a lock before the page is told it was saved; an undo
is a row of its own. On restart the file is replayed (`effective_labels`) and
the page resumes at the first pair this labeler has not answered.

Security (DESIGN §8): the server listens on 127.0.0.1 unless `--host` says
otherwise (and then warns). Every request must name this server in its Host
header (a page on another site that rebinds its DNS name to 127.0.0.1 is
refused) and must not come from another site (Sec-Fetch-Site, Origin). The API
needs the per-server token that only the page holds (`X-Tether-Token`), answers
are POST-only JSON bodies of bounded size, and malformed ones change nothing.
The page is never framed, runs no inline script, and shows every text through
`textContent`: the server never puts pair text into HTML. Only the files named
in `STATIC_FILES` are served.
"""

import contextlib
import hashlib
import ipaddress
import json
import os
import random
import secrets
import socket
import sys
import threading
import time
import webbrowser
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tether.config import opt, require
from tether.data.prefs import Text, parse_pair_row, read_records, settle, text_or_messages_field
from tether.errors import InputError, RunError
from tether.data.labels import CHOICES, ORDERS, effective_labels, read_label_rows
from tether.label.stats import label_stats
from tether.worlds import resolve_gold

REASON_MAX_CHARS = 500
LABELER_MAX_CHARS = 64
TOKEN_HEADER = "x-tether-token"
# name -> media type: the only files the server reads for a request (no path is ever built from a URL).
STATIC_FILES = {
    "label.js": "text/javascript; charset=utf-8",
    "label.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                                 b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]


@dataclass
class LabelConfig:
    """Label pairs in a local web page, or (--stats) report agreement statistics of label files."""

    pairs: str | None = opt(None, "pairs to label: JSON Lines from `tether collect` with no labeler, "
                                  "or rows {prompt, response_a, response_b[, id]}")
    out: str | None = opt(None, "label file: each answer is appended here; with --stats, the file analysed")
    host: str = opt("127.0.0.1", "address to listen on; one that is not loopback exposes the pairs (warns)")
    port: int = opt(0, "port to listen on; 0 picks a free one (the address is printed)")
    labeler: str | None = opt(None, "labeler id stored with each answer; unset: $USER, else 'anonymous'")
    seed: int = opt(0, "seed of the left/right order, drawn per pair and labeler")
    stats: bool = opt(False, "print agreement statistics of --out (and --labels) as JSON and exit")
    labels: list[str] = opt([], "with --stats: more label files (other labelers' --out) pooled with --out")
    gold: str | None = opt(None, "with --stats: also compare with a world's gold labeler ('assistant')")
    reward_model: str | None = opt(None, "with --stats: also compare with this reward-model directory")
    max_body_bytes: int = opt(16384, "largest request body accepted; a larger one gets 413")
    open_browser: bool = opt(False, "open the page in the default web browser")

    def __post_init__(self):
        require(bool(self.out), "out", "required: the label file")
        require(self.stats or bool(self.pairs), "pairs", "required unless --stats")
        require(bool(self.host), "host", "empty")
        require(0 <= self.port <= 65535, "port", f"must be in 0..65535, got {self.port}")
        require(1024 <= self.max_body_bytes <= 1 << 20, "max_body_bytes",
                f"must be in 1024..1048576, got {self.max_body_bytes}")
        resolve_gold(self.gold)  # InputError naming the known golds
        for name in ("labels", "gold", "reward_model"):
            require(self.stats or not getattr(self, name), name, "only used with --stats")
        if self.labeler is None:
            self.labeler = os.environ.get("USER") or "anonymous"
        require(0 < len(self.labeler) <= LABELER_MAX_CHARS and self.labeler.isprintable(), "labeler",
                f"1 to {LABELER_MAX_CHARS} printable characters, got {self.labeler!r}")


# ---------------------------------------------------------------- pairs to show


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
        for name in ("prompt", "response_a", "response_b"):
            if name not in row:
                raise InputError("missing field", path=path, line=line, field=name)
        prompt, y1, y2 = (text_or_messages_field(row[name], path, line, name)
                          for name in ("prompt", "response_a", "response_b"))
        if y1 == y2:
            raise InputError("identical to response_a", path=path, line=line, field="response_b")
        given_id = row.get("id")
    else:  # from `tether collect` with no labeler: "chosen"/"rejected" are only y1/y2
        _, pair = parse_pair_row(row, path, line)
        prompt, y1, y2, given_id = pair.prompt, pair.chosen, pair.rejected, pair.extra.get("id")
    if given_id is None:
        return stable_pair_id(prompt, y1, y2), prompt, y1, y2
    if isinstance(given_id, bool) or not isinstance(given_id, (str, int)) or given_id == "":
        raise InputError(f"expected a non-empty string or an integer, got {given_id!r}",
                         path=path, line=line, field="id")
    return str(given_id), prompt, y1, y2


def load_items(path) -> list[Item]:
    """The showings of a pairs file in file order. A pair's id is its "id" field, else `stable_pair_id`;
    a pair that occurs again gets repeat 1, 2, … (self-agreement); one id naming two different pairs is an error."""
    parsed, problems = read_records(path, lambda row, p, line: (line, *_parse_pair_to_label(row, p, line)))
    first_seen: dict[str, tuple[str, int]] = {}  # id -> (content hash, line)
    repeats: dict[str, int] = {}
    items = []
    for line, pair_id, prompt, y1, y2 in settle(parsed, problems, path, skip_invalid=False):
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


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ---------------------------------------------------------------- the label file


class RequestRefused(Exception):
    """A request the server answers with `status` and an error message; nothing was written."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def repair_torn_tail(path) -> str | None:
    """Make a label file end with a newline after a crash; returns a note for the user, or None if nothing changed.

    A last line without its newline was being written when the process died: answers
    are acknowledged only after their whole line is fsynced, so it was never
    acknowledged. If it is a whole JSON object the newline is added, else it is cut.
    """
    path = Path(path)
    if not path.exists():
        return None
    with open(path, "rb+") as f:
        data = f.read()
        if not data or data.endswith(b"\n"):
            return None
        keep = data.rfind(b"\n") + 1
        try:
            complete = isinstance(json.loads(data[keep:]), dict)
        except ValueError:
            complete = False
        if complete:
            f.write(b"\n")
        else:
            f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    if complete:
        return f"{path}: added the newline missing after the last row"
    return f"{path}: removed {len(data) - keep} bytes of an unfinished last line (an answer never acknowledged)"


def _open_for_append(path: Path) -> int:
    """An O_APPEND descriptor; a new file's directory is fsynced too, so the file itself survives a crash."""
    path.parent.mkdir(parents=True, exist_ok=True)
    created = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    if created:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return fd


class LabelStore:
    """One labeler's answers: state replayed from the label file, every append made under one lock and fsynced.

    Keys are showings (id, repeat). At most one answer per showing is in force; an
    answer to a showing that already has one writes nothing and returns it, so a
    double click or a retry never duplicates. Undo withdraws an answer by its time.
    """

    def __init__(self, items: list[Item], out_path, labeler: str, seed: int = 0):
        self.items, self.labeler, self.seed = items, labeler, seed
        self.out_path = Path(out_path)
        self._items_by_key = {(item.id, item.repeat): item for item in items}
        mine = [row for row in (read_label_rows(self.out_path) if self.out_path.exists() else [])
                if row["labeler"] == labeler]
        self._in_force = {(row["id"], row["repeat"]): row for row in effective_labels(mine)}  # append order
        self._undone = {(row["id"], row["repeat"], row["undoes_time"]) for row in mine if row["event"] == "undo"}
        self._lock = threading.Lock()
        self._fd = _open_for_append(self.out_path)

    def close(self) -> None:
        os.close(self._fd)

    def _item(self, pair_id: str, repeat: int) -> Item:
        item = self._items_by_key.get((pair_id, repeat))
        if item is None:
            raise RequestRefused(400, f"unknown pair {pair_id!r} (showing {repeat})")
        return item

    def _append(self, row: dict) -> None:
        """Write one JSON line and fsync it; on failure cut the file back, so nothing half-written stays."""
        data = memoryview((json.dumps(row, ensure_ascii=False) + "\n").encode())
        size = os.fstat(self._fd).st_size
        try:
            while data:
                data = data[os.write(self._fd, data):]
            os.fsync(self._fd)
        except OSError as e:
            os.ftruncate(self._fd, size)
            raise RequestRefused(500, f"not saved: {e.strerror}") from None

    def done(self) -> int:
        return sum(key in self._in_force for key in self._items_by_key)

    def state(self) -> dict:
        """What the page needs: the first showing not answered, progress, and the answer an undo would withdraw."""
        with self._lock:
            pending = next((item for item in self.items if (item.id, item.repeat) not in self._in_force), None)
            last = next((row for row in reversed(self._in_force.values())
                         if (row["id"], row["repeat"]) in self._items_by_key), None)
            done = self.done()
        return {"item": None if pending is None else self._shown(pending),
                "last": None if last is None else {"id": last["id"], "repeat": last["repeat"], "time": last["time"]},
                "done": done, "total": len(self.items), "labeler": self.labeler, "out": self.out_path.name}

    def _shown(self, item: Item) -> dict:
        order = presentation_order(self.seed, self.labeler, item)
        left, right = (getattr(item, side) for side in order)
        return {"id": item.id, "repeat": item.repeat, "order": list(order), "prompt": display_text(item.prompt),
                "left": display_text(left), "right": display_text(right)}

    def answer(self, pair_id: str, repeat: int, choice: str, order: list[str], reason: str | None) -> tuple[dict, bool]:
        """(row, duplicate): append a label row, or return the answer already in force for this showing."""
        item = self._item(pair_id, repeat)
        with self._lock:
            if (pair_id, repeat) in self._in_force:
                return self._in_force[pair_id, repeat], True
            shown = presentation_order(self.seed, self.labeler, item)
            if list(order) != list(shown):
                raise RequestRefused(409, "the page shows another left/right order than the server "
                                          "(restarted with another seed?): reload the page")
            left, right = (getattr(item, side) for side in shown)
            chosen, rejected = (right, left) if choice == "right" else (left, right)
            row = {"prompt": item.prompt, "chosen": chosen, "rejected": rejected, "id": item.id,
                   "repeat": item.repeat, "labeler": self.labeler, "time": utc_now(), "choice": choice,
                   "order": list(shown), "reason": reason, "event": "label"}
            self._append(row)
            self._in_force[pair_id, repeat] = row
        return row, False

    def undo(self, pair_id: str, repeat: int, label_time: str) -> dict | None:
        """Append an undo row withdrawing the answer in force whose time is `label_time`; None if already undone."""
        self._item(pair_id, repeat)
        with self._lock:
            current = self._in_force.get((pair_id, repeat))
            if current is None or current["time"] != label_time:
                if (pair_id, repeat, label_time) in self._undone:
                    return None
                raise RequestRefused(409, "no answer with that time is in force for this pair")
            row = {"event": "undo", "id": pair_id, "repeat": repeat, "labeler": self.labeler,
                   "time": utc_now(), "undoes_time": label_time}
            self._append(row)
            del self._in_force[pair_id, repeat]
            self._undone.add((pair_id, repeat, label_time))
        return row


# ---------------------------------------------------------------- HTTP


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def allowed_hosts(host: str, port: int) -> set[str]:
    """Host header values naming this server: the loopback names and the --host value, with the port."""
    names = {"127.0.0.1", "localhost", "[::1]", _bracketed(host.lower())}
    with_port = {f"{name}:{port}" for name in names}
    return with_port | names if port == 80 else with_port


def request_refusal(host: str | None, origin: str | None, fetch_site: str | None, allowed: set[str]) -> str | None:
    """Why a request must be refused (another site, or a host name that is not this server's), or None."""
    if host is None or host.lower() not in allowed:
        return f"Host {host!r} is not this server's name"
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return f"request from another site (Sec-Fetch-Site: {fetch_site})"
    if origin is not None and origin.lower() != f"http://{host.lower()}":
        return f"request from another origin ({origin})"
    return None


class SecurityGuard:
    """ASGI middleware: refuses other sites and other host names with 403, adds SECURITY_HEADERS to every response."""

    def __init__(self, app, allowed: set[str]):
        self.app, self.allowed = app, allowed

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        headers = Headers(scope=scope)
        refusal = request_refusal(headers.get("host"), headers.get("origin"), headers.get("sec-fetch-site"),
                                  self.allowed)
        if refusal is not None:
            return await JSONResponse({"error": refusal}, 403)(scope, receive, send_with_headers)
        await self.app(scope, receive, send_with_headers)


def _check_token(request: Request, token: str) -> None:
    given = request.headers.get(TOKEN_HEADER, "")
    if not secrets.compare_digest(given.encode("latin-1"), token.encode()):
        raise RequestRefused(403, "missing or wrong X-Tether-Token (if the server restarted, reload the page)")


async def read_json(request: Request, max_bytes: int):
    """The JSON body of a request: 415 unless application/json, 413 over `max_bytes`, 400 unless valid JSON."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise RequestRefused(415, "expected Content-Type: application/json")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise RequestRefused(413, f"body over {max_bytes} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise RequestRefused(413, f"body over {max_bytes} bytes")
    try:
        return json.loads(body)
    except ValueError:
        raise RequestRefused(400, "body is not valid JSON") from None


def _fields(body, required: tuple, optional: tuple = ()) -> dict:
    """`body` as a JSON object with the `required` keys (a string `id`, an integer `repeat`)
    and perhaps `optional` ones, or 400."""
    if not isinstance(body, dict):
        raise RequestRefused(400, "expected a JSON object")
    missing = [key for key in required if key not in body]
    if missing:
        raise RequestRefused(400, f"missing fields: {', '.join(missing)}")
    unknown = sorted(body.keys() - {*required, *optional})
    if unknown:
        raise RequestRefused(400, f"unknown fields: {', '.join(unknown)}")
    if not isinstance(body["id"], str):
        raise RequestRefused(400, "id: expected a string")
    if isinstance(body["repeat"], bool) or not isinstance(body["repeat"], int):
        raise RequestRefused(400, "repeat: expected an integer")
    return body


def parse_answer(body) -> dict:
    """The arguments of `LabelStore.answer` from a request body {id, repeat, choice, order[, reason]}, or 400."""
    body = _fields(body, ("id", "repeat", "choice", "order"), ("reason",))
    if body["choice"] not in CHOICES:
        raise RequestRefused(400, f"choice: expected one of {', '.join(CHOICES)}")
    if body["order"] not in ORDERS:
        raise RequestRefused(400, 'order: expected ["a", "b"] or ["b", "a"]')
    reason = body.get("reason")
    if not isinstance(reason, (str, type(None))) or len(reason or "") > REASON_MAX_CHARS:
        raise RequestRefused(400, f"reason: expected null or a string of at most {REASON_MAX_CHARS} characters")
    return {"pair_id": body["id"], "repeat": body["repeat"], "choice": body["choice"], "order": body["order"],
            "reason": (reason or "").strip() or None}


def parse_undo(body) -> dict:
    """The arguments of `LabelStore.undo` from a request body {id, repeat, time}, or 400."""
    body = _fields(body, ("id", "repeat", "time"))
    if not isinstance(body["time"], str):
        raise RequestRefused(400, "time: expected a string")
    return {"pair_id": body["id"], "repeat": body["repeat"], "label_time": body["time"]}


def _asset(name: str) -> bytes:
    return resources.files("tether.label").joinpath("static", name).read_bytes()


def build_app(store: LabelStore, allowed: set[str], max_body_bytes: int):
    """The ASGI app: the page, its whitelisted assets and the JSON API, behind `SecurityGuard`."""
    token = secrets.token_urlsafe(32)  # URL-safe base64: nothing in it needs escaping in HTML
    page = _asset("index.html").replace(b"{{token}}", token.encode())
    assets = {name: (_asset(name), media_type) for name, media_type in STATIC_FILES.items()}

    async def index(request):
        return Response(page, media_type="text/html; charset=utf-8")

    async def static(request):
        asset = assets.get(request.path_params["name"])
        if asset is None:
            return JSONResponse({"error": "not found"}, 404)
        content, media_type = asset
        return Response(content, media_type=media_type)

    async def next_pair(request):
        _check_token(request, token)
        return JSONResponse(await run_in_threadpool(store.state))

    async def answer(request):
        _check_token(request, token)
        args = parse_answer(await read_json(request, max_body_bytes))
        row, duplicate = await run_in_threadpool(store.answer, **args)
        saved = {"id": row["id"], "repeat": row["repeat"], "choice": row["choice"], "time": row["time"]}
        return JSONResponse({"saved": saved, "duplicate": duplicate, **await run_in_threadpool(store.state)})

    async def undo(request):
        _check_token(request, token)
        row = await run_in_threadpool(store.undo, **parse_undo(await read_json(request, max_body_bytes)))
        return JSONResponse({"undone": row is not None, **await run_in_threadpool(store.state)})

    async def refused(request, exc: RequestRefused):
        return JSONResponse({"error": exc.message}, exc.status)

    app = Starlette(routes=[
        Route("/", index, methods=["GET"]),
        Route("/static/{name}", static, methods=["GET"]),
        Route("/api/next", next_pair, methods=["GET"]),
        Route("/api/answer", answer, methods=["POST"]),
        Route("/api/undo", undo, methods=["POST"]),
    ], exception_handlers={RequestRefused: refused})
    return SecurityGuard(app, allowed)


def open_listener(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); port 0 picks a free one."""
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as e:
        raise InputError(f"cannot listen on {host} port {port}: {e.strerror or e}", field="host") from None
    sock.listen(128)
    return sock


def page_url(host: str, port: int) -> str:
    shown = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://{_bracketed(shown)}:{port}/"


def make_server(store: LabelStore, host: str, port: int,
                max_body_bytes: int) -> tuple[uvicorn.Server, socket.socket, str]:
    """(uvicorn server, its listening socket, the page's URL); start it with `server.run(sockets=[sock])`."""
    sock = open_listener(host, port)
    port = sock.getsockname()[1]
    app = build_app(store, allowed_hosts(host, port), max_body_bytes)
    config = uvicorn.Config(app, http="h11", ws="none", lifespan="off", proxy_headers=False, server_header=False,
                            access_log=False, log_level="warning", timeout_graceful_shutdown=2)
    return uvicorn.Server(config), sock, page_url(host, port)


@contextlib.contextmanager
def serve_in_background(store: LabelStore, host: str = "127.0.0.1", port: int = 0, max_body_bytes: int = 16384):
    """Serve in a daemon thread for the duration of a `with` block, which gets the page URL (notebooks, tests)."""
    server, sock, url = make_server(store, host, port, max_body_bytes)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RunError("the label server stopped while starting")
            time.sleep(0.01)
        yield url
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def exposure_warning(host: str) -> str | None:
    """The warning printed when --host is not a loopback address, else None."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        return None
    return (f"warning: listening on {host}, not a loopback address: anyone who can reach this machine can read "
            f"the pairs and label them (requests must still name {host} or a loopback name as Host)")


# ---------------------------------------------------------------- entry point


def _rm_score(model_dir: str):
    if not Path(model_dir).is_dir():
        raise InputError("no such directory", path=model_dir, field="reward_model")
    from tether.models.reward import score_texts
    return lambda prompts, responses: score_texts(model_dir, prompts, responses)


def run_stats(cfg: LabelConfig) -> dict:
    """`tether label --stats`: agreement statistics of the label files, printed as JSON."""
    rows = [row for path in (cfg.out, *cfg.labels) for row in read_label_rows(path)]
    stats = label_stats(rows, gold_prob=resolve_gold(cfg.gold).preference_prob if cfg.gold else None,
                        rm_score=_rm_score(cfg.reward_model) if cfg.reward_model else None)
    if cfg.pairs:
        stats["pairs"] = len(load_items(cfg.pairs))
    print(json.dumps(stats, indent=2, ensure_ascii=False))
    return stats


def run_label(cfg: LabelConfig) -> dict | None:
    """Serve the labeling page until Ctrl-C; with `cfg.stats`, print and return the statistics instead."""
    if cfg.stats:
        return run_stats(cfg)
    items = load_items(cfg.pairs)
    note = repair_torn_tail(cfg.out)
    if note:
        print(f"tether label: {note}", file=sys.stderr)
    store = LabelStore(items, cfg.out, cfg.labeler, cfg.seed)
    try:
        server, sock, url = make_server(store, cfg.host, cfg.port, cfg.max_body_bytes)
        warning = exposure_warning(cfg.host)
        if warning:
            print(f"tether label: {warning}", file=sys.stderr)
        print(f"tether label: {url}  ({store.done()} of {len(items)} pairs answered by {cfg.labeler}; "
              f"answers go to {cfg.out}; Ctrl-C stops)", flush=True)
        if cfg.open_browser:
            webbrowser.open(url)
        with sock:
            server.run(sockets=[sock])
    finally:
        store.close()
    print(f"tether label: stopped; {store.done()} of {len(items)} pairs answered, in {cfg.out}")
    return None
