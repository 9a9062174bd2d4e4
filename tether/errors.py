"""Errors a user can act on.

`InputError` is bad input (a file, a line, a field, a config value): the CLI
prints its one-line message and exits 2. `RunError` is a run that failed for a
reason other than input (NaN loss, a missing checkpoint): exit 1.
"""


class TetherError(Exception):
    exit_code = 1


class RunError(TetherError):
    """A run stopped for a reason the user should read (exit 1)."""


class InputError(TetherError):
    """Bad input: message names the file, line and field when they are known (exit 2).

    >>> str(InputError("empty string", path="prefs.jsonl", line=12, field="chosen"))
    'prefs.jsonl:12: "chosen": empty string'
    """

    exit_code = 2

    def __init__(self, message: str, path=None, line: int | None = None, field: str | None = None):
        self.message, self.path, self.line, self.field = message, path, line, field
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        if field is not None:
            where += f'"{field}": '
        super().__init__(where + message)
