"""A remote judge endpoint's failures reach the client in the one error envelope: refused (401,
403, 404 at the endpoint) is 502, unavailable after retries is 503 with Retry-After; the service
keeps serving."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.reliability.services import error_type, job_body, service_process


def test_endpoint_refusal_is_502_and_unavailability_503_and_the_service_keeps_serving(
    tmp_path: Path,
) -> None:
    module = "reward_service"
    with (
        service_process(module, tmp_path).running() as service,
        httpx.Client(base_url=service.url, timeout=120) as http,
    ):
        refused = http.post("/v1/scores", json=job_body(module, "endpoint-refused score=7"))
        assert refused.status_code == 502
        assert error_type(refused) == "upstream_error"
        assert "refused our credentials" in refused.json()["error"]["message"]

        down = http.post("/v1/scores", json=job_body(module, "endpoint-down score=7"))
        assert down.status_code == 503
        assert error_type(down) == "upstream_unavailable"
        assert int(down.headers["Retry-After"]) >= 1

        after = http.post("/v1/scores", json=job_body(module))
        assert after.status_code == 200, after.text
        assert http.get("/ready").status_code == 200
