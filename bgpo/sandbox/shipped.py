"""The code that runs in other processes (the program's harness, the judge), shipped as text or marshalled code.

``harness.py`` and ``judge.py`` run in processes that do not import :mod:`bgpo` (the sandbox's
interpreter sees no project files; the judge is a bare interpreter or a fork of one), so each is
its own source with :mod:`bgpo.sandbox.wire`'s text in front, compiled once in the caller and sent
as marshalled code (the other process runs the caller's interpreter, or its base: same version).
"""

from __future__ import annotations

import marshal
from functools import lru_cache
from pathlib import Path

SOURCES = Path(__file__).parent


@lru_cache(maxsize=None)
def source(name: str) -> str:
    """Source of a module that runs in another process; harness.py and judge.py follow wire.py's text."""
    text = (SOURCES / name).read_text()
    return (SOURCES / "wire.py").read_text() + "\n" + text.replace("from bgpo.sandbox.wire import", "# wire.py:")


@lru_cache(maxsize=None)
def compiled(name: str) -> bytes:
    """:func:`source` compiled and marshalled (same interpreter version only): compiling ~450 lines
    at every start would cost each run ~10 ms of CPU."""
    return marshal.dumps(compile(source(name), f"<bgpo.sandbox.{name}>", "exec"))
