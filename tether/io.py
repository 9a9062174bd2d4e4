"""Atomic file output: a reader never sees a half-written file.

Write to a temporary file in the same folder, flush, fsync, then rename over the
target (rename is atomic on POSIX) and fsync the folder so the rename survives a
crash. Temporary names are hidden and end in `.tmp` (`.NAME.XXXX.tmp`); a process
killed mid-write leaves one, which `remove_stale_temp` deletes on the next start.
Files and folders get the user's umask, like every other tool's output.
"""

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path


TMP_SUFFIX = ".tmp"


def umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temp_name_prefix(path: Path) -> str:
    return f".{path.name}."


def remove_stale_temp(folder) -> list[Path]:
    """Delete the temporary files and folders that killed writes left in `folder`; returns what was removed."""
    folder = Path(folder)
    stale = [p for p in folder.glob(".*" + TMP_SUFFIX)] if folder.is_dir() else []
    for p in stale:
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    return stale


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path, mode: str = "w", encoding: str | None = "utf-8"):
    """Open a temporary sibling of `path`; on clean exit fsync and rename it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_name_prefix(path), suffix=TMP_SUFFIX, dir=path.parent)
    binary = "b" in mode
    try:
        os.fchmod(fd, 0o666 & ~umask())  # mkstemp makes 0600; the user's umask decides, as for open()
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text_atomic(path, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


def write_json_atomic(path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_jsonl_atomic(path, rows) -> None:
    """Write an iterable of dicts as JSON Lines, all or nothing."""
    with atomic_open(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


@contextlib.contextmanager
def removed_on(errors: tuple[type[BaseException], ...], path):
    """Run the body; if it raises one of `errors` and `path` did not exist before, remove what it made there.

    A command that stops on bad input then leaves nothing on disk that was not there before.
    """
    path = Path(path) if path else None
    existed = path is None or path.exists()
    try:
        yield
    except errors:
        if not existed and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif not existed and path.exists():
            path.unlink()
        raise
