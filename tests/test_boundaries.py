"""Who may import what: API processes stay free of the model stack; the CLI never needs torch."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, requires

import pytest

HEAVY = ("torch", "diffusers", "transformers")


def modules_after_import(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_importing_the_editor_app_does_not_import_torch() -> None:
    loaded = modules_after_import("editor_service.app")
    assert not loaded & set(HEAVY)


def test_shared_schemas_import_nothing_but_pydantic() -> None:
    loaded = modules_after_import("shared_schemas")
    assert not loaded & {*HEAVY, "fastapi", "starlette", "httpx", "PIL"}


def _closure(distribution: str) -> set[str]:
    """Every distribution ``distribution`` needs, transitively, as installed here."""
    seen: set[str] = set()
    todo = [distribution]
    while todo:
        name = todo.pop()
        key = name.lower().replace("_", "-")
        if key in seen:
            continue
        seen.add(key)
        try:
            needs = requires(name) or []
        except PackageNotFoundError:
            continue
        for requirement in needs:
            if "extra ==" in requirement:
                continue
            match = re.match(r"[A-Za-z0-9._-]+", requirement)
            if match:
                todo.append(match.group(0))
    return seen


@pytest.mark.parametrize("component", ["editbench-orchestrator", "editbench-shared-schemas"])
def test_component_dependency_set_has_no_model_stack(component: str) -> None:
    closure = _closure(component)
    assert component in closure and "pydantic" in closure
    assert not closure & {"torch", "diffusers", "transformers", "torchvision"}


def test_each_service_pins_its_own_model_stack() -> None:
    for service in ("editbench-editor", "editbench-reward"):
        pins = {r.split("==")[0]: r.split("==")[1] for r in requires(service) or [] if "==" in r}
        assert {"torch", "transformers"} <= pins.keys(), service
