"""Judge protocols: the questions asked, with which images and prompts, and how they combine."""

from reward_service.protocols.definition import ProtocolSpec, RenderedQuestion, render
from reward_service.protocols.registry import (
    Protocol,
    ProtocolFileError,
    ProtocolRegistry,
    UnknownProtocol,
    canonical_document,
    canonical_json,
    protocol_hash,
)

__all__ = [
    "Protocol",
    "ProtocolFileError",
    "ProtocolRegistry",
    "ProtocolSpec",
    "RenderedQuestion",
    "UnknownProtocol",
    "canonical_document",
    "canonical_json",
    "protocol_hash",
    "render",
]
