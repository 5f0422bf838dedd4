"""The protocols a service offers: the built-in YAML files plus a user folder, each with its hash.

A protocol's hash is the sha256 of its canonical definition: the validated document with every
default filled in, as JSON with sorted keys, no insignificant whitespace and UTF-8 text
(``canonical_json``). It covers every prompt, label, answer instruction and combination rule, so
any change that can change a score changes the hash, while reformatting the YAML does not.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ValidationError

from reward_service.protocols.definition import ProtocolSpec
from service_kit.errors import InvalidInput, validation_message
from shared_schemas import ProtocolInfo, ProtocolQuestion, QuestionSetInfo

logger = logging.getLogger(__name__)

_SUFFIXES = (".yaml", ".yml")


class ProtocolFileError(ValueError):
    """A protocol file cannot be used; the message names the file and the problem."""


class UnknownProtocol(InvalidInput):
    error_type = "unknown_protocol"


# Fields added after protocols were first hashed, with their defaults: left out of the canonical
# document while at the default, so a protocol that does not use them keeps the hash that older
# runs recorded (their job ids and compare's pairing read it).
_LATER_FIELDS: dict[str, object] = {"question_sets": {}}
_LATER_QUESTION_FIELDS: dict[str, object] = {
    "scale": None,
    "labels": {},
    "variants": {},
}
# Never hashed: they cannot change a score (a superseded protocol keeps its hash).
_UNHASHED = ("superseded_by",)


def canonical_document(spec: ProtocolSpec) -> dict[str, Any]:
    """The validated definition with defaults filled in (what GET /v1/protocols/{name} shows
    and the hash is taken of); later fields at their defaults are left out."""
    document: dict[str, Any] = spec.model_dump(mode="json", exclude=set(_UNHASHED))
    for name, default in _LATER_FIELDS.items():
        if document.get(name) == default:
            document.pop(name, None)
    for question in document.get("questions", []):
        for name, default in _LATER_QUESTION_FIELDS.items():
            if question.get(name) == default:
                question.pop(name, None)
    return document


def canonical_json(spec: ProtocolSpec) -> bytes:
    """The exact bytes a protocol's hash is taken of."""
    document = canonical_document(spec)
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def protocol_hash(spec: ProtocolSpec) -> str:
    return hashlib.sha256(canonical_json(spec)).hexdigest()


@dataclass(frozen=True, slots=True)
class Protocol:
    spec: ProtocolSpec
    hash: str
    source: Literal["builtin", "file"]
    origin: str  # the file it came from

    @property
    def name(self) -> str:
        return self.spec.name

    def info(self) -> ProtocolInfo:
        return ProtocolInfo(
            name=self.spec.name,
            hash=self.hash,
            description=self.spec.description,
            questions=[
                ProtocolQuestion(
                    name=q.name, images=list(q.images), answers=q.scores, scale=q.scale
                )
                for q in self.spec.questions
            ],
            scale=self.spec.scale,
            metrics=[m.info() for m in self.spec.metrics],
            headline=self.spec.headline_metric,
            modes=self.spec.modes,
            categories=sorted(self.spec.categories),
            source=self.source,
            images_per_item=self.spec.images_per_item,
            question_sets=[
                QuestionSetInfo(
                    name=name,
                    categories=spec.categories,
                    questions=[q.name for q in questions],
                    metrics=self.spec.metrics_of(questions),
                )
                for (name, spec), questions in zip(
                    self.spec.question_sets.items(), self.spec.question_set_lists(), strict=True
                )
            ],
            superseded_by=self.spec.superseded_by,
        )


def parse_protocol(text: str, origin: str, source: Literal["builtin", "file"]) -> Protocol:
    """Validate one YAML document; raises ProtocolFileError naming ``origin``."""
    try:
        document: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ProtocolFileError(f"{origin}: not valid YAML: {exc}") from None
    if not isinstance(document, dict):
        raise ProtocolFileError(f"{origin}: a protocol file holds one mapping (name, questions...)")
    try:
        spec = ProtocolSpec.model_validate(document)
    except ValidationError as exc:
        message, _ = validation_message(exc.errors())
        raise ProtocolFileError(f"{origin}: {message}") from None
    return Protocol(spec=spec, hash=protocol_hash(spec), source=source, origin=origin)


def builtin_protocols() -> list[Protocol]:
    folder = resources.files("reward_service.protocols").joinpath("builtin")
    return [
        parse_protocol(entry.read_text(encoding="utf-8"), f"builtin:{entry.name}", "builtin")
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(_SUFFIXES)
    ]


def folder_protocols(folder: Path) -> list[Protocol]:
    if not folder.is_dir():
        raise ProtocolFileError(f"{folder}: the protocols folder does not exist")
    return [
        parse_protocol(path.read_text(encoding="utf-8"), str(path), "file")
        for path in sorted(folder.iterdir())
        if path.suffix in _SUFFIXES and path.is_file()
    ]


class ProtocolRegistry:
    """Protocols by name; names are unique (a user file cannot shadow a built-in)."""

    def __init__(self, protocols: list[Protocol]) -> None:
        self._by_name: dict[str, Protocol] = {}
        for protocol in protocols:
            clash = self._by_name.get(protocol.name)
            if clash is not None:
                raise ProtocolFileError(
                    f"{protocol.origin}: protocol {protocol.name!r} is already defined by "
                    f"{clash.origin}; give it another name"
                )
            self._by_name[protocol.name] = protocol

    @classmethod
    def load(cls, user_folder: Path | None = None) -> ProtocolRegistry:
        """The built-in protocols, plus every *.yaml / *.yml file in ``user_folder``."""
        protocols = builtin_protocols()
        if user_folder is not None:
            protocols += folder_protocols(user_folder)
        registry = cls(protocols)
        for protocol in registry:
            successor = protocol.spec.superseded_by
            if successor is not None and registry.find(successor) is None:
                raise ProtocolFileError(
                    f"{protocol.origin}: superseded_by names {successor!r}, which is not a "
                    f"protocol here ({', '.join(registry.names)})"
                )
        for protocol in registry:
            logger.info("protocol %s (%s) sha256 %s", protocol.name, protocol.origin, protocol.hash)
        return registry

    def __iter__(self) -> Any:
        return iter(sorted(self._by_name.values(), key=lambda p: p.name))

    @property
    def names(self) -> list[str]:
        return sorted(self._by_name)

    def find(self, name: str) -> Protocol | None:
        return self._by_name.get(name)

    def get(self, name: str) -> Protocol:
        """The named protocol, or UnknownProtocol (a 400 naming it and the ones on offer)."""
        protocol = self._by_name.get(name)
        if protocol is None:
            raise UnknownProtocol(
                f"unknown protocol {name!r}; this service offers: {', '.join(self.names)}",
                param="protocol",
            )
        return protocol
