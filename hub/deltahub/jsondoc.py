"""Reading JSON a client sent: bounded in nesting, errors that name the document.

``json.loads`` recurses: a document nested thousands deep raises
RecursionError (a crash, not an answer), and hundreds deep already cost
every later reader. One reader for configs, safetensors headers, dataset
rows, lineage and request parameters.
"""

from __future__ import annotations

import json
from typing import Any

from deltahub.errors import InvalidInputError
from deltahub.limits import InputLimits

DEFAULT_MAX_DEPTH = InputLimits.max_json_depth


def depth(doc: Any) -> int:
    """Nesting depth of a parsed document (a scalar is 0, ``[]`` is 1), without recursion."""
    deepest = 0
    stack = [(doc, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest


def _unique(what: str):
    def pairs(items: list[tuple[str, Any]]) -> dict:
        doc = dict(items)
        if len(doc) != len(items):
            seen: set[str] = set()
            dup = next(k for k, _ in items if k in seen or seen.add(k))
            raise InvalidInputError(f"{what}: key {dup!r} appears twice in one object")
        return doc

    return pairs


def _no_constant(what: str):
    def refuse(name: str):
        raise InvalidInputError(f"{what}: {name} is not a JSON number; give a finite value")

    return refuse


def loads(text: str | bytes, what: str, *, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """A parsed document; InvalidInputError for bad JSON, duplicate keys or nesting past ``max_depth``."""
    try:
        doc = json.loads(text, object_pairs_hook=_unique(what), parse_constant=_no_constant(what))
    except RecursionError:
        raise InvalidInputError(f"{what}: JSON nested too deeply to read (the limit is {max_depth} levels)") from None
    except ValueError as err:  # bad JSON, bad UTF-8, or an integer of more digits than Python converts
        raise InvalidInputError(f"{what}: not valid JSON ({err})") from None
    found = depth(doc)
    if found > max_depth:
        raise InvalidInputError(f"{what}: JSON nested {found} levels deep; the limit is {max_depth} (--max-json-depth)")
    return doc


def loads_object(text: str | bytes, what: str, *, max_depth: int = DEFAULT_MAX_DEPTH) -> dict:
    doc = loads(text, what, max_depth=max_depth)
    if not isinstance(doc, dict):
        raise InvalidInputError(f"{what}: must be a JSON object")
    return doc
