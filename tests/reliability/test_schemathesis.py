"""schemathesis against both services' OpenAPI documents, over real HTTP: no answer is a 5xx, and
every answer keeps to the document (status codes, content types, headers, body schemas), and
invalid data is refused.

Each service runs as a real uvicorn process. The bulk of the fuzzing (examples, coverage and
fuzzing phases; valid and invalid data) runs against a fake model at the backend seam: the test is
about HTTP, validation and decoding, which are the same code with any backend. A smaller run goes
against the real tiny models, so that requests that pass validation also go through the real
pipelines; there, valid step counts, sizes and token budgets are lowered so that the run costs
seconds of CPU, not hours (the full ranges are fuzzed against the fakes).

A schema cannot say "a PNG", so generated image strings are never images. In JSON cases generated
as valid, the images are swapped for a real small PNG (a ``map_case`` hook), so that valid
requests get past decoding to the model; invalid cases keep their generated images. The multipart
route keeps its generated file parts (schemathesis would re-judge a case with a real file in it as
invalid); real files of every kind go through that route in test_hostile_inputs.py.

The documents are built from the apps (``create_app(...).openapi()``) at import, because
schemathesis makes one test per operation at collection time (its pytest fixture loader does not
run under pytest 9); a test checks that each service serves exactly that document.
/v1/model/release and /v1/model/load take no input and change the service's state (a released
model answers 503 until it is loaded again), so they are left out.
Deterministic: a fixed seed, derandomized Hypothesis, no example database.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import httpx
import pytest
import schemathesis
from schemathesis import BaseSchema, GenerationMode, HookContext, checks

from editor_service.app import create_app as create_editor
from editor_service.config import EditorSettings
from reward_service.app import create_app as create_reward
from reward_service.config import RewardSettings
from tests.support.images import make_image
from tests.support.servers import ServiceProcess

FAKE_EDITOR = "tests.support.fake_editors:MirrorEditBackend"
FAKE_JUDGE = "tests.support.fake_judges:FakeJudge"
SEED = 20260
FAKE_EXAMPLES = 50  # per operation in the fuzzing phase, as vLLM's schemathesis test
TINY_EXAMPLES = 10  # per operation, fuzzing phase only (a real tiny edit costs seconds)

EDITOR_DOC = create_editor(EditorSettings()).openapi()
REWARD_DOC = create_reward(RewardSettings()).openapi()
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
    checks.negative_data_rejection,
]


def _png(side: int) -> bytes:
    buffer = io.BytesIO()
    make_image(side, side, seed=5).save(buffer, format="PNG")
    return buffer.getvalue()


PNG_B64 = base64.b64encode(_png(24)).decode("ascii")


Case = schemathesis.Case[Any]
F = TypeVar("F", bound=Callable[..., None])


def per_operation(schema: BaseSchema) -> Callable[[F], F]:
    """``schema.parametrize()``, typed: one test per operation of the document."""
    return cast(Callable[[F], F], schema.parametrize())


def load(doc: dict[str, Any], max_examples: int, *, coverage: bool = True) -> BaseSchema:
    """The document as schemathesis tests it; ``coverage`` adds its boundary-value phase (a few
    hundred requests per operation, beyond ``max_examples``)."""
    config = schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "generation": {
                "mode": "all",
                "max-examples": max_examples,
                "deterministic": True,
                "database": "none",
            },
            "phases": {"coverage": {"enabled": coverage}},
        }
    )
    schema = schemathesis.openapi.from_dict(doc, config=config).exclude(path_regex="^/v1/model/")
    schema.hook("map_case")(with_real_images)
    return schema


def generated_as_valid(case: Case) -> bool:
    return case.meta is not None and case.meta.generation.mode == GenerationMode.POSITIVE


def with_real_images(context: HookContext, case: Case) -> Case:
    """In a case generated as valid, put real images where the schema only says 'base64'."""
    body: Any = case.body
    if not isinstance(body, dict) or not generated_as_valid(case):
        return case
    if case.operation.path == "/v1/edits":
        body["image"] = PNG_B64
    for item in body.get("items") or []:
        if isinstance(item, dict):
            item.update(source_image=PNG_B64, edited_image=PNG_B64)
    return case


def affordable_on_a_cpu(context: HookContext, case: Case) -> Case:
    """Tiny-model runs only: costly values that are valid are lowered to cheap valid ones (2
    steps, 32x32, 16 tokens, 4 items), in every case, since a case invalid in one place (say an
    extra query parameter, which is ignored) can be valid everywhere the server looks. Invalid
    values stay as generated."""
    body: Any = case.body
    if not isinstance(body, dict):
        return case
    path = case.operation.path
    if path in ("/v1/edits", "/v1/images/edits"):
        steps = body.get("num_inference_steps", 50)  # absent: the default, 50
        if _int_in(steps, 2, 200):
            body["num_inference_steps"] = "2" if isinstance(steps, str) else 2
    if path == "/v1/edits":
        width, height = body.get("width"), body.get("height")
        if (width is None and height is None) or (_side(width) and _side(height)):
            body.update(width=32, height=32)
    elif path == "/v1/images/edits":
        size = body.get("size", "auto")
        if size == "auto" or (isinstance(size, str) and _valid_size(size)):
            body["size"] = "32x32"
    elif path == "/v1/scores":
        if _int_in(body.get("max_new_tokens", 512), 8, 4096):  # absent: the default, 512
            body["max_new_tokens"] = 16
        if isinstance(body.get("items"), list) and len(body["items"]) > 4:
            body["items"] = body["items"][:4]
    return case


def _number(value: object) -> int | None:
    """An int as the server reads it: pydantic and form fields also take "32" and 32.0."""
    if isinstance(value, str):
        return int(value) if value.isascii() and value.isdigit() and len(value) < 10 else None
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e9:
        return int(value)
    return value if type(value) is int else None


def _int_in(value: object, low: int, high: int) -> bool:
    number = _number(value)
    return number is not None and low <= number <= high


def _side(value: object) -> bool:
    return _int_in(value, 16, 4096) and _number(value) % 16 == 0  # type: ignore[operator]


def _valid_size(size: str) -> bool:
    width, _, height = size.lower().partition("x")
    return _side(width) and _side(height)


def service(module: str, tmp_path: Path, **settings: str) -> ServiceProcess:
    prefix = "EDITOR" if module == "editor_service" else "REWARD"
    env = {"DEVICES": "cpu", "CACHE_DIR": str(tmp_path), **settings}
    return ServiceProcess(
        module, {f"{prefix}_{k}": v for k, v in env.items()}, tmp_path / f"{module}.log"
    )


@pytest.fixture(scope="module")
def fake_editor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("fuzz-editor")
    with service("editor_service", tmp, BACKEND=FAKE_EDITOR).running() as editor:
        yield editor.url


@pytest.fixture(scope="module")
def fake_reward(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("fuzz-reward")
    with service("reward_service", tmp, BACKEND=FAKE_JUDGE).running() as reward:
        yield reward.url


@pytest.fixture(scope="module")
def tiny_editor(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("fuzz-tiny-editor")
    settings = {"MODEL": "tiny", "CACHE_DIR": str(model_cache)}
    with service("editor_service", tmp, **settings).running() as editor:
        yield editor.url


@pytest.fixture(scope="module")
def tiny_reward(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("fuzz-tiny-reward")
    settings = {"MODEL": "tiny", "CACHE_DIR": str(model_cache)}
    with service("reward_service", tmp, **settings).running() as reward:
        yield reward.url


def test_each_service_serves_the_document_that_is_fuzzed(
    fake_editor: str, fake_reward: str
) -> None:
    assert httpx.get(f"{fake_editor}/openapi.json", timeout=10).json() == EDITOR_DOC
    assert httpx.get(f"{fake_reward}/openapi.json", timeout=10).json() == REWARD_DOC


editor_schema = load(EDITOR_DOC, FAKE_EXAMPLES)
reward_schema = load(REWARD_DOC, FAKE_EXAMPLES)
tiny_editor_schema = load(EDITOR_DOC, TINY_EXAMPLES, coverage=False).include(path_regex="edits$")
tiny_editor_schema.hook("map_case")(affordable_on_a_cpu)
tiny_reward_schema = load(REWARD_DOC, TINY_EXAMPLES, coverage=False).include(path="/v1/scores")
tiny_reward_schema.hook("map_case")(affordable_on_a_cpu)


@per_operation(editor_schema)
def test_the_editor_never_answers_5xx_and_keeps_to_its_document(
    case: Case, fake_editor: str
) -> None:
    case.call_and_validate(base_url=fake_editor, checks=CHECKS, timeout=120)


@per_operation(reward_schema)
def test_the_judge_never_answers_5xx_and_keeps_to_its_document(
    case: Case, fake_reward: str
) -> None:
    case.call_and_validate(base_url=fake_reward, checks=CHECKS, timeout=120)


@pytest.mark.tiny
@per_operation(tiny_editor_schema)
def test_the_real_tiny_editor_never_answers_5xx_and_keeps_to_its_document(
    case: Case, tiny_editor: str
) -> None:
    case.call_and_validate(base_url=tiny_editor, checks=CHECKS, timeout=300)


@pytest.mark.tiny
@per_operation(tiny_reward_schema)
def test_the_real_tiny_judge_never_answers_5xx_and_keeps_to_its_document(
    case: Case, tiny_reward: str
) -> None:
    case.call_and_validate(base_url=tiny_reward, checks=CHECKS, timeout=300)
