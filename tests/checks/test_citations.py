"""has-citation: [n] forms, code excluded, every citation must name a supplied source."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantgate.checks import CheckConfigError
from quantgate.checks.citations import find_citations

from .helpers import verdict

SOURCES = ["The bridge opened in 1937.", "It was the longest suspension bridge.", {"title": "c", "text": "x"}]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.lists(st.integers(1, 50), min_size=1, max_size=3), max_size=5),
    st.lists(st.text(alphabet=st.characters(blacklist_characters="[]`"), max_size=20), min_size=6, max_size=6),
)
def test_find_citations_round_trip(groups: list[list[int]], words: list[str]) -> None:
    text = words[0]
    for g, w in zip(groups, words[1:]):
        text += "[" + ", ".join(map(str, g)) + "]" + w
    assert find_citations(text) == [n for g in groups for n in g]


@pytest.mark.parametrize(
    ("text", "cited"),
    [
        ("It opened in 1937 [1].", [1]),
        ("Capital[2], river [1][3].", [2, 1, 3]),
        ("See [2-3] and [1–2].", [2, 3, 1, 2]),
        ("[ 1 , 2 ]", [1, 2]),
        ("Use `arr[0]` or\n```py\nx[1]\n```\nthen [2].", [2]),
        ("Markdown [link](http://x) and [note]", []),
        ("", []),
    ],
)
def test_find_citations(text: str, cited: list[int]) -> None:
    assert find_citations(text) == cited


@pytest.mark.parametrize(
    ("output", "passed", "code", "score"),
    [
        ("It opened in 1937 [1] and was the longest [2].", True, "ok", 1.0),
        ("All three agree [1-3].", True, "ok", 1.0),
        ("It opened in 1937.", False, "citation.none", 0.0),
        ("It opened in 1937 [1], see also [4].", False, "citation.unknown_source", 0.5),
        ("Zero-based [0].", False, "citation.unknown_source", 0.0),
    ],
)
def test_has_citation(output: str, passed: bool, code: str, score: float) -> None:
    v = verdict("has-citation", output, sources=SOURCES)
    assert (v.passed, v.code, v.score) == (passed, code, score), v.reason


def test_has_citation_value_overrides_and_negation() -> None:
    assert verdict("has-citation", "x [2]", 2).passed
    assert not verdict("has-citation", "x [2]", ["only one"]).passed
    v = verdict("not-has-citation", "x [1]", sources=SOURCES)
    assert (v.passed, v.code) == (False, "citation.cited")
    assert verdict("not-has-citation", "no citations", sources=SOURCES).passed


def test_has_citation_needs_sources() -> None:
    with pytest.raises(CheckConfigError, match=r"test:1: case.assert\[0\]: has-citation: needs the case's sources"):
        verdict("has-citation", "x [1]")
    with pytest.raises(CheckConfigError, match="expected a list of sources or their count, got string"):
        verdict("has-citation", "x [1]", "two")
    with pytest.raises(CheckConfigError, match=r"case.sources\[0\]: expected a string or an object, got integer"):
        verdict("has-citation", "x [1]", sources=[1])
