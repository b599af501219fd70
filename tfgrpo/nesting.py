"""JSON and YAML from outside the process (model replies, data files, config files, run records,
eval results), parsed with their nesting bounded.

Python's JSON parser and PyYAML's composer recurse once per level of nesting, so ``[[[[...``
from a server or in a file would end in RecursionError wherever it is parsed. Here the depth is
bounded before it can matter: :func:`json_loads` measures the nesting of the text first (brackets
outside strings, at C speed) and :func:`yaml_load` stops composing past the bound; either
refuses deeper input with a ValueError (a ``yaml.YAMLError`` with its line for YAML), handled
as any other bad input. The experience store, which never imports tfgrpo, has the same guard
(``experience_store.pack_format.load_json``).
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

import yaml

MAX_DEPTH = 100  # levels of arrays/objects (mappings/sequences); far below the recursion limit

_STRING = re.compile(rb'"[^"]*"')  # once escaped backslashes and quotes are gone
_NOT_A_BRACKET = bytes(c for c in range(256) if c not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


class TooDeep(ValueError):
    """Input nested deeper than the reader allows."""


def json_depth(text: str | bytes) -> int:
    """How deep the arrays and objects of JSON text nest, measured without parsing it (brackets
    inside strings do not count); for text that is not JSON, at least as deep as a parser goes."""
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_A_BRACKET)
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def json_loads(text: str | bytes, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads``; text nested deeper than ``max_depth`` is refused first (:class:`TooDeep`)."""
    if json_depth(text) > max_depth:
        raise TooDeep(f"JSON nested deeper than {max_depth} levels")
    return json.loads(text)


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader, refusing mappings and sequences nested past ``max_depth``."""

    max_depth = MAX_DEPTH
    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self._depth >= self.max_depth:
            raise yaml.composer.ComposerError(
                None, None, f"nested deeper than {self.max_depth} levels", self.peek_event().start_mark
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def yaml_load(text: str | bytes, max_depth: int = MAX_DEPTH) -> Any:
    """``yaml.safe_load`` with nesting bounded: deeper input raises a ``yaml.YAMLError`` with its mark."""
    loader = _BoundedLoader(text)
    loader.max_depth = max_depth
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
