"""``editbench run`` over several editor and judge endpoints: real services on loopback.

Each service is a real uvicorn process with the fault fakes at the backend seam (the test is about
dispatch, not models). Who served what is read from each service's own /metrics, and compared
with what the run's provenance says each endpoint did.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from orchestrator.clients import make_http_client
from orchestrator.endpoints.balancing import Endpoint, EndpointSet
from orchestrator.endpoints.opening import open_editor
from orchestrator.endpoints.pooled import PooledEditorClient
from orchestrator.endpoints.urls import one_family
from orchestrator.jobs import judge_key, model_key
from orchestrator.store import JsonlLog
from orchestrator.wording import counted
from shared_schemas import EditRequest, ModelInfo
from tests.orchestrator.conftest import write_manifest
from tests.orchestrator.harness import answered, editbench, editor_idle, finish, wait_for
from tests.support.images import b64, image_bytes
from tests.support.servers import ServiceProcess, free_port

FAKES = {
    "editor_service": "tests.support.fault_backends:FaultEditor",
    "reward_service": "tests.support.fault_backends:FaultJudge",
}
PREFIX = {"editor_service": "EDITOR", "reward_service": "REWARD"}


class Service(ServiceProcess):
    """A service with the fault fake on one CPU worker, on any loopback address."""

    def __init__(
        self,
        module: str,
        folder: Path,
        name: str,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        options: dict[str, Any] | None = None,
        **settings: str,
    ) -> None:
        env = {
            "BACKEND": FAKES[module],
            "BACKEND_OPTIONS": json.dumps(options or {}),
            "DEVICES": "cpu",
            "CACHE_DIR": str(folder / "cache"),
            "HOST": host,
            **settings,
        }
        super().__init__(
            module,
            {f"{PREFIX[module]}_{k}": v for k, v in env.items()},
            folder / f"{name}.log",
            port=port,
        )
        self.host = host

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def kill(self) -> None:
        """SIGKILL the service and its workers: no drain, connections reset."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)


def started(stack: ExitStack, *services: Service) -> list[Service]:
    """Start them all, then wait for each; stopped when ``stack`` closes."""
    for service in services:
        service.start()
        stack.callback(service.stop)
    for service in services:
        service.wait_ready()
    return list(services)


def benchmark(folder: Path, n: int) -> Path:
    rows = [
        {"id": f"i{k:02d}", "category": ("color", "物理")[k % 2], "instruction": f"edit {k}"}
        for k in range(n)
    ]
    return write_manifest(folder / "bench", rows)


def run_args(bench: Path, out: Path, editors: list[Service], judges: list[Service]) -> list[str]:
    return [
        "run",
        "--benchmark",
        str(bench),
        "--out",
        str(out),
        "--steps",
        "2",
        "--protocol",
        "single",
        "--editor-url",
        ",".join(s.url for s in editors),
        "--reward-url",
        ",".join(s.url for s in judges),
    ]


def records(path: Path) -> list[dict[str, Any]]:
    return [dict(r) for r in JsonlLog(path).read()]


def endpoints_of(out: Path, service: str) -> dict[str, dict[str, Any]]:
    provenance = json.loads((out / "provenance.json").read_text(encoding="utf-8"))
    entry = provenance["services"][service]
    return {e["url"]: e for e in entry["endpoints"]}


@pytest.fixture(scope="module")
def four(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, list[Service]]]:
    """Two editors and two judges; an edit takes 0.2 s, so both editors are kept busy."""
    folder = tmp_path_factory.mktemp("four")
    with ExitStack() as stack:
        editors = [
            Service("editor_service", folder, f"editor{n}", options={"edit_delay_s": 0.2})
            for n in range(2)
        ]
        judges = [
            Service("reward_service", folder, f"judge{n}", options={"batch_delay_s": 0.1})
            for n in range(2)
        ]
        started(stack, *editors, *judges)
        yield {"editors": editors, "judges": judges}


