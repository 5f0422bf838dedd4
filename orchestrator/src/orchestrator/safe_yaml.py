"""YAML that cannot expand: no aliases, bounded nesting.

An alias repeats the node it names, so a few hundred bytes of anchors that refer to each other
become megabytes (or gigabytes) once loaded: the "billion laughs". editbench's YAML files
(manifests, reporting declarations, config files) never need one, so an alias is refused with its
line, as is nesting deeper than `MAX_DEPTH` (which would otherwise end in a RecursionError).
The errors are `yaml.YAMLError`s, so callers report them as any other YAML mistake.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.nodes import Node

MAX_DEPTH = 64


class _NoAliasLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no types
    """SafeLoader that refuses aliases (and so merge keys that use them) and deep nesting."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise ComposerError(
                None,
                None,
                f"found the alias *{event.anchor}: aliases are not allowed here (they can "
                "multiply the data); write the values out",
                event.start_mark,
            )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise ComposerError(
                    None,
                    None,
                    f"nested deeper than {MAX_DEPTH} levels",
                    self.peek_event().start_mark,
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` without aliases or deep nesting (both a `yaml.YAMLError`)."""
    loader = _NoAliasLoader(text)
    try:
        return loader.get_single_data()
    except ValueError as exc:  # a value the constructor cannot build (a 5000-digit integer)
        raise yaml.YAMLError(f"a value cannot be read: {exc}") from None
    finally:
        loader.dispose()
