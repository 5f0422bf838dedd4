"""The backend a spec names: the built-in transformers or openai backend, or any
``module:Class``."""

from __future__ import annotations

from reward_service.backends.base import BackendSpec, JudgeBackend
from service_kit.models.backend_spec import custom_backend_class


def make_backend(spec: BackendSpec) -> JudgeBackend:
    """Build the backend the spec names; heavy modules are imported only here."""
    if spec.backend == "transformers":
        from reward_service.backends.transformers_backend import TransformersJudgeBackend

        return TransformersJudgeBackend(spec)
    if spec.backend == "openai":
        from reward_service.backends.openai_backend import OpenAIJudgeBackend

        return OpenAIJudgeBackend(spec)
    backend: JudgeBackend = custom_backend_class(spec, "'transformers', 'openai'")(spec)
    return backend
