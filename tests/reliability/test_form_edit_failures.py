"""A job that fails in its worker on POST /v1/images/edits gets that job's own status, never 500.

The form route runs its n images as concurrent tasks (a TaskGroup), whose failure arrives as an
exception group; the one error mapping (service_kit.errors) answers the task's own error from
it. Before, every such failure (out of memory, a worker that died, input the model refused) was
a 500 ``server_error``, whatever n, and the connection was dropped. Real service process, the
fault fake at the backend seam.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.reliability.services import error_type, service_process
from tests.support.images import image_bytes
from tests.support.servers import ServiceProcess

PNG = image_bytes(32, 32, seed=3)


@pytest.fixture(scope="module")
def fault_editor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    service = service_process("editor_service", tmp_path_factory.mktemp("form-failures"))
    with service.running(ready_timeout_s=120):
        yield service


def form_edit(http: httpx.Client, prompt: str, **fields: str) -> httpx.Response:
    data = {"prompt": prompt, "size": "32x32", "num_inference_steps": "2", **fields}
    return http.post(
        "/v1/images/edits", data=data, files={"image": ("image.png", PNG, "image/png")}
    )


@pytest.mark.parametrize(
    "fields",
    [{"n": "1"}, {"n": "2"}, {"n": "3", "seed": "5"}, {"n": "2", "stream": "true"}],
    ids=["n1", "n2", "n3-seeded", "n2-streamed"],
)
def test_out_of_memory_in_a_form_edit_is_507_whatever_n_or_streaming(
    fault_editor: ServiceProcess, fields: dict[str, str]
) -> None:
    with httpx.Client(base_url=fault_editor.url, timeout=120) as http:
        failed = form_edit(http, "torch-oom", **fields)
        assert failed.status_code == 507, failed.text
        assert error_type(failed) == "out_of_memory"
        assert int(failed.headers["Retry-After"]) >= 1
        assert "Traceback" not in failed.text and "Tried to allocate" not in failed.text
        # The same connection serves the next edit: the failure did not drop it.
        after = form_edit(http, "mirror", **fields)
        assert after.status_code == 200, after.text


def test_a_form_edit_whose_worker_fails_otherwise_is_a_backend_error_not_a_server_error(
    fault_editor: ServiceProcess,
) -> None:
    with httpx.Client(base_url=fault_editor.url, timeout=120) as http:
        failed = form_edit(http, "crash", n="2")
        assert failed.status_code == 500, failed.text
        assert error_type(failed) == "backend_error"
        assert form_edit(http, "mirror", n="2").status_code == 200
