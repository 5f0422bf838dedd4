"""The Dockerfiles and their helper, read as files: no engine needed."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from types import ModuleType

import pytest

from tests.docker.compose import REPO_ROOT

SERVICE_DOCKERFILES = ("editor_service/Dockerfile", "reward_service/Dockerfile")
SHARED_END = "# ---- end of the shared torch layers"


def load_requirements_helper() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "requirements", REPO_ROOT / "docker/requirements.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def instructions(text: str) -> list[str]:
    """Dockerfile instructions, comments and blank lines dropped, continuations joined."""
    joined = re.sub(
        r"\\\n",
        " ",
        "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")),
    )
    return [" ".join(line.split()) for line in joined.splitlines() if line.strip()]


def test_service_dockerfiles_are_identical_up_to_the_torch_layer() -> None:
    """Identical steps are what lets BuildKit give both images one multi-GB torch layer."""
    prefixes = []
    for path in SERVICE_DOCKERFILES:
        text = (REPO_ROOT / path).read_text(encoding="utf-8")
        assert SHARED_END in text, path
        prefixes.append(instructions(text.split(SHARED_END)[0]))
    assert prefixes[0] == prefixes[1]
    assert any("torch==" in step for step in prefixes[0])


@pytest.mark.parametrize("path", SERVICE_DOCKERFILES)
def test_dockerfile_torch_pins_match_the_service_pins(path: str) -> None:
    component = path.split("/")[0]
    project = tomllib.loads((REPO_ROOT / component / "pyproject.toml").read_text(encoding="utf-8"))
    pinned = {
        dep.split("==")[0]: dep
        for dep in project["project"]["dependencies"]
        if dep.split("==")[0] in ("torch", "torchvision")
    }
    text = (REPO_ROOT / path).read_text(encoding="utf-8")
    assert set(re.findall(r"\b(torch(?:vision)?==[\w.+]+)", text)) == set(pinned.values())


def test_requirements_helper_follows_editbench_dependencies_and_their_extras() -> None:
    helper = load_requirements_helper()
    editor = helper.third_party_requirements(REPO_ROOT, "editor_service")
    names = {helper.split(requirement)[0] for requirement in editor}
    assert {"diffusers", "torch", "fastapi", "pydantic"} <= names
    assert "filelock" in names  # from editbench-service-kit[models]
    assert not {name for name in names if name.startswith("editbench")}
    assert "pydantic==2.14.3" in editor  # the service's own pin, not only the library's range


def test_requirements_helper_keeps_the_judge_and_the_cli_apart_from_diffusers() -> None:
    helper = load_requirements_helper()
    reward = {
        helper.split(r)[0] for r in helper.third_party_requirements(REPO_ROOT, "reward_service")
    }
    cli = {helper.split(r)[0] for r in helper.third_party_requirements(REPO_ROOT, "orchestrator")}
    assert "transformers" in reward and "diffusers" not in reward
    assert not cli & {"torch", "torchvision", "diffusers", "transformers"}


def test_dockerignore_starts_from_nothing() -> None:
    """An allow-list: .venv, runs, caches and .git never reach the daemon, whatever appears."""
    lines = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line[1:] for line in lines if line.startswith("!")}
    assert not allowed & {".venv", "runs", ".git", ".cache", "tests", "bench"}
