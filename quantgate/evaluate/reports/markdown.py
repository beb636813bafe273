"""The comparison report as GitHub-flavoured Markdown, sized for a pull-request comment.

Layout: a verdict line (**PASS** / **WARN** / **FAIL**, no emoji, so it reads the same in a terminal,
an e-mail notification and a screen reader), the gate's rules, pass rates, token metrics when
present, a one-line length/performance summary, then the flipped cases inside ``<details>`` with
regressions first and critical ones marked.

Escaping: everything from the report that lands in a table cell has ``|`` escaped as ``\\|`` (GFM
splits cells before parsing code spans, and un-escapes ``\\|`` inside them) and newlines shown as
``↵``; model outputs go in code spans whose backtick fence is longer than any backtick run inside
them, so an output can contain backticks, pipes, ``<script>`` or ``**`` and still render literally.
Free text outside code spans has ``<``/``>``/``&`` turned into entities and Markdown punctuation
backslash-escaped.

Trade-offs: GitHub caps a comment at 65,536 characters, so the flipped-case list stops after
``max_flips`` cases and each output is truncated (``max_output`` characters); the HTML report
has them all.
"""

from __future__ import annotations

import re
from typing import Any

from quantgate.evaluate.reports.common import (
    DASH,
    Report,
    as_float,
    consistency_summary,
    divergence_note,
    failed_codes,
    flip_counts,
    fmt_bytes,
    fmt_change,
    fmt_interval,
    fmt_num,
    fmt_p,
    fmt_pct,
    fmt_rate,
    fragile_summary,
    gate_rules,
    one_line,
    pass_rate_scopes,
    plural,
    ratio,
    side_label,
    sorted_flips,
    token_block,
    truncate,
    verdict,
    visible_controls,
)

__all__ = ["code_span", "escape_text", "to_markdown"]


def escape_text(text: Any) -> str:
    """Plain text safe in a Markdown table cell: HTML entities, escaped punctuation, no newlines."""
    s = visible_controls(str(text)).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    s = re.sub(r"([\\`*_\[\]|#~])", r"\\\1", s)
    return " ".join(s.split())


