"""What every request to the labeling page must pass: this server's name, this site, the page's token, a sound body.

A page on another site can make a browser send requests to 127.0.0.1, and a name
it controls can be rebound to 127.0.0.1 (DNS rebinding). So every request must
name this server in its Host header and must not come from another site
(Sec-Fetch-Site, Origin); the API also needs the per-server token that only the
page holds (`X-Tether-Token`); bodies are JSON of bounded size and depth, made
of Unicode text. `SecurityGuard` adds `SECURITY_HEADERS` to every response.
"""

import json
import secrets

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse

from tether.label.store import RequestRefused

TOKEN_HEADER = "x-tether-token"
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


def bracketed(host: str) -> str:
    """`host` as it stands in a URL: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


def allowed_hosts(host: str, port: int) -> set[str]:
    """Host header values naming this server: the loopback names and the --host value, with the port."""
    names = {"127.0.0.1", "localhost", "[::1]", bracketed(host.lower())}
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


def check_token(request: Request, token: str) -> None:
    """403 unless the request carries the page's token (compared in constant time)."""
    given = request.headers.get(TOKEN_HEADER, "")
    if not secrets.compare_digest(given.encode("latin-1"), token.encode()):
        raise RequestRefused(403, "missing or wrong X-Tether-Token (if the server restarted, reload the page)")


def decode_json(body: bytes):
    """The JSON value of a body, or 400: not UTF-8 JSON, nested past Python's recursion limit, or holding
    a lone UTF-16 surrogate ("\\ud800" is valid JSON but no character, so it could not be written)."""
    try:
        value = json.loads(body)
        json.dumps(value, ensure_ascii=False).encode()
    except RecursionError:
        raise RequestRefused(400, "body is nested too deeply") from None
    except UnicodeEncodeError:
        raise RequestRefused(400, "body holds a lone UTF-16 surrogate (such as \\ud800), which is not "
                                  "Unicode text") from None
    except ValueError:
        raise RequestRefused(400, "body is not valid JSON") from None
    return value


async def read_json(request: Request, max_bytes: int):
    """The JSON body of a request: 415 unless application/json, 413 over `max_bytes`, else `decode_json`."""
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
    return decode_json(bytes(body))
