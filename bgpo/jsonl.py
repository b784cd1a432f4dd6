"""Reading JSON Lines files (data, generations, run logs) with errors that name the file and line.

One reader for every JSONL the project consumes, so a truncated log or a malformed data row always
gives the same one-line error instead of a ``JSONDecodeError`` traceback from deep inside.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

from bgpo.errors import BGPOError


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` for every non-blank line of ``path``; a bad line raises BGPOError."""
    path = Path(path)
    with (gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open(encoding="utf-8")) as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise BGPOError(f"{path}: line {line_no}: not valid JSON ({err.msg}); fix or remove the line "
                                "(a truncated log?)") from None
            if not isinstance(row, dict):
                raise BGPOError(f"{path}: line {line_no}: not a JSON object")
            yield line_no, row