def test_run_spreads_jobs_over_every_endpoint_and_says_which_did_how_many(
    four: dict[str, list[Service]], tmp_path: Path
) -> None:
    editors, judges = four["editors"], four["judges"]
    before = {s.url: answered(s.url, "/v1/edits") for s in editors}
    before |= {s.url: answered(s.url, "/v1/scores") for s in judges}
    out = tmp_path / "run"

    code, printed, err = finish(editbench(*run_args(benchmark(tmp_path, 12), out, editors, judges)))

    assert code == 0, err
    edits, scores = records(out / "edits.jsonl"), records(out / "scores.jsonl")
    assert Counter(r["item_id"] for r in edits) == {f"i{k:02d}": 1 for k in range(12)}
    assert all(r["status"] == "ok" for r in edits + scores)
    assert sorted(r["item_id"] for r in scores) == sorted(r["item_id"] for r in edits)
    served = {s.url: answered(s.url, "/v1/edits") - before[s.url] for s in editors}
    served |= {s.url: answered(s.url, "/v1/scores") - before[s.url] for s in judges}
    assert all(n > 0 for n in served.values()), served  # every replica did some of the work
    assert sum(served[s.url] for s in editors) == 12
    # provenance agrees with the services' own counts, and names one model per service
    for service, group in (("editor", editors), ("reward", judges)):
        found = endpoints_of(out, service)
        assert {url: e["jobs_ok"] for url, e in found.items()} == {
            s.url: served[s.url] for s in group
        }
        provenance = json.loads((out / "provenance.json").read_text(encoding="utf-8"))
        assert len(provenance["services"][service]["models"]) == 1
    report = (out / "report.html").read_text(encoding="utf-8")
    for s in editors + judges:
        assert f"{s.url}: {served[s.url]} jobs" in report
    # ... and the run prints them, one line per service (docs/DEPLOY.md promises it)
    for service, group in (("editor", editors), ("reward", judges)):
        [line] = [x for x in printed.splitlines() if x.startswith(f"{service} replicas: ")]
        for s in group:
            assert f"{s.url} {counted(served[s.url], 'job')}" in line, line
    assert "all served fake:" in report


def test_editor_killed_mid_run_leaves_exactly_one_record_per_item(tmp_path: Path) -> None:
    with ExitStack() as stack:
        doomed, survivor = started(
            stack,
            *(
                Service("editor_service", tmp_path, f"editor{n}", options={"edit_delay_s": 0.5})
                for n in range(2)
            ),
        )
        (judge,) = started(stack, Service("reward_service", tmp_path, "judge"))
        out = tmp_path / "run"
        run = editbench(*run_args(benchmark(tmp_path, 16), out, [doomed, survivor], [judge]))
        # Killed with an edit of this run in flight on it: seen busy (or with one queued) just
        # before the kill, each edit taking 0.5 s. (Waiting only for two answered edits left the
        # rest of the run - about 3 s - as the window for the kill: on a loaded machine the run
        # could be done with the doomed editor first, and nothing would be set aside.)
        wait_for(
            lambda: answered(doomed.url, "/v1/edits") >= 2 and not editor_idle(doomed.url),
            "edits on the doomed, one in flight",
            run,
        )
        doomed.kill()
        code, _, err = finish(run)

        assert code == 0, err
        edits = records(out / "edits.jsonl")
        assert Counter(r["item_id"] for r in edits) == {f"i{k:02d}": 1 for k in range(16)}
        assert all(r["status"] == "ok" for r in edits)
        assert len(records(out / "scores.jsonl")) == 16
        found = endpoints_of(out, "editor")
        assert found[doomed.url]["set_aside"] >= 1
        assert found[doomed.url]["state"] == "set_aside"
        assert found[doomed.url]["jobs_ok"] + found[survivor.url]["jobs_ok"] == 16
        assert found[survivor.url]["jobs_ok"] == answered(survivor.url, "/v1/edits")


def test_endpoints_serving_different_models_are_refused_unless_allowed(tmp_path: Path) -> None:
    with ExitStack() as stack:
        editors = started(
            stack,
            Service("editor_service", tmp_path, "editor-a", MODEL="model-a"),
            Service("editor_service", tmp_path, "editor-b", MODEL="model-b"),
        )
        bench = benchmark(tmp_path, 2)
        args = [*run_args(bench, tmp_path / "run", editors, editors), "--phase", "edit"]

        code, _, err = finish(editbench(*args))
        assert code != 0
        assert "different models" in err and "--allow-mixed-revisions" in err
        assert sum(answered(s.url, "/v1/edits") for s in editors) == 0  # nothing was sent

        code, _, err = finish(editbench(*args, "--allow-mixed-revisions"))
        assert code == 0, err
        provenance = json.loads((tmp_path / "run" / "provenance.json").read_text("utf-8"))
        assert len(provenance["services"]["editor"]["models"]) == 2


