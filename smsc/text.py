"""Text from the network made safe to keep: storable in PostgreSQL, one line in a log or a list."""

from __future__ import annotations

import re
from typing import Final

# PostgreSQL text and jsonb cannot hold NUL, nor can UTF-8 carry a lone surrogate (a JSON "\ud800"
# escape, or a byte aiohttp kept with surrogateescape).
_UNSTORABLE: Final = re.compile("[\x00\ud800-\udfff]")
_BREAKS: Final = re.compile(r"[\s\x00-\x1f\x7f-\x9f]+")
REASON_MAX: Final = 500


def storable(text: str) -> str:
    """`text` with what PostgreSQL refuses replaced by U+FFFD: a visible mark beats a lost row."""
    return _UNSTORABLE.sub("\ufffd", text)


def is_storable(text: str) -> bool:
    """Whether `text` is stored as it is: true of nearly every text, checked far faster than replaced."""
    return _UNSTORABLE.search(text) is None


def one_line(text: str, limit: int = REASON_MAX) -> str:
    """A storable single line: line breaks and control characters become one space, cut at `limit`."""
    line = _BREAKS.sub(" ", storable(text)).strip()
    return line if len(line) <= limit else line[: limit - 1] + "…"
