"""The families the editor hosts: the one place a family is registered."""

from __future__ import annotations

from editor_service.families import flux_kontext, longcat_image, qwen_image
from editor_service.families.base import EditorFamily
from service_kit.models.refusals import ConfigurationRefused
from service_kit.models.sources import SourceKind

FAMILIES: tuple[EditorFamily, ...] = (qwen_image.FAMILY, flux_kontext.FAMILY, longcat_image.FAMILY)


def family_named(name: str) -> EditorFamily:
    return next(f for f in FAMILIES if f.name == name)


def family_of_pipeline(class_name: str) -> EditorFamily:
    """The family whose pipeline this is; refused (ConfigurationRefused: final) naming the ones
    hosted if none."""
    for family in FAMILIES:
        if class_name in family.pipeline_classes:
            return family
    known = ", ".join(c for f in FAMILIES for c in f.pipeline_classes)
    raise ConfigurationRefused(
        f"{class_name} is not an editing pipeline this service hosts ({known}): set "
        "EDITOR_MODEL to a model of a hosted family"
    )


def family_of_builtin(variant: str) -> EditorFamily:
    return next(f for f in FAMILIES if any(v == variant for _, v in f.builtins.values()))


def family_of_model(model: str) -> EditorFamily | None:
    """The family a model setting names before anything loads: a built-in name or a family's
    hub id; None for a folder or another hub id (its pipeline class says, at load)."""
    name = model.strip()
    return next(
        (f for f in FAMILIES if name in f.builtins or name.lower() in map(str.lower, f.hub_ids)),
        None,
    )


def builtin_sources() -> dict[str, tuple[SourceKind, str]]:
    """Every family's built-in model names: name -> (kind, variant)."""
    sources: dict[str, tuple[SourceKind, str]] = {}
    for family in FAMILIES:
        for name, (kind, variant) in family.builtins.items():
            sources[name] = ("tiny" if kind == "tiny" else "random-full", variant)
    return sources
