"""Logs are data (issue 31, class 3): a value a client sends never forges a line of the service
log. Real service processes; the values go in fields the services log (the OpenAI images route's
``user``), holding newlines, carriage returns, Unicode line breaks and terminal escapes; and the
formatter every service process logs through."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from service_kit.logs import CONTINUATION, SafeFormatter
from tests.reliability.services import service_process
from tests.support.images import image_bytes

FORGED = "2026-12-06 07:00:00,000 ERROR   MainProcess[1] editor_service: FORGED"
VALUES = [
    f"alice\n{FORGED}",
    f"alice\r\n{FORGED}",
    f"alice\r{FORGED}",
    f"alice\x1b[2K\x1b[1G{FORGED}",
    f"alice\u2028{FORGED}",
    f"alice\x85{FORGED}",
]


def forged_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith("2026-12-06 07:00:00")]


def test_a_user_field_with_a_newline_never_forges_a_log_line(tmp_path: Path) -> None:
    service = service_process("editor_service", tmp_path)
    png = image_bytes(32, 32, seed=1)
    with service.running(ready_timeout_s=120), httpx.Client(base_url=service.url) as http:
        for value in VALUES:
            answer = http.post(
                "/v1/images/edits",
                data={"prompt": "mirror", "user": value, "num_inference_steps": "2"},
                files={"image": ("a.png", png, "image/png")},
                timeout=120,
            )
            assert answer.status_code == 200, answer.text
    log = service.log()
    assert "images/edits for user alice" in log  # the value is logged, escaped
    assert forged_lines(log) == []
    assert "\x1b" not in log and "\u2028" not in log and "\x85" not in log
    assert "alice\\n2026-12-06" in log


def test_a_multi_line_record_marks_every_line_after_its_first() -> None:
    formatter = SafeFormatter("%(levelname)s %(message)s")
    try:
        raise ValueError(f"bad value\n{FORGED}")
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "job %s", ("a\nb",), None)
        record.exc_info = sys.exc_info()
        text = formatter.format(record)
    first, *rest = text.split("\n")
    assert first == "ERROR job a\\nb"
    assert rest and all(line.startswith(CONTINUATION) for line in rest)
    assert forged_lines(text) == []


@pytest.mark.parametrize("value", VALUES)
def test_the_formatter_keeps_one_record_on_one_line(value: str) -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "user %s", (value,), None)
    text = SafeFormatter("%(message)s").format(record)
    assert "\n" not in text and "\r" not in text and "\x1b" not in text
    assert forged_lines(text) == []
