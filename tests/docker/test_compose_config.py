"""The compose files as Compose resolves them (``docker compose config``): no GPU, no images.

The GPU override cannot run here; what it asks of Docker is checked in its resolved form.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.docker.compose import CPU_FILES, GPU_FILES, Compose, duration_s
from tests.support.servers import REPO_ROOT

pytestmark = pytest.mark.docker

RESPONSE_MARGIN_S = 10  # service_kit.app.server: the last responses go out after the drain
STOP_MARGIN_S = 20  # stopping the worker processes after that (join, terminate, kill)


# What the files read from the environment; the tests set them, not the caller's shell.
VARIABLES = (
    "EDITOR_MODEL",
    "REWARD_MODEL",
    "REWARD_DEVICES",
    "EDITBENCH_EDITOR_GPUS",
    "EDITBENCH_REWARD_GPUS",
    "EDITBENCH_EDITOR_PORT",
    "EDITBENCH_REWARD_PORT",
    "EDITBENCH_TORCH_INDEX_URL",
    "HF_TOKEN",
    "HF_HUB_OFFLINE",
)


def resolved(files: tuple[str, ...], **env: str) -> dict[str, Any]:
    compose = Compose(project="editbench-config", files=files, env=env, unset=VARIABLES)
    return compose.config()


def gpu_requests(service: dict[str, Any]) -> list[dict[str, Any]]:
    return list(service["deploy"]["resources"]["reservations"]["devices"])


def test_gpu_override_config_is_valid() -> None:
    config = resolved(GPU_FILES)
    editor, reward = config["services"]["editor"], config["services"]["reward"]

    assert editor["environment"]["EDITOR_MODEL"] == "Qwen/Qwen-Image-Edit"
    assert editor["environment"]["EDITOR_DEVICES"] == ""  # every GPU it sees: one worker each
    assert reward["environment"]["REWARD_MODEL"] == "Qwen/Qwen3-VL-30B-A3B-Instruct"
    assert reward["environment"]["REWARD_DEVICES"] == ""  # the first GPU it sees
    for service in (editor, reward):
        assert service["image"].endswith(":cuda")
        assert "cu" in service["build"]["args"]["TORCH_INDEX_URL"].rsplit("/", 1)[-1]
        assert service["build"]["args"]["C_COMPILER"] == "gcc"  # Triton's, for torch.compile
        assert service["environment"]["HF_HUB_OFFLINE"] == "0"
        assert int(service["shm_size"]) >= 8 * 2**30
        assert [(m["type"], m["source"], m["target"]) for m in service["volumes"]] == [
            ("volume", "models", "/cache")
        ]
        [request] = gpu_requests(service)
        assert request["driver"] == "nvidia" and request["capabilities"] == ["gpu"]
        assert "count" not in request  # chosen GPUs, not "the first N"
    assert gpu_requests(editor)[0]["device_ids"] != gpu_requests(reward)[0]["device_ids"]
    # still only on the loopback interface
    assert {p["host_ip"] for s in (editor, reward) for p in s["ports"]} == {"127.0.0.1"}


def test_gpu_override_takes_gpus_and_models_from_the_environment() -> None:
    config = resolved(
        GPU_FILES,
        EDITBENCH_EDITOR_GPUS="0,1,2",
        EDITBENCH_REWARD_GPUS="3,4",
        REWARD_DEVICES="0,1",
        EDITOR_MODEL="Qwen/Qwen-Image-Edit-2509",
        REWARD_MODEL="/cache/judges/my-judge",
        EDITBENCH_TORCH_INDEX_URL="https://download.pytorch.org/whl/cu128",
    )
    editor, reward = config["services"]["editor"], config["services"]["reward"]
    # Docker hands the ids to the NVIDIA runtime joined by commas (NVIDIA_VISIBLE_DEVICES=0,1,2).
    assert gpu_requests(editor)[0]["device_ids"] == ["0,1,2"]
    assert gpu_requests(reward)[0]["device_ids"] == ["3,4"]
    assert reward["environment"]["REWARD_DEVICES"] == "0,1"
    assert editor["environment"]["EDITOR_MODEL"] == "Qwen/Qwen-Image-Edit-2509"
    assert reward["environment"]["REWARD_MODEL"] == "/cache/judges/my-judge"
    assert editor["build"]["args"]["TORCH_INDEX_URL"].endswith("/cu128")


@pytest.mark.parametrize("token", [None, "hf_test_token"])
def test_hf_token_reaches_the_services_only_when_set(token: str | None) -> None:
    config = resolved(GPU_FILES, **({"HF_TOKEN": token} if token else {}))
    for name in ("editor", "reward"):
        # null: Compose leaves the variable out of the container
        assert config["services"][name]["environment"]["HF_TOKEN"] == token


@pytest.mark.parametrize("files", [CPU_FILES, GPU_FILES], ids=["cpu", "gpu"])
def test_stop_grace_period_outlasts_the_drain(files: tuple[str, ...]) -> None:
    """After SIGTERM the service drains for up to D, then closes and stops its workers."""
    services = resolved(files)["services"]
    for name, prefix in (("editor", "EDITOR"), ("reward", "REWARD")):
        drain_s = float(services[name]["environment"][f"{prefix}_DRAIN_TIMEOUT_S"])
        grace_s = duration_s(services[name]["stop_grace_period"])
        assert grace_s >= drain_s + RESPONSE_MARGIN_S + STOP_MARGIN_S, name
        assert services[name]["init"] is True  # a real PID 1 forwards SIGTERM and reaps workers


def test_cpu_compose_runs_tiny_models_offline_with_restart_and_healthchecks() -> None:
    config = resolved(CPU_FILES)
    services = config["services"]
    assert services["editor"]["environment"]["EDITOR_MODEL"] == "tiny"
    assert services["reward"]["environment"]["REWARD_MODEL"] == "tiny"
    assert services["editor"]["environment"]["EDITOR_DEVICES"] == "cpu"
    assert services["reward"]["environment"]["REWARD_DEVICES"] == "cpu"
    for name in ("editor", "reward"):
        service = services[name]
        assert service["environment"]["HF_HUB_OFFLINE"] == "1"
        assert service["restart"] == "unless-stopped"
        assert service["pull_policy"] == "never"  # built here; no registry has these images
        assert "deploy" not in service
        assert duration_s(service["healthcheck"]["start_period"]) > 0
    orchestrator = services["orchestrator"]
    assert orchestrator["profiles"] == ["cli"]
    assert {d: c["condition"] for d, c in orchestrator["depends_on"].items()} == {
        "editor": "service_healthy",
        "reward": "service_healthy",
    }
    assert orchestrator["environment"]["EDITBENCH_EDITOR_URL"] == "http://editor:8001"


@pytest.mark.parametrize("files", [CPU_FILES, GPU_FILES])
def test_every_container_is_hardened_read_only_without_capabilities_or_new_privileges(
    files: tuple[str, ...],
) -> None:
    services = resolved(files)["services"]
    assert set(services) == {"editor", "reward", "orchestrator"}
    for name, service in services.items():
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert not service.get("cap_add") and not service.get("privileged"), name
        assert "no-new-privileges:true" in service["security_opt"], name
        # what is written, is written to a volume or a bounded tmpfs
        assert any(t.startswith("/tmp") for t in service["tmpfs"]), name
    for name in ("editor", "reward"):
        assert any(t.startswith("/home/editbench") for t in services[name]["tmpfs"])


def stack_config(*files: str, env: dict[str, str]) -> dict[str, Any]:
    command = ["docker", "stack", "config"]
    for name in files:
        command += ["--compose-file", name]
    done = subprocess.run(
        command,
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    loaded: dict[str, Any] = yaml.safe_load(done.stdout)
    return loaded


def test_the_swarm_stack_is_hardened_and_its_hugging_face_token_is_a_secret(
    tmp_path: Path,
) -> None:
    key = tmp_path / "key"
    key.write_text("k")
    env = {
        "EDITBENCH_EDITOR_KEYS_FILE": str(key),
        "EDITBENCH_REWARD_KEYS_FILE": str(key),
        "EDITBENCH_HF_TOKEN_FILE": str(key),
        "HF_TOKEN": "hf_in_the_callers_shell",
    }
    for files in (("docker-stack.yml",), ("docker-stack.yml", "docker-stack.gpu.yml")):
        config = stack_config(*files, env=env)
        for name, service in config["services"].items():
            assert service["read_only"] is True and service["cap_drop"] == ["ALL"], name
            tmpfs = {v["target"] for v in service["volumes"] if v["type"] == "tmpfs"}
            assert {"/tmp", "/home/editbench"} <= tmpfs, name
            environment = service.get("environment") or {}
            assert "HF_TOKEN" not in environment, name
            assert "hf_in_the_callers_shell" not in json.dumps(service), name
            secrets = {s["source"]: s for s in service["secrets"]}
            assert f"{name}_api_keys" in secrets
            if "docker-stack.gpu.yml" in files:
                assert environment["HF_TOKEN_PATH"] == "/run/secrets/hf_token"
                assert secrets["hf_token"]["mode"] == 0o400
