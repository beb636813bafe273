"""``has-citation``: the output cites at least one source as ``[n]``, and every ``[n]`` exists.

Sources are the case's ``sources`` list (numbered from 1, as they are shown to the model), or given
directly as ``value`` (a list of sources or just their count). Recognised forms: ``[2]``,
``[1, 3]``, ``[1][3]``, ``[2-4]``/``[2–4]``; a citation may follow a word directly ("capital[1]").
Code is skipped (fenced blocks and inline backticks), so ``arr[0]`` in a snippet is not a citation;
outside code, an index expression in prose is indistinguishable from a citation and counts as one.
"""

from __future__ import annotations

import re
from typing import Any

from quantgate.checks.registry import CheckFn, CheckType, CompileContext
from quantgate.checks.text import type_name
from quantgate.checks.types import Outcome, Output

__all__ = ["CITATION_CHECKS", "find_citations"]

_CITE_RE = re.compile(r"\[\s*(\d{1,4}(?:\s*(?:,|-|–)\s*\d{1,4})*)\s*\]")
_CODE_RE = re.compile(r"```.*?(?:```|\Z)|`[^`\n]*`", re.S)
_MAX_RANGE = 1000  # a range wider than any source list is a typo or not a citation; don't expand it


def find_citations(text: str) -> list[int]:
    """Source numbers cited in ``text``, in order of appearance (ranges expanded), code excluded."""
    if "[" not in text:
        return []
    if "`" in text:
        text = _CODE_RE.sub(" ", text)
    out: list[int] = []
    for m in _CITE_RE.finditer(text):
        for part in m.group(1).split(","):
            bounds = re.split(r"\s*[-–]\s*", part.strip())
            if len(bounds) == 1:
                out.append(int(bounds[0]))
            else:
                lo, hi = int(bounds[0]), int(bounds[-1])
                out.extend(range(lo, hi + 1) if 0 <= hi - lo <= _MAX_RANGE else (lo, hi))
    return out


def _has_citation(value: Any, ctx: CompileContext) -> CheckFn:
    if value is None:
        if ctx.case.sources is None:
            raise ctx.error("needs the case's sources: give case.sources, or the number of sources as value", "")
        n_sources = len(ctx.case.sources)
    elif isinstance(value, list):
        n_sources = len(value)
    elif isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        n_sources = value
    else:
        raise ctx.error(f"expected a list of sources or their count, got {type_name(value)}")

    def check(out: Output) -> Outcome:
        cited = find_citations(out.text)
        if not cited:
            return Outcome(False, 0.0, "no [n] citation in the output", "citation.none")
        unknown = sorted({n for n in cited if not 1 <= n <= n_sources})
        if unknown:
            valid = sum(1 for n in cited if 1 <= n <= n_sources)
            return Outcome(False, valid / len(cited), f"cites {', '.join(f'[{n}]' for n in unknown)} but only "
                           f"{n_sources} source(s) were supplied", "citation.unknown_source")
        distinct = sorted(set(cited))
        return Outcome(True, 1.0, f"cites {', '.join(f'[{n}]' for n in distinct)} of {n_sources} source(s)",
                       "citation.cited")

    return check


CITATION_CHECKS: tuple[CheckType, ...] = (
    CheckType("has-citation", _has_citation, "at least one [n] citation, each naming a supplied source "
              "(case.sources, or value: sources or their count)"),
)
