"""``--results DIR``: one summary per trace, written atomically as it arrives, so that a rerun skips
the traces already done (same path, same content digest, same replay options) and a killed run
loses nothing that had finished."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from traces.atomic import atomic_write


class ResultStore:
    """A directory of ``<sha256 of the path>.json`` files, each ``{"options", "summary"}``."""

    def __init__(self, directory: str, options: dict[str, Any]) -> None:
        if os.path.exists(directory) and not os.path.isdir(directory):
            raise NotADirectoryError(f"--results {directory}: not a directory")
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self.options = options

    def file(self, path: str) -> str:
        return os.path.join(self.directory, hashlib.sha256(path.encode()).hexdigest()[:32] + ".json")

    def load(self, path: str) -> dict[str, Any] | None:
        """The stored summary of ``path`` if it was replayed with the same options, else None."""
        try:
            with open(self.file(path), encoding="utf-8") as f:
                stored = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None  # unreadable: replayed again and overwritten
        if not isinstance(stored, dict) or stored.get("options") != self.options:
            return None
        summary = stored.get("summary")
        return summary if isinstance(summary, dict) and summary.get("path") == path and summary.get("digest") else None

    def save(self, summary: dict[str, Any]) -> None:
        atomic_write(self.file(summary["path"]), json.dumps({"options": self.options, "summary": summary}, separators=(",", ":")))
