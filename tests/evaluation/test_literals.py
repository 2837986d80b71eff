"""required_literals: every match of a regex contains one of its literals, on hand-made and generated matches."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.evaluation.baseline import PATTERNS, Pattern
from daemon.evaluation.literals import required_literals


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        (r"\binfarct\w*", ("infarct",)),
        (r"\btumou?r\w*|\bneoplas\w*", ("neoplas", "tumo")),  # "tumo" beats "r": the longer literal
        (r"\b(?:hemi)?atroph\w*", ("atroph",)),  # an optional group is not required
        (r"(?:ab)+c", ("ab",)),  # a repeat of at least one is
        (r"a(?:b)*c", ("a",)),  # ties go to the first candidate of the highest score; both length 1
        (r"\bexclude[sd]?\b|\bexcluded\b", ("exclude",)),  # "excluded" adds nothing to "exclude"
        (r"\bstroke|\w+", None),  # one alternative needs no literal: nothing is required
        (r"\d+\s*mm", ("mm",)),
        (r"[a-z]+", None),
        (r"(?i)infarct", None),  # case-insensitive: a literal test would be wrong
        (r"(?i:infarct)x", ("x",)),
        (r"(?=abc)a", ("a",)),  # a lookahead's text is not part of the match
    ],
)
def test_required_literals(pattern: str, expected: tuple[str, ...] | None) -> None:
    assert required_literals(re.compile(pattern)) == expected


def test_every_baseline_pattern_has_a_prefilter() -> None:
    """The labeller's speed relies on it; a pattern without one still works, but is searched on every sentence."""
    assert all(pattern.literals for pattern in PATTERNS)
    assert all(pattern.literals == required_literals(pattern.regex) for pattern in PATTERNS)


@pytest.mark.parametrize("pattern", PATTERNS, ids=lambda pattern: pattern.regex.pattern[:30])
@settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_generated_matches_contain_a_literal(pattern: Pattern, data: st.DataObject) -> None:
    """Strings built to match a labeller pattern (hypothesis's from_regex) contain one of its literals."""
    assert pattern.literals is not None
    text = data.draw(st.from_regex(pattern.regex))
    match = pattern.regex.search(text)
    assert match is not None
    assert any(literal in match.group(0) for literal in pattern.literals), match.group(0)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("abcdefghilmnoprstuvy .,;-()?\n")), max_size=60))
def test_no_literal_no_match(text: str) -> None:
    for regex in (re.compile(r"\bab(?:c|de)+f?\b"), re.compile(r"\b(?:hemi)?atroph\w*|\bvolume\s+loss\b")):
        literals = required_literals(regex)
        assert literals is not None
        if not any(literal in text for literal in literals):
            assert regex.search(text) is None
