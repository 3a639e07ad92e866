"""The one error type for bad user input: it names the file, the line and the field."""

from __future__ import annotations

from pathlib import Path


class InputError(Exception):
    """Bad input a user can fix. The CLI prints it on one line and exits with code 2.

    ``str(err)`` reads ``FILE:LINE: field 'F': message`` with the parts that are known.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.path = None if path is None else str(path)
        self.line = line
        self.field = field
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path if self.line is None else f"{self.path}:{self.line}"
            where += ": "
        what = f"field '{self.field}': " if self.field is not None else ""
        return f"{where}{what}{self.message}"
