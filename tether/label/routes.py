"""The labeling page's routes: the page, its whitelisted assets and the JSON API, behind `SecurityGuard`.

The page is never framed, runs no inline script and shows every text through
`textContent`: the server never puts pair text into HTML. Only the files named in
`STATIC_FILES` are served (no path is ever built from a URL). Answers are
POST-only JSON bodies checked field by field; a malformed one changes nothing.
"""

import secrets
from importlib import resources

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tether.data.labels import CHOICES, ORDERS
from tether.label.guard import SecurityGuard, check_token, read_json
from tether.label.store import LabelStore, RequestRefused

REASON_MAX_CHARS = 500
# name -> media type: the only files the server reads for a request.
STATIC_FILES = {
    "label.js": "text/javascript; charset=utf-8",
    "label.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}


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
        check_token(request, token)
        return JSONResponse(await run_in_threadpool(store.state))

    async def answer(request):
        check_token(request, token)
        args = parse_answer(await read_json(request, max_body_bytes))
        row, duplicate = await run_in_threadpool(store.answer, **args)
        saved = {"id": row["id"], "repeat": row["repeat"], "choice": row["choice"], "time": row["time"]}
        return JSONResponse({"saved": saved, "duplicate": duplicate, **await run_in_threadpool(store.state)})

    async def undo(request):
        check_token(request, token)
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
