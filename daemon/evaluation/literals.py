"""Literal prefilters for regular expressions: strings of which every match must contain one.

``required_literals(regex)`` reads the pattern's syntax tree and returns a
tuple of strings such that any text the regex matches contains at least one
of them, or ``None`` when it cannot say (case-insensitive patterns, or no
literal that every match must have). ``text`` cannot contain a match when no
literal is ``in`` it, so ``str.__contains__`` (a fast substring search) can
skip a regex search that would find nothing. The rule-based labeller uses it
to skip most of its 47 phrase patterns on a report.

The answer is conservative: every part of the tree it does not understand
contributes nothing, which can only make the answer weaker (``None``), never
wrong. The tree comes from the standard library's private regex parser; if
that is missing (another Python), every answer is ``None``.
"""

from __future__ import annotations

import re
from typing import Any

try:  # Python >= 3.11
    from re import _constants as _sre_constants  # type: ignore[attr-defined]
    from re import _parser as _sre_parser  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - an older or another Python: no prefilter
    _sre_parser = None
    _sre_constants = None

Literals = frozenset[str]


def required_literals(regex: re.Pattern[str]) -> tuple[str, ...] | None:
    """Strings of which every match of ``regex`` contains at least one (sorted), or None if unknown."""
    if _sre_parser is None or regex.flags & re.IGNORECASE or not isinstance(regex.pattern, str):
        return None
    try:
        tree = _sre_parser.parse(regex.pattern, regex.flags)
        found = _required(list(tree))
    except Exception:  # noqa: BLE001 - an unfamiliar tree: no prefilter, which is always correct
        return None
    if not found:
        return None
    # a literal that contains another one adds nothing: the shorter one is in the text whenever it is
    return tuple(sorted(literal for literal in found if not any(o != literal and o in literal for o in found)))


def _required(items: list[tuple[Any, Any]]) -> Literals | None:
    """The best literal set of a sequence of nodes: each node that must match offers candidates."""
    c = _sre_constants
    candidates: list[Literals] = []
    run: list[str] = []  # adjacent literal characters
    for op, av in items:
        if op is c.LITERAL:
            run.append(chr(av))
            continue
        if run:
            candidates.append(frozenset(["".join(run)]))
            run = []
        found: Literals | None = None
        if op is c.SUBPATTERN:
            _group, add_flags, _del_flags, sub = av
            if not add_flags & re.IGNORECASE:
                found = _required(list(sub))
        elif op is c.BRANCH:
            alternatives = [_required(list(alternative)) for alternative in av[1]]
            if all(alternatives):
                found = frozenset().union(*alternatives)  # type: ignore[arg-type]
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT, getattr(c, "POSSESSIVE_REPEAT", None)):
            minimum, _maximum, sub = av
            if minimum >= 1:
                found = _required(list(sub))
        # anything else (assertions, classes, anchors, back references...) offers nothing
        if found:
            candidates.append(found)
    if run:
        candidates.append(frozenset(["".join(run)]))
    candidates = [candidate for candidate in candidates if "" not in candidate]
    if not candidates:
        return None
    return max(candidates, key=lambda candidate: (min(map(len, candidate)), -len(candidate)))
