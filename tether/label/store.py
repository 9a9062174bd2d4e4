"""The label file of a running `tether label`: locked, replayed, appended to; no submitted label lost or duplicated.

`LabelFile` is the durable part: the file is opened for appending and locked
exclusively (`flock`) for the life of the server, so a second server on the same
file refuses to start instead of answering the same pairs; a torn last line from
a crash is repaired under that lock; every row is written and fsynced before it
counts. `LabelStore` is one labeler's state on top: the answer in force per
showing, replayed with `effective_labels` at start, changed only under one lock.
Row format: `tether.label.stats`.
"""

import fcntl
import json
import os
import threading
from datetime import datetime, timezone
from pathlib import Path

from tether.data.labels import effective_labels, read_label_rows
from tether.errors import InputError
from tether.label.pairs import Item, display_text, presentation_order


class RequestRefused(Exception):
    """A request the server answers with `status` and an error message; nothing was written."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        created = not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as e:
        raise InputError(f"cannot open for appending: {e.strerror or e}", path=path, field="out") from None
    if created:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return fd


def _lock_exclusively(fd: int, path: Path) -> None:
    """Take the file's exclusive lock without waiting; InputError if another `tether label` holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise InputError("another `tether label` is writing to this file; stop it first or choose another --out",
                         path=path, field="out") from None


class LabelFile:
    """A label file held exclusively until `close`: `repair_note` says what a crash left, `rows` replays it,
    `append` writes one row durably."""

    def __init__(self, path):
        self.path = Path(path)
        self._fd = _open_for_append(self.path)
        try:
            _lock_exclusively(self._fd, self.path)
            self.repair_note = repair_torn_tail(self.path)
        except BaseException:
            os.close(self._fd)
            raise

    def rows(self) -> list[dict]:
        return read_label_rows(self.path)

    def append(self, row: dict) -> None:
        """Write one JSON line and fsync it; on OSError cut the file back first, so nothing half-written stays."""
        data = memoryview((json.dumps(row, ensure_ascii=False) + "\n").encode())
        size = os.fstat(self._fd).st_size
        try:
            while data:
                data = data[os.write(self._fd, data):]
            os.fsync(self._fd)
        except OSError:
            os.ftruncate(self._fd, size)
            raise

    def close(self) -> None:
        os.close(self._fd)  # releases the lock


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
        self.file = LabelFile(self.out_path)
        try:
            mine = [row for row in self.file.rows() if row["labeler"] == labeler]
        except BaseException:
            self.file.close()
            raise
        self._in_force = {(row["id"], row["repeat"]): row for row in effective_labels(mine)}  # append order
        self._undone = {(row["id"], row["repeat"], row["undoes_time"]) for row in mine if row["event"] == "undo"}
        self._lock = threading.Lock()

    def close(self) -> None:
        self.file.close()

    def _item(self, pair_id: str, repeat: int) -> Item:
        item = self._items_by_key.get((pair_id, repeat))
        if item is None:
            raise RequestRefused(400, f"unknown pair {pair_id!r} (showing {repeat})")
        return item

    def _append(self, row: dict) -> None:
        try:
            self.file.append(row)
        except OSError as e:
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
