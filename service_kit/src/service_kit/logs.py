"""Logging set-up for a service process and its spawned workers (which start unconfigured).

Logs are data: a value a client sent (an instruction, an id, a header) may hold a newline or a
terminal escape, and must not forge a line of its own in the service log. ``SafeFormatter``
shows every control character of a record's message as an escape (``\\n``, ``\\x1b``), so one
record is one line; and where a record spans lines (a traceback), every line after the first
starts with ``  | ``, so no line of it can pass for a record of its own.
"""

from __future__ import annotations

import logging
import re

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(processName)s[%(process)d] %(name)s: %(message)s"
CONTINUATION = "  | "

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def escape_log_text(text: str) -> str:
    """``text`` on one line: control characters (newlines included) as escapes."""
    return _CONTROL.sub(_escape, text)


class SafeFormatter(logging.Formatter):
    """One record, one line of its own: the message escaped, further lines marked."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_log_text(record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if "\n" not in text and "\r" not in text:
            return text
        first, *rest = text.replace("\r", "\\r").split("\n")
        return "\n".join([first, *(CONTINUATION + line for line in rest)])


def configure_logging(level: str = "info") -> None:
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT, force=True)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(SafeFormatter(LOG_FORMAT))
    # Per-step progress bars from diffusers/transformers are noise in a service log.
    for noisy in ("httpx", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
