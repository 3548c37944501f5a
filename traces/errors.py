"""Errors about bad input: one type that names the file and the position in it.

Every error a user's file can cause renders as ``FILE: POSITION: message`` (the ``mhp`` command
prefixes its name: ``mhp SUBCOMMAND: FILE: POSITION: message``). POSITION is ``line L:C`` (or
``line L``) for text, ``byte N`` plus ``record R`` and ``field F`` for binary traces; parts that are
not known are left out.
"""

from __future__ import annotations

from typing import Any, Self


class InputError(ValueError):
    """Bad input: says where (file, line:column or byte offset, record index, field) and what."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        offset: int | None = None,
        record: int | None = None,
        field: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.message = message
        self.path = path
        self.offset = offset
        self.record = record
        self.field = field
        self.line = line
        self.column = column
        super().__init__(self._render())

    def position(self) -> str:
        """Where in the file, as text ('' if nothing is known)."""
        where = []
        if self.line is not None:
            where.append(f"line {self.line}" + (f":{self.column}" if self.column is not None else ""))
        if self.offset is not None:
            where.append(f"byte {self.offset}")
        if self.record is not None:
            where.append(f"record {self.record}")
        if self.field is not None:
            where.append(f"field {self.field}")
        return ", ".join(where)

    def _render(self) -> str:
        return ": ".join(part for part in (self.path, self.position(), self.message) if part)

    def at(self, **kw: object) -> Self:
        """A copy with more location facts filled in (only those not yet known)."""
        args: dict[str, Any] = {k: getattr(self, k) for k in ("path", "offset", "record", "field", "line", "column")}
        for k, v in kw.items():
            if args.get(k) is None:
                args[k] = v
        return type(self)(self.message, **args)


class TraceFormatError(InputError):
    """A malformed trace or text form."""
