"""YAML a user wrote, read within bounds: its size, its nesting and what its aliases expand to.

PyYAML's safe loader builds an alias (``*name``) as the very object its anchor (``&name``)
made, so nine lines of anchors that each repeat the one before ten times ("billion laughs")
load in an instant into a small graph that is 10⁹ values as a tree; whatever walks that tree
next (validation, JSON, a copy) never finishes. :func:`load_yaml` therefore

1. refuses text above :data:`MAX_YAML_BYTES` before reading any of it;
2. composes the document's node graph (linear in the text), stopping at the first node nested
   deeper than :data:`MAX_YAML_DEPTH` levels, and refuses a graph that stands for more than
   :data:`MAX_YAML_VALUES` values once every alias is expanded; the count is memoized per
   node, so it is linear too;
3. only then builds the Python objects, turning a value Python cannot hold (an integer of
   5,000 digits, a 13th month) into a YAML error instead of a traceback.

Aliases within the bounds keep working (an anchored block reused in the same spec).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

MAX_YAML_BYTES: Final = 1024 * 1024
"""A job spec is a few kilobytes; the REST API takes bodies up to 1 MiB as well."""
MAX_YAML_VALUES: Final = 100_000
"""Scalars, lists and maps with every alias expanded; a spec at every limit of
:mod:`scheduler.domain.spec_limits` has under 10,000."""
MAX_YAML_DEPTH: Final = 64
"""A job spec is five levels deep; a model config inside it a few more."""


class YamlLimitError(yaml.YAMLError):
    """The text is above one of :func:`load_yaml`'s bounds; the message says which."""


def check_yaml_size(size_bytes: int) -> None:
    """Raise :class:`YamlLimitError` for text of ``size_bytes`` above :data:`MAX_YAML_BYTES`."""
    if size_bytes > MAX_YAML_BYTES:
        raise YamlLimitError(f"{size_bytes} bytes is above the limit of {MAX_YAML_BYTES} "
                             f"(1 MiB) for a YAML file; a job spec is a few kilobytes")


def read_yaml_bytes(path: Path) -> bytes:
    """A YAML file's bytes, never more than :data:`MAX_YAML_BYTES` + 1 read whatever the file
    grows to; :class:`YamlLimitError` above the bound (OSError as open raises it)."""
    with path.open("rb") as handle:
        raw = handle.read(MAX_YAML_BYTES + 1)
    check_yaml_size(len(raw))
    return raw


def load_yaml(text: str) -> Any:
    """The one document in ``text`` as Python objects (None when empty), within the bounds of
    the module docstring; raises :class:`yaml.YAMLError` (a :class:`YamlLimitError` for a
    bound)."""
    # len() counts characters, never more than bytes: skip encoding text that is too long.
    check_yaml_size(len(text))
    check_yaml_size(len(text.encode("utf-8", "surrogatepass")))
    loader = _DepthBoundLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_values(node, {}, set(), depth=1)
        try:
            return loader.construct_document(node)
        except (ValueError, OverflowError) as err:
            raise yaml.constructor.ConstructorError(
                problem=f"a value cannot be read ({err})") from None
    finally:
        loader.dispose()


class _DepthBoundLoader(yaml.SafeLoader):
    """The safe loader, refusing a node nested deeper than :data:`MAX_YAML_DEPTH` as soon as
    it meets it (PyYAML's composer recurses once per level)."""

    _depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise _too_deep()
            node: Node | None = super().compose_node(parent, index)
            return node
        finally:
            self._depth -= 1


def _too_deep() -> YamlLimitError:
    return YamlLimitError(f"nested more than {MAX_YAML_DEPTH} levels deep; a job spec has a "
                          f"handful")


def _expanded_values(node: Node, sizes: dict[int, int], open_nodes: set[int],
                     depth: int) -> int:
    """How many values ``node`` stands for with its aliases expanded (``sizes`` memoizes it
    per node); raises :class:`YamlLimitError` above a bound or for an alias to itself."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_nodes:
        raise YamlLimitError("an alias refers to its own anchor (a recursive structure); a job "
                             "spec is a tree")
    if depth > MAX_YAML_DEPTH:
        raise _too_deep()
    children: list[Node] = []
    if isinstance(node, SequenceNode):
        children = list(node.value)
    elif isinstance(node, MappingNode):
        children = [part for pair in node.value for part in pair]
    open_nodes.add(key)
    total = 1
    for child in children:
        total += _expanded_values(child, sizes, open_nodes, depth + 1)
        if total > MAX_YAML_VALUES:
            raise YamlLimitError(f"the YAML stands for more than {MAX_YAML_VALUES} values once "
                                 f"its aliases (*name) are expanded; a job spec has a few "
                                 f"hundred: repeat less through anchors")
    open_nodes.discard(key)
    sizes[key] = total
    return total
