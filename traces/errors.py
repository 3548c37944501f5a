"""The one error type for malformed traces and text forms."""

from __future__ import annotations


class TraceFormatError(ValueError):
    """Malformed input: says where (file, byte offset or line:column, record index, field) and what."""

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

    def _render(self) -> str:
        where = []
        if self.path is not None:
            where.append(self.path if self.line is None else f"{self.path}:{self.line}:{self.column or 1}")
        elif self.line is not None:
            where.append(f"line {self.line}:{self.column or 1}")
        if self.offset is not None:
            where.append(f"byte {self.offset}")
        if self.record is not None:
            where.append(f"record {self.record}")
        if self.field is not None:
            where.append(f"field {self.field}")
        return f"{', '.join(where)}: {self.message}" if where else self.message

    def at(self, **kw: object) -> TraceFormatError:
        """A copy with more location facts filled in (only those not yet known)."""
        args = {k: getattr(self, k) for k in ("path", "offset", "record", "field", "line", "column")}
        for k, v in kw.items():
            if args.get(k) is None:
                args[k] = v
        return TraceFormatError(self.message, **args)  # type: ignore[arg-type]