def code_span(text: Any, limit: int | None = None, in_table: bool = True) -> str:
    """``text`` as one inline code span: fence longer than any backtick run, ``|`` escaped in a table cell."""
    s = one_line(str(text))
    if limit is not None:
        s = truncate(s, limit)
    if not s:
        return DASH
    longest = max((len(m) for m in re.findall(r"`+", s)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if s[0] in "` " or s[-1] in "` " else ""
    if in_table:  # a backslash right before a pipe would escape the escape; a zero-width space parts them
        s = s.replace("\\|", "\\\u200b|").replace("|", "\\|")
    return f"{fence}{pad}{s}{pad}{fence}"


def _table(header: list[str], rows: list[list[str]], align: str = "") -> list[str]:
    aligns = [("--:" if a == "r" else "---") for a in align.ljust(len(header), "l")]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(aligns) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


def _head(report: Report) -> list[str]:
    golden = report.get("golden") or {}
    reg, imp, crit = flip_counts(report)
    counts = f"{golden.get('cases', DASH)} cases compared, {plural(reg, 'regression')}, {plural(imp, 'improvement')}, "
    crit_ids = (report.get("behaviour") or {}).get("critical_regressions") or []
    if crit:
        counts += f"**{plural(crit, 'critical regression')}**"
        if crit_ids:
            counts += ": " + ", ".join(code_span(i, in_table=False) for i in crit_ids[:20])
            counts += " ..." if len(crit_ids) > 20 else ""
    else:
        counts += "no critical regression"
    lines = [f"### quantgate gate: **{verdict(report).upper()}**", "",
             f"baseline {code_span(side_label(report, 'baseline'), in_table=False)} vs candidate "
             f"{code_span(side_label(report, 'candidate'), in_table=False)}  ", counts]
    missing = golden.get("missing_cases") or []
    if missing:
        lines[-1] += "  "
        lines.append(f"{plural(len(missing), 'golden case')} missing from a run")
    if golden.get("same_golden") is False:
        lines[-1] += "  "
        lines.append("the two runs used different golden files")
    return lines + [""]


def _gate(report: Report) -> list[str]:
    rules = gate_rules(report)
    if not rules:
        return ["_Not gated._", ""]
    rows = [[code_span(r.get("rule")), f"**{str(r.get('outcome')).upper()}**", fmt_num(r.get("value"), 4),
             fmt_interval(r.get("low"), r.get("high"), digits=4), escape_text(r.get("bound") or DASH),
             escape_text(r.get("reason") or "")] for r in rules]
    return _table(["rule", "outcome", "value", "interval", "bound", "reason"], rows, "llrrll")


def _pass_rates(report: Report) -> list[str]:
    scopes = list(pass_rate_scopes(report))
    if not scopes:
        return ["_No cases compared._", ""]
    rows = []
    for _, label, b in scopes:
        rows.append([escape_text(label), str(b.get("n", DASH)), fmt_rate(b.get("baseline")),
                     fmt_rate(b.get("candidate")), fmt_change(b.get("diff")),
                     f"{b.get('regressions', 0)} / {b.get('improvements', 0)}", fmt_p(b.get("mcnemar_p"))])
    conf = as_float(report.get("confidence")) or 0.95
    return [f"#### Pass rates ({conf:.0%} intervals)", ""] + _table(
        ["scope", "n", "baseline", "candidate", "change", "regr. / impr.", "McNemar p"], rows, "lrrrrrr")


def _tokens(report: Report) -> list[str]:
    t = token_block(report)
    if t is None:
        return ["_No token-level metrics (a server on either side)._", ""]
    row = [f"{fmt_num(t.get('kl_mean'), 4)} ± {fmt_num(t.get('kl_se'), 2)}", fmt_num(t.get("kl_p99"), 4),
           f"{fmt_pct(t.get('top1_agreement'), 2)} ± {fmt_pct(t.get('top1_se'), 2)}", fmt_num(t.get("ppl_ratio"), 4),
           fmt_pct(t.get("greedy_identical")), str(t.get("positions", DASH))]
    fragile = fragile_summary(report)
    note = ([f"Baseline near ties (its own token under 0.1 nats ahead somewhere in the answer): "
             f"{escape_text(fragile)}.", ""] if fragile else [])
    return ["#### Token metrics", ""] + _table(
        ["KL mean ± se", "KL p99", "top-1 agreement", "perplexity ratio", "greedy identical", "positions"], [row],
        "rrrrrr") + note


def _summary(report: Report) -> list[str]:
    parts = []
    r = (report.get("length") or {}).get("ratio") or {}
    if r:
        parts.append(f"length x{fmt_num(r.get('estimate'), 4)} {fmt_interval(r.get('low'), r.get('high'), digits=4)} "
                     f"(Wilcoxon p={fmt_p((report.get('length') or {}).get('wilcoxon_p'))})")
    perf = report.get("performance") or {}
    b, c = perf.get("baseline") or {}, perf.get("candidate") or {}
    for q in ("p50", "p95"):
        rq = ratio((c.get("latency_s") or {}).get(q), (b.get("latency_s") or {}).get(q))
        if rq is not None:
            parts.append(f"latency {q} x{rq:.3f}")
    rt = ratio(c.get("tokens_per_s"), b.get("tokens_per_s"))
    if rt is not None:
        parts.append(f"tokens/s x{rt:.3f}")
    if as_float(b.get("weight_bytes")) is not None or as_float(c.get("weight_bytes")) is not None:
        parts.append(f"weights {fmt_bytes(b.get('weight_bytes'))} -> {fmt_bytes(c.get('weight_bytes'))}")
    rc = ratio(c.get("cost_per_success"), b.get("cost_per_success"))
    if rc is not None:
        parts.append(f"cost per success x{rc:.3f}")
    consistency = consistency_summary(report)
    if consistency:
        parts.append(f"consistency over {consistency}")
    return ["; ".join(parts), ""] if parts else []


def _flips(report: Report, max_flips: int, max_output: int) -> list[str]:
    flips = sorted_flips(report)
    if not flips:
        return ["_No flipped cases._", ""]
    reg, imp, crit = flip_counts(report)
    shown = flips[:max_flips]
    parting = any(divergence_note(f) for f in shown)
    rows = []
    for f in shown:
        direction = "regression" if f.get("direction") == "regression" else "improvement"
        if f.get("critical"):
            direction = f"**{direction}, critical**"
        rows.append([code_span(f.get("case_id")), direction,
                     ", ".join(code_span(c) for c in failed_codes(f)) or DASH,
                     code_span(f.get("baseline_output", ""), max_output),
                     code_span(f.get("candidate_output", ""), max_output),
                     *([code_span(divergence_note(f)) if divergence_note(f) else DASH] if parting else [])])
    more = [f"_... and {len(flips) - len(shown)} more (see the HTML or JSON report)._", ""] \
        if len(flips) > len(shown) else []
    return ["<details>",
            f"<summary>Flipped cases: {plural(reg, 'regression')} ({crit} critical), "
            f"{plural(imp, 'improvement')}</summary>", ""] + _table(
        ["case", "flip", "failed checks", "baseline output", "candidate output",
         *(["where they part"] if parting else [])], rows) + more + ["</details>", ""]


def to_markdown(report: Report, max_flips: int = 50, max_output: int = 160) -> str:
    """A compact PR comment; ``max_flips`` cases listed, outputs cut at ``max_output`` characters."""
    lines = (_head(report) + _gate(report) + _pass_rates(report) + _tokens(report) + _summary(report)
             + _flips(report, max_flips, max_output))
    return "\n".join(lines).rstrip() + "\n"
