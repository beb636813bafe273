"""Shared reading and formatting of a comparison report for every report format.

The report (``quantgate.evaluate.compare.compare_runs`` plus ``report["gate"]``) is a plain dict
whose optional parts really are optional: ``tokens`` is None when either side is a server,
``consistency`` is ``{"cases": 0}`` without repeated samples, ``length`` is ``{}`` without cases,
cost keys exist only with a cost model, ``scheme``/``weight_bytes`` only for local sides, and a
report built by ``compare_runs`` alone has no ``gate``. Every renderer reads through these
helpers, so a missing or non-finite value shows as a dash everywhere instead of raising in one
format and not another. Formatting is plain text; each renderer escapes for its own medium.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any

__all__ = [
    "DASH", "Report", "as_float", "consistency_summary", "divergence_note", "failed_codes", "flip_counts", "fmt_bytes",
    "fmt_change", "fmt_interval", "fmt_num", "fmt_p", "fmt_pct", "fmt_rate", "fmt_signed_pct", "fragile_summary",
    "gate_rules", "length_summary", "near_ties_summary",
    "one_line", "pass_rate_scopes", "plural", "proportion_stderr", "ratio", "sanitize", "side_label", "sorted_flips",
    "token_block", "truncate", "verdict", "visible_controls",
]

Report = dict[str, Any]
DASH = "-"
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f]")


def as_float(value: Any) -> float | None:
    """``value`` as a finite float; None for None, booleans, non-numbers, NaN and infinities."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def sanitize(obj: Any) -> Any:
    """A copy of ``obj`` with every non-finite float replaced by None and tuples made lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): sanitize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [sanitize(v) for v in obj]
    return obj


def fmt_num(value: Any, digits: int = 3) -> str:
    """Significant-digit formatting (``0.0123``, ``1.23e-05``); a dash when missing."""
    f = as_float(value)
    if f is None:
        return DASH
    if isinstance(value, int):
        return str(value)
    return f"{f:.{digits}g}"


def fmt_pct(value: Any, digits: int = 1) -> str:
    f = as_float(value)
    return DASH if f is None else f"{100 * f:.{digits}f}%"


def fmt_signed_pct(value: Any, digits: int = 1) -> str:
    f = as_float(value)
    return DASH if f is None else f"{100 * f:+.{digits}f} pp"


def fmt_interval(low: Any, high: Any, pct: bool = False, signed: bool = False, digits: int = 3) -> str:
    """``[low, high]``; as percentages (``[58.2, 74.7]``) when ``pct``; a dash when either end is missing."""
    lo, hi = as_float(low), as_float(high)
    if lo is None or hi is None:
        return DASH
    if pct:
        spec = "+.1f" if signed else ".1f"
        return f"[{100 * lo:{spec}}, {100 * hi:{spec}}]"
    spec = f"+.{digits}g" if signed else f".{digits}g"
    return f"[{lo:{spec}}, {hi:{spec}}]"


def fmt_rate(block: dict[str, Any] | None) -> str:
    """A Wilson block ``{estimate, low, high}`` as ``66.9% [58.2, 74.7]``."""
    if not block:
        return DASH
    return f"{fmt_pct(block.get('estimate'))} {fmt_interval(block.get('low'), block.get('high'), pct=True)}"


def fmt_change(diff: dict[str, Any] | None) -> str:
    """A paired difference block as ``-33.1 pp [-41.8, -24.7]``."""
    d = diff or {}
    return f"{fmt_signed_pct(d.get('estimate'))} {fmt_interval(d.get('low'), d.get('high'), pct=True, signed=True)}"


def length_summary(report: Report) -> str | None:
    """``mean completion tokens 60.1 -> 70.2, ratio x1.17 [1.1, 1.2], Wilcoxon p=0.002``; None without lengths."""
    length = report.get("length") or {}
    if not length.get("ratio") and length.get("baseline_mean") is None:
        return None
    r = length.get("ratio") or {}
    return (f"mean completion tokens {fmt_num(length.get('baseline_mean'), 4)} -> "
            f"{fmt_num(length.get('candidate_mean'), 4)}, ratio x{fmt_num(r.get('estimate'), 4)} "
            f"{fmt_interval(r.get('low'), r.get('high'), digits=4)}, Wilcoxon p={fmt_p(length.get('wilcoxon_p'))}")


def consistency_summary(report: Report) -> str | None:
    """``3 sampled cases: passing share 100.0% -> 66.7%, distinct answers 1 -> 2``; None without any."""
    cons = report.get("consistency") or {}
    if not cons.get("cases"):
        return None
    b, c = cons.get("baseline") or {}, cons.get("candidate") or {}
    return (f"{plural(int(cons['cases']), 'sampled case')}: passing share {fmt_pct(b.get('pass_share'))} -> "
            f"{fmt_pct(c.get('pass_share'))}, distinct answers {fmt_num(b.get('distinct_mean'))} -> "
            f"{fmt_num(c.get('distinct_mean'))}")


def fmt_p(value: Any) -> str:
    f = as_float(value)
    if f is None:
        return DASH
    return "<0.001" if f < 0.001 else f"{f:.3f}"


def fmt_bytes(value: Any) -> str:
    f = as_float(value)
    return DASH if f is None else f"{f / 2 ** 20:,.1f} MiB"


def proportion_stderr(p: Any, n: Any) -> float | None:
    """sqrt(p(1-p)/n), the standard error lm-eval reports for an accuracy; None without data."""
    pf, nf = as_float(p), as_float(n)
    if pf is None or nf is None or nf <= 0:
        return None
    return math.sqrt(max(0.0, pf * (1 - pf)) / nf)


def ratio(numerator: Any, denominator: Any) -> float | None:
    num, den = as_float(numerator), as_float(denominator)
    if num is None or den is None or den == 0:
        return None
    return num / den


def visible_controls(text: str) -> str:
    """Control characters other than newline and tab shown as their Unicode pictures (ESC as ␛).

    Model outputs are untrusted: an ESC sequence would recolour or rewrite the user's terminal, and
    NUL or other C0 controls are invalid in XML and a parse error in HTML.
    """
    return _CONTROLS.sub(lambda m: "\u2421" if m.group() == "\x7f" else chr(0x2400 + ord(m.group())),
                         text.replace("\r\n", "\n"))


def one_line(text: str) -> str:
    """Newlines and tabs made visible so an output fits one table cell; controls as pictures."""
    return visible_controls(text).replace("\n", "\u21b5").replace("\t", "\u2192")


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "\u2026"


def verdict(report: Report) -> str:
    """``pass``/``warn``/``fail``, or ``none`` when the report was never gated."""
    gate = report.get("gate") or {}
    return str(gate.get("verdict") or "none")


def gate_rules(report: Report) -> list[dict[str, Any]]:
    return list((report.get("gate") or {}).get("rules") or [])


def side_label(report: Report, side: str) -> str:
    """What a side is, short: its target (a path or URL), its scheme when known, its run id."""
    block = report.get(side) or {}
    target = str(block.get("target") or block.get("path") or block.get("url") or side)
    extras = [str(block["scheme"])] if block.get("scheme") else []
    if block.get("run_id"):
        extras.append(f"run {block['run_id']}")
    return f"{target} ({', '.join(extras)})" if extras else target


def pass_rate_scopes(report: Report) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(key, label, paired block) for overall, each check (``check:TYPE``) and each tag (``tag:NAME``)."""
    beh = report.get("behaviour") or {}
    if beh.get("overall"):
        yield "overall", "overall", beh["overall"]
    for name, block in sorted((beh.get("by_check") or {}).items()):
        yield f"check:{name}", f"check {name}", block
    for name, block in sorted((beh.get("by_tag") or {}).items()):
        yield f"tag:{name}", f"tag {name}", block


