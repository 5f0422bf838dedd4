"""API keys: real service processes started with two keys, over real HTTP.

Without a key or with a wrong one every route but the probes and docs answers 401 in the error
envelope with ``WWW-Authenticate: Bearer``; either key works; the orchestrator's clients send
theirs. Fakes at the backend seam only (the tests are about HTTP, not models).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from orchestrator.clients import EditorClient, RewardClient, ServiceCallError, make_http_client
from service_kit.http.auth import ApiKeys
from tests.reliability.services import JOB_ROUTE, SERVICES, error_type, job_body, service_process
from tests.support.servers import ServiceProcess

KEYS = ("key-one-7f3a", "key-two-91c2")
PROBES_AND_DOCS = ("/health", "/ready", "/metrics", "/openapi.json", "/docs")


@pytest.fixture(scope="module", params=SERVICES)
def keyed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, ServiceProcess]]:
    module: str = request.param
    tmp_path = tmp_path_factory.mktemp(module)
    service = service_process(module, tmp_path, API_KEYS=",".join(KEYS))
    with service.running(ready_timeout_s=120):
        yield module, service


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert error_type(response) == "unauthorized"


def test_requests_without_a_valid_key_get_401_with_www_authenticate(
    keyed: tuple[str, ServiceProcess],
) -> None:
    module, service = keyed
    route = JOB_ROUTE[module]
    with httpx.Client(base_url=service.url, timeout=30) as http:
        assert_refused(http.get("/v1/info"))
        assert_refused(http.get("/v1/info", headers=bearer("key-one")))  # a prefix of a key
        assert_refused(http.get("/v1/info", headers=bearer(KEYS[0] + "x")))
        assert_refused(http.get("/v1/info", headers={"Authorization": KEYS[0]}))  # no scheme
        assert_refused(http.get("/v1/info", headers={"Authorization": f"Basic {KEYS[0]}"}))
        assert_refused(http.post(route, json=job_body(module)))
        # Refused before the body is read: a malformed body still gets 401, not 422.
        malformed = http.post(route, content=b"{not json", headers={"content-type": "x/y"})
        assert_refused(malformed)
        assert_refused(http.get("/v1/no-such-route"))  # no hint of which routes exist
        metrics = http.get("/metrics").text
    assert 'status="401"' in metrics


def test_either_of_two_keys_is_accepted(keyed: tuple[str, ServiceProcess]) -> None:
    module, service = keyed
    with httpx.Client(base_url=service.url, timeout=60) as http:
        for key in KEYS:
            assert http.get("/v1/info", headers=bearer(key)).status_code == 200
            job = http.post(JOB_ROUTE[module], json=job_body(module), headers=bearer(key))
            assert job.status_code == 200, job.text


def test_probes_and_docs_stay_open_without_a_key(keyed: tuple[str, ServiceProcess]) -> None:
    _, service = keyed
    with httpx.Client(base_url=service.url, timeout=30) as http:
        for path in PROBES_AND_DOCS:
            assert http.get(path).status_code == 200, path


def test_openapi_shows_the_bearer_scheme_on_api_routes_and_none_on_probes(
    keyed: tuple[str, ServiceProcess],
) -> None:
    module, service = keyed
    schema = httpx.get(f"{service.url}/openapi.json", timeout=30).json()
    assert schema["components"]["securitySchemes"]["api_key"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "One of the service's API keys (EDITOR_API_KEYS / REWARD_API_KEYS).",
    }
    job = schema["paths"][JOB_ROUTE[module]]["post"]
    info = schema["paths"]["/v1/info"]["get"]
    for operation in (job, info):
        assert operation["security"] == [{"api_key": []}]
        assert "401" in operation["responses"]
    assert "security" not in schema["paths"]["/ready"]["get"]


@pytest.mark.anyio
async def test_the_orchestrator_clients_authenticate_with_their_configured_key(
    keyed: tuple[str, ServiceProcess],
) -> None:
    module, service = keyed
    client_class = EditorClient if module == "editor_service" else RewardClient
    async with make_http_client() as http:
        assert (await client_class(http, service.url, api_key=KEYS[1]).info()) is not None
        with pytest.raises(ServiceCallError) as refused:
            await client_class(http, service.url, api_key="wrong").info()
        assert refused.value.status == 401 and refused.value.error_type == "unauthorized"
        assert await client_class(http, service.url).is_ready()  # probes need no key


def test_keys_match_whole_tokens_only() -> None:
    keys = ApiKeys(list(KEYS))
    assert keys.enabled and keys.accepts(KEYS[0]) and keys.accepts(KEYS[1])
    for token in ("", KEYS[0][:-1], KEYS[0] + " ", KEYS[0].upper(), KEYS[0] + KEYS[1]):
        assert not keys.accepts(token)
    assert not ApiKeys([]).enabled


def test_a_service_without_keys_needs_none(tmp_path: Path) -> None:
    service = service_process("editor_service", tmp_path)
    with service.running(ready_timeout_s=120), httpx.Client(base_url=service.url) as http:
        assert http.get("/v1/info").status_code == 200
        assert "securitySchemes" not in http.get("/openapi.json").json().get("components", {})
