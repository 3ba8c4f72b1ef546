"""Small file helpers shared by the stages: content digests and atomic JSON writes."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (what a downstream result was computed from: a checkpoint, a demo store)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_json_atomic(path: str | os.PathLike, obj, indent: int = 2) -> None:
    """Write JSON to a temp file and rename it over `path`: readers see the old file or the whole new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=indent, default=str) + "\n")
    tmp.replace(path)