def sorted_flips(report: Report) -> list[dict[str, Any]]:
    """Flipped cases: regressions before improvements, critical first within each, else golden order."""
    flips = list((report.get("behaviour") or {}).get("flips") or [])
    return sorted(flips, key=lambda f: (f.get("direction") != "regression", not f.get("critical")))


def flip_counts(report: Report) -> tuple[int, int, int]:
    """(regressions, improvements, critical regressions) among the flipped cases."""
    flips = (report.get("behaviour") or {}).get("flips") or []
    reg = sum(1 for f in flips if f.get("direction") == "regression")
    crit = len((report.get("behaviour") or {}).get("critical_regressions") or [])
    return reg, len(flips) - reg, crit


def failed_codes(flip: dict[str, Any]) -> list[str]:
    """Distinct failing check codes of a flip's losing side, in order (``type`` when no code)."""
    seen: list[str] = []
    for check in flip.get("failed_checks") or []:
        code = str(check.get("code") or check.get("type") or "?")
        if code not in seen:
            seen.append(code)
    return seen


def divergence_note(flip: dict[str, Any]) -> str:
    """Where a flip's two answers part and how firmly the baseline chose there; "" without token data.

    For example ``token 17: " true" -> " false", baseline margin 0.0008 nats (near tie)``.
    """
    d = flip.get("divergence")
    if not isinstance(d, dict):
        return ""

    def tok(value: Any) -> str:
        return "(end)" if value is None else json.dumps(str(value), ensure_ascii=False)

    note = f"token {d.get('position')}: {tok(d.get('baseline_token'))} -> {tok(d.get('candidate_token'))}"
    margin = as_float(d.get("baseline_margin"))
    if margin is not None:
        note += f", baseline margin {margin:.2g} nats" + (" (near tie)" if d.get("near_tie") else "")
    return note


def fragile_summary(report: Report, max_ids: int = 5) -> str | None:
    """The baseline's near ties (``tokens.fragile``) in one line; None without token data or ties."""
    tokens = report.get("tokens")
    return near_ties_summary(tokens.get("fragile") if isinstance(tokens, dict) else None, max_ids)


def near_ties_summary(fragile: list[dict[str, Any]] | None, max_ids: int = 5) -> str | None:
    """Near-tie entries in one line, critical ones named; None when there are none.

    For example ``3 cases (1 critical: tool_call-010 at 0.0008 nats (fails if tipped))``: a critical
    case the baseline passes whose probe (``near_ties.probe_near_ties``) failed is marked.
    """
    if not fragile:
        return None

    def fails(f: dict[str, Any]) -> bool:
        tipped = f.get("if_tipped") if isinstance(f.get("if_tipped"), dict) else {}
        return bool(f.get("baseline_passed")) and tipped.get("passed") is False

    def name(f: dict[str, Any]) -> str:
        return f"{f.get('case_id')} at {fmt_num(f.get('margin'), 2)} nats" + (" (fails if tipped)" if fails(f) else "")

    # The ones that would fail come first, so a cut list never hides one.
    critical = sorted((f for f in fragile if f.get("critical")), key=lambda f: not fails(f))

    named = ", ".join(name(f) for f in critical[:max_ids])
    more = f", +{len(critical) - max_ids} more" if len(critical) > max_ids else ""
    return f"{plural(len(fragile), 'case')} ({len(critical)} critical" + (f": {named}{more})" if critical else ")")


def token_block(report: Report) -> dict[str, Any] | None:
    """The token-level metrics, or None when absent or computed on no positions."""
    tokens = report.get("tokens")
    if not isinstance(tokens, dict) or not tokens or not tokens.get("positions"):
        return None
    return tokens
