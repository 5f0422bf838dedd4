"""A client that waits as a service told it to (Retry-After) and then reuses its connection
finds the connection still open: the services keep idle connections longer than any Retry-After
they send. With uvicorn's default (5 s) the server closed them, and clients back from a 5 s wait
raced the close (a load test saw ReadErrors)."""

from __future__ import annotations

import http.client
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from service_kit.app.server import KEEP_ALIVE_S
from service_kit.errors import MAX_RETRY_AFTER_S
from tests.reliability.services import SERVICES, service_process


def test_idle_connections_outlive_the_longest_retry_after() -> None:
    assert KEEP_ALIVE_S > MAX_RETRY_AFTER_S


@pytest.mark.parametrize("module", SERVICES)
def test_a_connection_idle_past_uvicorns_default_keep_alive_is_still_served(
    module: str, tmp_path: Path
) -> None:
    with service_process(module, tmp_path).running(ready_timeout_s=120) as service:
        address = urlsplit(service.url)
        connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=30)
        try:
            connection.request("GET", "/v1/info")
            first = connection.getresponse()
            first.read()
            assert first.status == 200
            socket_used = connection.sock
            time.sleep(6.5)  # idle longer than uvicorn's default of 5 s
            connection.request("GET", "/v1/info")  # on the same socket: no reconnect
            assert connection.sock is socket_used
            second = connection.getresponse()  # RemoteDisconnected if the server had closed it
            second.read()
            assert second.status == 200
        finally:
            connection.close()
