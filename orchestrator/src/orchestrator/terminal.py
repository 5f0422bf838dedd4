"""What editbench prints is text, never terminal control.

Manifest text (ids, categories, instructions), records, run.json and service messages can hold
escape sequences that clear the screen, rewrite earlier lines, set the window title or plant
hyperlinks. ``SafeConsole`` is a rich Console that shows every control character of the text it
prints as a visible escape (``\\x1b``), while its own styling, progress bars and cursor moves
(rich's control segments) work as before, and no hyperlink is emitted; ``printable`` does the
same for one string.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from rich.console import Console
from rich.segment import Segment

# C0 controls but tab and newline, DEL, C1 controls, and the bidirectional overrides that make
# text read in another order than it is stored.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with every control character shown as its escape."""
    return _CONTROL.sub(_visible, text)


class SafeConsole(Console):
    """A rich Console whose printed text can never control the terminal."""

    def _render_buffer(self, buffer: Iterable[Segment]) -> str:
        # No hyperlinks either: markup in manifest text ("[link=...]") must not plant one.
        safe = (
            segment if segment.control else Segment(printable(segment.text), segment.style)
            for segment in Segment.strip_links(buffer)
        )
        return super()._render_buffer(safe)


_LINE_BREAKS = re.compile("[\n\r\u2028\u2029\x85]")


class LogLineFormatter(logging.Formatter):
    """For a log file: a record's message on one line (control characters and line breaks as
    escapes), and every further line of a record (a traceback) marked ``  | ``, so no value from
    a manifest, a record or a service forges a line of its own."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        message = _LINE_BREAKS.sub(lambda m: f"\\x{ord(m.group()):02x}", record.message)
        record.message = printable(message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        first, *rest = super().format(record).replace("\r", "\\r").split("\n")
        return "\n".join([first, *("  | " + line for line in rest)])
