"""Module-name patterns from clients (``target_modules``, ``rank_pattern`` keys), matched without backtracking.

peft treats a string ``target_modules`` as a regular expression and matches it
with Python's ``re``, which backtracks: ``(.+)+X`` against a module name takes
minutes. The hub matches patterns with RE2 (linear time), and refuses the
shapes that make a backtracking engine blow up (a repeat inside a repeat), so
that peft, loading the same config later on a worker or a client, is safe too.
"""

from __future__ import annotations

from typing import Iterable

import re2

from deltahub.errors import InvalidInputError

try:  # Python 3.11+
    from re import _parser as sre_parse  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - Python 3.10
    import sre_parse  # type: ignore[no-redef]

MAX_PATTERN_CHARS = 1024
_OPTIONS = re2.Options()
_OPTIONS.log_errors = False
_REPEATS = {sre_parse.MAX_REPEAT, sre_parse.MIN_REPEAT, getattr(sre_parse, "POSSESSIVE_REPEAT", None)} - {None}


def _nested_repeat(items, inside: bool = False) -> bool:
    for op, arg in items:
        if op in _REPEATS:
            low, high, sub = arg
            unbounded = high == sre_parse.MAXREPEAT or high > 16
            if inside and unbounded:
                return True
            if _nested_repeat(sub, inside or unbounded):
                return True
        elif op is sre_parse.SUBPATTERN:
            if _nested_repeat(arg[-1], inside):
                return True
        elif op is sre_parse.BRANCH:
            if any(_nested_repeat(branch, inside) for branch in arg[1]):
                return True
        elif op in (sre_parse.ASSERT, sre_parse.ASSERT_NOT):
            if _nested_repeat(arg[1], inside):
                return True
    return False


def compile_pattern(pattern: str, what: str) -> "re2._Regexp":
    """An RE2 regex for a client's module-name pattern; InvalidInputError naming the problem otherwise."""
    if not isinstance(pattern, str):
        raise InvalidInputError(f"{what}: a pattern must be a string, not {type(pattern).__name__}")
    if len(pattern) > MAX_PATTERN_CHARS:
        raise InvalidInputError(f"{what}: pattern of {len(pattern)} characters exceeds {MAX_PATTERN_CHARS}")
    try:
        regex = re2.compile(pattern, options=_OPTIONS)
    except re2.error as err:
        detail = err.args[0].decode() if err.args and isinstance(err.args[0], bytes) else str(err)
        raise InvalidInputError(
            f"{what}: {pattern!r} is not a valid pattern ({detail}); patterns use RE2 syntax, without "
            "backreferences or lookarounds"
        ) from None
    try:
        parsed = sre_parse.parse(pattern)
    except Exception as err:  # noqa: BLE001 - RE2 took it, Python's re (which peft uses) does not
        raise InvalidInputError(f"{what}: {pattern!r} is not a pattern Python's re (peft) reads: {err}") from None
    if _nested_repeat(parsed):
        raise InvalidInputError(
            f"{what}: {pattern!r} repeats a repeated group (like '(a+)+'), which backtracking engines such as "
            "the one peft uses take exponential time on; list the module names, or use one level of repetition"
        )
    return regex


def matching(pattern: str, names: Iterable[str], what: str) -> list[str]:
    """The names the whole pattern matches (as peft's ``re.fullmatch`` would), in order."""
    regex = compile_pattern(pattern, what)
    return [n for n in names if regex.fullmatch(n)]


def suffix_matching(key: str, names: Iterable[str], what: str) -> list[str]:
    """Names a ``rank_pattern``/``alpha_pattern`` key applies to: peft matches ``(.*\\.)?KEY$``."""
    compile_pattern(key, what)
    regex = re2.compile(rf"(?:.*\.)?(?:{key})", options=_OPTIONS)
    return [n for n in names if regex.fullmatch(n)]
