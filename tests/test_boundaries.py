"""Who may import what: API processes stay free of the model stack; the CLI never needs torch;
no file imports itself through others."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, requires
from pathlib import Path

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


SOURCES = Path(__file__).resolve().parents[1]
COMPONENTS = (
    "shared_schemas",
    "service_kit",
    "tiny_models",
    "editor_service",
    "reward_service",
    "orchestrator",
)


def _module_files() -> dict[str, Path]:
    """Every module of every component, by dotted name (a package by its ``__init__``)."""
    modules: dict[str, Path] = {}
    for component in COMPONENTS:
        src = SOURCES / component / "src"
        for path in sorted(src.rglob("*.py")):
            parts = list(path.relative_to(src).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports anywhere in its file: at the top, inside functions
    (lazy imports) and under ``TYPE_CHECKING`` alike (a cycle of files is a cycle however it is
    hidden)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        found.update(t for t in targets if t in modules and t != name)
    return found


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    cycles.append(sorted(group))
    return cycles


def test_import_cycles_are_found_through_lazy_and_type_checking_imports() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_cycles(graph) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_no_file_imports_itself_through_others() -> None:
    modules = _module_files()
    assert {"service_kit.errors", "orchestrator.cli", "editor_service.app"} <= modules.keys()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert import_cycles(graph) == []


@pytest.mark.parametrize(
    "module",
    ["editor_service.backends.diffusers_backend", "reward_service.backends.hf.loading"],
)
def test_model_loaders_import_the_tiny_builders_only_when_asked(module: str) -> None:
    """Test-model builders live in tiny_models, imported for the built-in sources alone."""
    assert not {m for m in modules_after_import(module) if m.split(".")[0] == "tiny_models"}
