"""The three images, as built by ``docker compose --profile cli build``."""

from __future__ import annotations

import json

import pytest

from tests.docker.compose import build_context_copies, docker

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(3600)]

PROBE = (
    "import importlib.util as u, json, os; "
    "print(json.dumps({'uid': os.getuid(), 'modules': sorted(m for m in "
    "('torch', 'torchvision', 'diffusers', 'transformers', 'editor_service', 'reward_service', "
    "'orchestrator', 'tiny_models', 'hatchling') if u.find_spec(m))}))"
)


def probe(image: str) -> dict[str, object]:
    return dict(json.loads(docker("run", "--rm", image, "python", "-c", PROBE)))


def test_the_build_keeps_one_copy_of_its_build_context(images: dict[str, str]) -> None:
    """The images build one after another and share BuildKit's copy of the context; built in
    parallel, each made its own (with CI's wheelhouse 3 GB apiece: CI's disk filled on 2026-12-06).
    """
    copies = build_context_copies()
    assert copies, "the build left no copy of its context to measure"
    assert sum(copies) <= max(copies) * 1.05 + 10**6, sorted(copies)


def test_images_run_as_non_root(images: dict[str, str]) -> None:
    for name, image in images.items():
        assert probe(image)["uid"] != 0, name
        assert (
            docker("image", "inspect", "--format", "{{.Config.User}}", image).strip() == "1000:1000"
        )


def test_each_image_holds_only_its_own_dependencies(images: dict[str, str]) -> None:
    assert probe(images["editor"])["modules"] == [
        "diffusers",
        "editor_service",
        "tiny_models",
        "torch",
        "torchvision",
        "transformers",
    ]
    assert probe(images["reward"])["modules"] == [
        "reward_service",
        "tiny_models",
        "torch",
        "torchvision",
        "transformers",
    ]
    assert probe(images["orchestrator"])["modules"] == ["orchestrator"]


def test_service_images_share_one_torch_layer(images: dict[str, str]) -> None:
    """The largest layer (torch) is stored once for both services."""
    layers = {}
    for name in ("editor", "reward"):
        history = docker(
            "history", "--no-trunc", "--format", "{{.Size}}\t{{.CreatedBy}}", images[name]
        )
        torch_steps = [line for line in history.splitlines() if "torch==" in line]
        assert len(torch_steps) == 1, history
        layers[name] = json.loads(
            docker("image", "inspect", "--format", "{{json .RootFS.Layers}}", images[name])
        )
    common = 0
    while layers["editor"][common] == layers["reward"][common]:
        common += 1
    # base, certificates, user and venv, torch: the same first four layers
    assert common >= 4


def test_images_hold_no_wheelhouse_and_no_build_context(images: dict[str, str]) -> None:
    """Wheels and sources are bind-mounted while building, never copied into a layer (the
    mount points stay behind as empty folders)."""
    find = (
        "find / -xdev \\( -name '*.whl' -o -name pyproject.toml -o -name Dockerfile \\) "
        "-not -path '/usr/share/python-wheels/*' -not -path '/opt/venv/lib/*/site-packages/*' "
        "-print; find /tmp -type f -print"
    )
    for name, image in images.items():
        found = docker("run", "--rm", "--entrypoint", "sh", image, "-c", find).split()
        assert found == [], name


def test_service_images_probe_readiness_in_their_healthcheck(images: dict[str, str]) -> None:
    for name in ("editor", "reward"):
        check = json.loads(
            docker("image", "inspect", "--format", "{{json .Config.Healthcheck}}", images[name])
        )
        assert "/ready" in " ".join(check["Test"]), name
