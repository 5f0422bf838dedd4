"""/metrics cannot be inflated from outside: requests with made-up methods and paths (refused
401 with API keys on, 404/405 without) fold into fixed label values, so thousands of them leave
the exposition's size where it was. Before, each new method or path added a series (~5 KB)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from service_kit.http.metrics import METHODS, OTHER_METHOD, UNMATCHED_ROUTE, method_label
from tests.reliability.services import SERVICES, service_process

MADE_UP = 1500
SLACK_BYTES = 1024  # counters gaining digits; a new series per request would be MBs


def test_methods_outside_the_fixed_set_fold_into_one_label() -> None:
    assert {method_label(m) for m in METHODS} == METHODS
    for made_up in ("PROPFIND", "get", "X" * 200, "", "BREW"):
        assert method_label(made_up) == OTHER_METHOD


def _made_up(http: httpx.Client, start: int, count: int) -> None:
    for i in range(start, start + count):
        response = http.request(f"M{i}X", f"/v1/edits/{i}/x%{i % 256:02x}?q={i}")
        assert response.status_code in (401, 404, 405), response.text
        response = http.request("GET", f"/nowhere-{i}")
        assert response.status_code in (401, 404), response.text


@pytest.mark.parametrize("keys", ["", "key-a1b2c3"], ids=["no-keys", "api-keys"])
@pytest.mark.parametrize("module", SERVICES)
def test_made_up_methods_and_paths_leave_metrics_size_bounded(
    module: str, keys: str, tmp_path: Path
) -> None:
    settings = {"API_KEYS": keys} if keys else {}
    with (
        service_process(module, tmp_path, **settings).running(ready_timeout_s=120) as service,
        httpx.Client(base_url=service.url, timeout=30) as http,
    ):
        _made_up(http, 0, 20)  # every folded series exists from here on
        http.get("/metrics")  # and the scrape's own
        before = http.get("/metrics")
        assert before.status_code == 200
        _made_up(http, 20, MADE_UP)
        after = http.get("/metrics")
    assert after.status_code == 200
    assert len(after.content) <= len(before.content) + SLACK_BYTES
    prefix = module.split("_")[0]
    labels = re.findall(rf"^{prefix}_http_requests_total\{{(.*?)\}}", after.text, re.MULTILINE)
    assert f'method="{OTHER_METHOD}",route="{UNMATCHED_ROUTE}"' in " ".join(labels)
    for label in labels:
        method = re.search(r'method="([^"]*)"', label)
        assert method is not None and method.group(1) in METHODS | {OTHER_METHOD}
        assert "nowhere" not in label and "M2" not in label
