"""`tether label`: a local web page where a person says which of two responses is better.

One page shows the prompt and the pair's two responses side by side, in a
left/right order drawn per pair and labeler and recorded with the answer
(`tether.label.pairs`). Each answer is one row appended to the label file,
written and fsynced before the page is told it was saved; the file is locked for
the server's life and replayed on restart, so the page resumes at the first pair
this labeler has not answered (`tether.label.store`). Requests pass
`tether.label.guard`; the page and its API are `tether.label.routes`.

Security (DESIGN §8): the server listens on 127.0.0.1. Another address that is
not loopback exposes the pairs to anyone who can reach the machine, so it needs
`--allow-remote true` as well (and then warns).
"""

import contextlib
import ipaddress
import os
import socket
import sys
import threading
import time
import webbrowser
from dataclasses import dataclass

import uvicorn

from tether.config import opt, require
from tether.errors import InputError, RunError
from tether.label.guard import allowed_hosts, bracketed
from tether.label.pairs import load_items
from tether.label.routes import build_app
from tether.label.stats_command import LabelStatsConfig, run_label_stats
from tether.label.store import LabelStore
from tether.worlds import resolve_gold

LABELER_MAX_CHARS = 64
STATS_ONLY_FIELDS = ("labels", "gold", "reward_model")


def is_loopback(host: str) -> bool:
    """True for "localhost" and the loopback addresses (127.0.0.0/8, ::1)."""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class LabelConfig:
    """Label pairs in a local web page (agreement statistics of label files: `tether label stats`)."""

    pairs: str | None = opt(None, "pairs to label: JSON Lines from `tether collect` with no labeler, "
                                  "or rows {prompt, response_a, response_b[, id]}")
    out: str | None = opt(None, "label file: each answer is appended here (one server at a time: it is locked)")
    host: str = opt("127.0.0.1", "address to listen on; one that is not loopback needs --allow-remote")
    allow_remote: bool = opt(False, "allow a --host that is not loopback: anyone who can reach it reads the pairs")
    port: int = opt(0, "port to listen on; 0 picks a free one (the address is printed)")
    labeler: str | None = opt(None, "labeler id stored with each answer; unset: $USER, else 'anonymous'")
    seed: int = opt(0, "seed of the left/right order, drawn per pair and labeler")
    stats: bool = opt(False, "the old spelling of `tether label stats`, which takes --labels, --gold, --reward-model")
    labels: list[str] = opt([], "with --stats: see `tether label stats --help`")
    gold: str | None = opt(None, "with --stats: see `tether label stats --help`")
    reward_model: str | None = opt(None, "with --stats: see `tether label stats --help`")
    max_body_bytes: int = opt(16384, "largest request body accepted; a larger one gets 413")
    open_browser: bool = opt(False, "open the page in the default web browser")
    skip_invalid: bool = opt(False, "skip invalid rows of --pairs and report them by reason, instead of stopping at the first")

    def __post_init__(self):
        require(bool(self.out), "out", "required: the label file")
        require(self.stats or bool(self.pairs), "pairs", "required unless --stats (now `tether label stats`)")
        if self.stats:
            self.stats_config()
        require(bool(self.host), "host", "empty")
        require(self.allow_remote or is_loopback(self.host), "host",
                f"{self.host} is not a loopback address: anyone who can reach it could read and label the pairs; "
                f"add --allow-remote true if that is meant")
        require(0 <= self.port <= 65535, "port", f"must be in 0..65535, got {self.port}")
        require(1024 <= self.max_body_bytes <= 1 << 20, "max_body_bytes",
                f"must be in 1024..1048576, got {self.max_body_bytes}")
        resolve_gold(self.gold)  # InputError naming the known golds
        for name in STATS_ONLY_FIELDS:
            require(self.stats or not getattr(self, name), name, "only used with --stats (`tether label stats`)")
        if self.labeler is None:
            self.labeler = os.environ.get("USER") or "anonymous"
        require(0 < len(self.labeler) <= LABELER_MAX_CHARS and self.labeler.isprintable(), "labeler",
                f"1 to {LABELER_MAX_CHARS} printable characters, got {self.labeler!r}")

    def stats_config(self) -> LabelStatsConfig:
        """The `tether label stats` config that `--stats` stands for."""
        return LabelStatsConfig(out=self.out, pairs=self.pairs,
                                **{name: getattr(self, name) for name in STATS_ONLY_FIELDS})


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
    return f"http://{bracketed(shown)}:{port}/"


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
    if is_loopback(host):
        return None
    return (f"warning: listening on {host}, not a loopback address: anyone who can reach this machine can read "
            f"the pairs and label them (requests must still name {host} or a loopback name as Host)")


def run_label(cfg: LabelConfig) -> dict | None:
    """Serve the labeling page until Ctrl-C; with `cfg.stats`, print and return the statistics instead."""
    if cfg.stats:
        print("tether label: --stats is now `tether label stats` (same options)", file=sys.stderr)
        return run_label_stats(cfg.stats_config())
    items = load_items(cfg.pairs, cfg.skip_invalid)
    store = LabelStore(items, cfg.out, cfg.labeler, cfg.seed)
    try:
        if store.file.repair_note:
            print(f"tether label: {store.file.repair_note}", file=sys.stderr)
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