def test_a_name_that_resolves_to_several_addresses_is_one_endpoint_per_address(
    tmp_path: Path,
) -> None:
    """``tasks.<service>`` and headless Services: replicas share a port, differ in address.
    The name is resolved again during the run (the resolver is the seam: no DNS server here)."""
    port = free_port()
    addresses = ["127.0.0.2", "127.0.0.3"]
    answers = {"editors.test": list(addresses)}

    async def resolve(host: str, _port: int) -> list[str]:
        if host not in answers:
            raise OSError(f"unknown host {host}")
        return list(answers[host])

    async def edits(client: PooledEditorClient, n: int) -> None:
        image = b64(image_bytes(32, 32, seed=3))
        request = EditRequest.model_validate(
            {"image": image, "instruction": "mirror", "num_inference_steps": 2, "seed": 1}
        )
        await asyncio.gather(*(client.edit(request) for _ in range(n)))

    async def scenario(replicas: list[Service]) -> dict[str, int]:
        async with make_http_client() as http:
            client = await open_editor(http, f"http://editors.test:{port}", resolve=resolve)
            assert isinstance(client, PooledEditorClient)
            found = client.endpoints
            assert sorted(found.endpoints) == [f"http://{a}:{port}" for a in addresses]
            await edits(client, 6)
            first = {r.url: answered(r.url, "/v1/edits") for r in replicas}
            answers["editors.test"] = addresses[:1]  # one replica went away
            await found.refresh(force=True)
            assert found.endpoints[f"http://{addresses[1]}:{port}"].state == "gone"
            await edits(client, 3)
            await found.close()
        return {r.url: answered(r.url, "/v1/edits") - first[r.url] for r in replicas}

    with ExitStack() as stack:
        replicas = started(
            stack,
            *(
                Service(
                    "editor_service",
                    tmp_path,
                    f"editor-{a}",
                    host=a,
                    port=port,
                    options={"edit_delay_s": 0.2},
                )
                for a in addresses
            ),
        )
        assert all(answered(r.url, "/v1/edits") == 0 for r in replicas)
        later = asyncio.run(scenario(replicas))
        assert later == {replicas[0].url: 3, replicas[1].url: 0}
        assert all(httpx.get(f"{r.url}/ready", timeout=5).status_code == 200 for r in replicas)


def test_a_dual_stack_name_counts_each_replica_once() -> None:
    """Each replica has an IPv4 and an IPv6 address there: one family only, IPv4 first."""
    both = ["fd00::2", "10.0.0.2", "fd00::3", "10.0.0.3", "10.0.0.2"]
    assert one_family(both) == ["10.0.0.2", "10.0.0.3"]
    assert one_family(["fd00::2", "fd00::3", "fd00::2"]) == ["fd00::2", "fd00::3"]


def test_judges_in_and_out_of_deterministic_mode_are_not_mixed_in_one_run() -> None:
    """Their scores differ by a few hundredths: the one set up otherwise is set aside, as a
    judge serving another model is; editors differing only in their kernels are not."""
    plain = ModelInfo(
        id="j", source="hub", revision="r", model_class="M", dtype="bf16", meaningful=True
    )
    deterministic = plain.model_copy(update={"deterministic": True})

    def admitted(service: str, key: Any, models: list[ModelInfo]) -> list[str]:
        endpoints = EndpointSet(service, [], lambda url: None, lambda info: 1, key=key)
        for n, model in enumerate(models):
            endpoint = Endpoint(url=f"http://10.0.0.{n}:1", given="x", client=None, state="ready")
            endpoints._admit(endpoint, SimpleNamespace(model=model))
            endpoints.endpoints[endpoint.url] = endpoint
        return [e.state for e in endpoints.endpoints.values()]

    assert admitted("reward", judge_key, [plain, deterministic]) == ["ready", "other_model"]
    assert admitted("reward", judge_key, [deterministic, deterministic]) == ["ready", "ready"]
    assert admitted("editor", model_key, [plain, deterministic]) == ["ready", "ready"]
    fp8 = plain.model_copy(update={"options": {"transformer_fp8": "row"}})
    assert admitted("editor", model_key, [plain, fp8]) == ["ready", "other_model"]


def test_repeating_the_url_flags_adds_endpoints_instead_of_keeping_the_last(
    four: dict[str, list[Service]], tmp_path: Path
) -> None:
    """``--editor-url A --editor-url B`` is A and B, as ``--categories`` adds categories."""
    editors, judges = four["editors"], four["judges"]
    before = {s.url: answered(s.url, "/v1/edits") for s in editors}
    before |= {s.url: answered(s.url, "/v1/scores") for s in judges}
    out = tmp_path / "run"
    args = run_args(benchmark(tmp_path, 8), out, editors, judges)
    for flag, group in (("--editor-url", editors), ("--reward-url", judges)):
        at = args.index(flag)
        args[at : at + 2] = [part for s in group for part in (flag, s.url)]

    code, _, err = finish(editbench(*args))

    assert code == 0, err
    edits = records(out / "edits.jsonl")
    assert Counter(r["item_id"] for r in edits) == {f"i{k:02d}": 1 for k in range(8)}
    served = {s.url: answered(s.url, "/v1/edits") - before[s.url] for s in editors}
    served |= {s.url: answered(s.url, "/v1/scores") - before[s.url] for s in judges}
    assert all(n > 0 for n in served.values()), served
    assert set(endpoints_of(out, "editor")) == {s.url for s in editors}
    assert set(endpoints_of(out, "reward")) == {s.url for s in judges}
