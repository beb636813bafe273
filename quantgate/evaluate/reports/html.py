"""The comparison report as one self-contained HTML file, viewable offline.

Sections: summary and gate rules; pass rate per scope (overall, per check, per tag) as interval
dots with the table beside; token metrics with the KL histogram; length distributions (overlaid
histograms); latency CDFs; consistency; the flipped cases with both outputs side by side.

Self-contained means: inline CSS, charts as inline SVG drawn by ``reports.svg``, no JavaScript, no
fonts, images or stylesheets fetched from anywhere, so the file can be attached to a CI run or
mailed and opened years later. Every string from the report is HTML-escaped (model outputs are
untrusted text: an output containing ``<script>`` shows as text). A section whose data is missing
(server sides have no token metrics, a run without repeated samples has no consistency) shows a
one-line note instead of an empty chart.

Trade-offs: no interactivity beyond SVG hover titles and ``<details>``; the flipped-case list is
cut at ``max_flips`` and each output at ``max_output`` characters so a run with thousands of
regressions still gives a file a browser opens quickly (the JSON report has everything).
"""

from __future__ import annotations

import math
from collections.abc import Collection
from html import escape
from typing import Any

from quantgate.evaluate.reports import svg
from quantgate.evaluate.reports.common import (
    DASH,
    Report,
    as_float,
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
    length_summary,
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

__all__ = ["to_html"]

BASE_COLOR, CAND_COLOR = "#4477aa", "#cc4455"

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#222;margin:0 auto;max-width:1180px;
padding:16px 24px}
h1{font-size:22px;margin:8px 0}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}th,td{border-bottom:1px solid #eee;padding:4px 8px;
text-align:left;vertical-align:top}th{background:#f6f6f6}td.num{text-align:right;white-space:nowrap}
.badge{display:inline-block;padding:2px 10px;border-radius:4px;color:#fff;font-weight:600}
.pass{background:#2e7d32}.warn{background:#b26a00}.fail{background:#c62828}.skip,.none{background:#777}
.note{color:#666;font-style:italic}.nowrap{white-space:nowrap}dl{display:grid;grid-template-columns:max-content auto;
gap:2px 14px;margin:8px 0}dt{color:#666}dd{margin:0}code{font-size:12px;background:#f4f4f4;padding:1px 3px}
pre{white-space:pre-wrap;overflow-wrap:anywhere;margin:0;font-size:12px;background:#f8f8f8;padding:4px;max-height:24em;
overflow:auto}table.flips{table-layout:fixed;width:100%}table.flips td{overflow-wrap:anywhere}
.reg{color:#c62828;font-weight:600}.imp{color:#2e7d32;font-weight:600}
svg.chart{max-width:100%;height:auto;display:block}
"""


def _e(value: Any) -> str:
    return escape(visible_controls(str(value)), quote=True)


def _table(header: list[str], rows: list[list[str]], num: Collection[int] = (), cls: str = "") -> str:
    """A table from already-escaped cells; columns in ``num`` right-aligned."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td class="num">{c}</td>' if i in num else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    attr = f' class="{cls}"' if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _summary(report: Report) -> str:
    v = verdict(report)
    golden = report.get("golden") or {}
    reg, imp, crit = flip_counts(report)
    crit_ids = (report.get("behaviour") or {}).get("critical_regressions") or []
    items = [("baseline", _e(side_label(report, "baseline"))), ("candidate", _e(side_label(report, "candidate"))),
             ("golden set", f"<code>{_e(golden.get('path', DASH))}</code> "
                            f"(sha256 {_e(str(golden.get('sha256', ''))[:12])})"),
             ("cases", f"{_e(golden.get('cases', DASH))} compared: {plural(reg, 'regression')}, "
                       f"{plural(imp, 'improvement')}, {plural(crit, 'critical regression')}"
                       + (": " + ", ".join(f"<code>{_e(i)}</code>" for i in crit_ids[:30]) if crit_ids else "")),
             ("confidence", _e(fmt_pct(report.get("confidence"), 0)))]
    missing = golden.get("missing_cases") or []
    if missing:
        items.append(("missing", _e(f"{len(missing)} golden case(s) absent from a run: {', '.join(missing[:20])}")))
    if golden.get("same_golden") is False:
        items.append(("warning", "the two runs used different golden files"))
    dl = "".join(f"<dt>{_e(k)}</dt><dd>{val}</dd>" for k, val in items)
    return (f'<h1>quantgate comparison <span class="badge {_e(v)}">{_e(v.upper())}</span></h1><dl>{dl}</dl>'
            + _gate(report))


def _gate(report: Report) -> str:
    rules = gate_rules(report)
    if not rules:
        return "<h2>Gate</h2>" + _note("Not gated.")
    rows = [[f'<span class="nowrap">{_e(r.get("rule"))}</span>',
             f'<span class="badge {_e(r.get("outcome"))}">{_e(str(r.get("outcome")).upper())}</span>',
             _e(fmt_num(r.get("value"), 4)), _e(fmt_interval(r.get("low"), r.get("high"), digits=4)),
             _e(r.get("bound") or DASH), _e(r.get("reason") or "")] for r in rules]
    return "<h2>Gate</h2>" + _table(["rule", "outcome", "value", "interval", "bound", "reason"], rows, {2, 3})


def _pass_rates(report: Report) -> str:
    scopes = list(pass_rate_scopes(report))
    if not scopes:
        return "<h2>Pass rates</h2>" + _note("No cases compared.")
    chart_rows = []
    table_rows = []
    for _, label, b in scopes:
        pts: list[tuple[float, float, float] | None] = []
        for side in ("baseline", "candidate"):
            r = b.get(side) or {}
            est, low, high = (as_float(r.get(k)) for k in ("estimate", "low", "high"))
            pts.append((est, low, high) if est is not None and low is not None and high is not None else None)
        chart_rows.append(svg.IntervalRow(f"{label} (n={b.get('n', '?')})", pts))
        table_rows.append([f'<span class="nowrap">{_e(label)}</span>', _e(b.get("n", DASH)),
                           _e(fmt_rate(b.get("baseline"))), _e(fmt_rate(b.get("candidate"))),
                           _e(fmt_change(b.get("diff"))), _e(f"{b.get('regressions', 0)} / {b.get('improvements', 0)}"),
                           _e(fmt_p(b.get("mcnemar_p")))])
    conf = fmt_pct(as_float(report.get("confidence")) or 0.95, 0)
    chart = svg.interval_chart(chart_rows, [("baseline", BASE_COLOR), ("candidate", CAND_COLOR)],
                               f"Pass rate per scope with {conf} Wilson intervals")
    return (f"<h2>Pass rates (greedy answers, {_e(conf)} intervals)</h2>" + chart
            + _table(["scope", "n", "baseline", "candidate", "change", "regr. / impr.", "McNemar p"], table_rows,
                     {1, 2, 3, 4, 5, 6}))


def _tokens(report: Report) -> str:
    t = token_block(report)
    if t is None:
        return "<h2>Token metrics</h2>" + _note("No token-level metrics: a server on either side, or turned off.")
    rows = [["KL divergence mean ± se", _e(f"{fmt_num(t.get('kl_mean'), 4)} ± {fmt_num(t.get('kl_se'), 2)}")],
            ["KL p90 / p99 / max", _e(" / ".join(fmt_num(t.get(k), 4) for k in ("kl_p90", "kl_p99", "kl_max")))],
            ["top-1 agreement ± se", _e(f"{fmt_pct(t.get('top1_agreement'), 2)} ± {fmt_pct(t.get('top1_se'), 2)}")],
            ["probability change mean / rms", _e(f"{fmt_num(t.get('dp_mean'))} / {fmt_num(t.get('dp_rms'))}")],
            ["perplexity baseline / candidate (ratio)",
             _e(f"{fmt_num(t.get('ppl_base'), 4)} / {fmt_num(t.get('ppl_cand'), 4)} "
                f"(x{fmt_num(t.get('ppl_ratio'), 4)})")],
            ["greedy generations identical", _e(fmt_pct(t.get("greedy_identical")))],
            ["first divergence, median token", _e(fmt_num(t.get("first_divergence_median")))],
            ["positions compared", _e(t.get("positions", DASH))],
            ["baseline near ties (its own token under 0.1 nats ahead somewhere)",
             _e(fragile_summary(report) or "none")]]
    out = "<h2>Token metrics</h2>" + _table(["metric", "value"], rows, {1})
    hist = t.get("kl_histogram") or {}
    edges, counts = hist.get("log10_edges") or [], hist.get("counts") or []
    if len(edges) < 2 or len(counts) != len(edges) - 1 or not any(counts):
        return out + _note("No KL histogram in the report.")
    markers = [(math.log10(max(v, 1e-300)), name) for name, v in
               (("mean", as_float(t.get("kl_mean"))), ("p99", as_float(t.get("kl_p99")))) if v is not None and v > 0]
    ticks = [float(k) for k in range(math.ceil(edges[0]), math.floor(edges[-1]) + 1)]
    return out + svg.histogram(edges, [svg.Series("KL(baseline || candidate) per position", counts, CAND_COLOR)],
                               "Histogram of per-position KL divergence (log scale)",
                               "KL divergence (nats, log scale)", y_label="token positions",
                               x_format=lambda v: f"1e{v:.0f}" if float(v).is_integer() else f"1e{v:.1f}",
                               counted=True, ticks=ticks, markers=markers)


def _floats(values: Any) -> list[float]:
    return [f for f in (as_float(v) for v in values or []) if f is not None] if isinstance(values, list) else []


def _length(report: Report) -> str:
    length = report.get("length") or {}
    b, c = _floats(length.get("baseline")), _floats(length.get("candidate"))
    summary = length_summary(report)
    if not b and not c:
        return "<h2>Completion length</h2>" + _note("No lengths in the report.")
    out = "<h2>Completion length</h2>" + (f"<p>{_e(summary[0].upper() + summary[1:])}.</p>" if summary else "")
    edges = svg.bins_for(b + c, max_bins=40, integer=True)
    if not edges:
        return out
    ticks = [t for t in svg.nice_ticks(edges[0], edges[-1], 8) if float(t).is_integer()]
    return out + svg.histogram(edges, [svg.Series("baseline", b, BASE_COLOR),
                                       svg.Series("candidate", c, CAND_COLOR, outline=True)],
                               "Completion length distributions", "completion tokens per case (greedy answer)",
                               y_label="cases", x_format=lambda v: f"{v:g}", ticks=ticks or None)


def _performance(report: Report) -> str:
    perf = report.get("performance") or {}
    b, c = perf.get("baseline") or {}, perf.get("candidate") or {}
    if not b and not c:
        return "<h2>Performance</h2>" + _note("Not measured.")

    def row(name: str, bv: Any, cv: Any, fmt: Any, compare: bool = True) -> list[str]:
        r = ratio(cv, bv) if compare else None
        return [_e(name), _e(fmt(bv)), _e(fmt(cv)), _e(DASH if r is None else f"x{r:.3f}")]

    def ms(v: Any) -> str:
        f = as_float(v)
        return DASH if f is None else f"{1000 * f:,.1f} ms"

    rows = [row(f"latency {q}", (b.get("latency_s") or {}).get(q), (c.get("latency_s") or {}).get(q), ms)
            for q in ("p50", "p95", "p99")]
    rows.append(row("tokens/s", b.get("tokens_per_s"), c.get("tokens_per_s"), lambda v: fmt_num(v, 4)))
    rows.append(row("weights", b.get("weight_bytes"), c.get("weight_bytes"), fmt_bytes))
    if "cost_per_success" in b or "cost_per_success" in c:
        rows.append(row("cost per passing answer", b.get("cost_per_success"), c.get("cost_per_success"),
                        lambda v: fmt_num(v, 4)))
    rows.append(row("answers / passing", f"{b.get('answers', DASH)} / {b.get('successes', DASH)}",
                    f"{c.get('answers', DASH)} / {c.get('successes', DASH)}", str, compare=False))
    out = "<h2>Performance</h2>" + _table(["metric", "baseline", "candidate", "candidate / baseline"], rows, {1, 2, 3})
    lb, lc = _floats(b.get("latencies")), _floats(c.get("latencies"))
    if not lb and not lc:
        return out + _note("No per-answer latencies in the report.")
    scale, unit = (1000.0, "ms") if max(lb + lc) < 2 else (1.0, "s")
    return out + svg.step_cdf([svg.Series("baseline", [v * scale for v in lb], BASE_COLOR),
                               svg.Series("candidate", [v * scale for v in lc], CAND_COLOR)],
                              "Latency CDF per answer", f"latency per answer ({unit})")


def _consistency(report: Report) -> str:
    cons = report.get("consistency") or {}
    if not cons.get("cases"):
        return "<h2>Consistency</h2>" + _note("No case was sampled more than once on both sides.")
    b, c = cons.get("baseline") or {}, cons.get("candidate") or {}
    rows = [["passing share of samples", _e(fmt_pct(b.get("pass_share"))), _e(fmt_pct(c.get("pass_share")))],
            ["distinct answers per case", _e(fmt_num(b.get("distinct_mean"))), _e(fmt_num(c.get("distinct_mean")))]]
    return (f"<h2>Consistency ({_e(plural(int(cons['cases']), 'sampled case'))})</h2>"
            + _table(["metric", "baseline", "candidate"], rows, {1, 2}))


def _flips(report: Report, max_flips: int, max_output: int) -> str:
    flips = sorted_flips(report)
    reg, imp, crit = flip_counts(report)
    head = (f"<h2>Flipped cases ({plural(reg, 'regression')}, {crit} critical; "
            f"{plural(imp, 'improvement')})</h2>")
    if not flips:
        return head + _note("No case changed outcome.")
    parting = any(divergence_note(f) for f in flips[:max_flips])
    rows = []
    for f in flips[:max_flips]:
        is_reg = f.get("direction") == "regression"
        flip = f'<span class="{"reg" if is_reg else "imp"}">{"regression" if is_reg else "improvement"}</span>'
        if f.get("critical"):
            flip += ' <span class="badge fail">CRITICAL</span>'
        tags = ", ".join(map(str, f.get("tags") or []))
        checks = "<br>".join(f"<code>{_e(c.get('code') or c.get('type'))}</code> {_e(c.get('reason', ''))}"
                             for c in f.get("failed_checks") or []) or _e(", ".join(failed_codes(f)) or DASH)
        rows.append([f"<code>{_e(f.get('case_id'))}</code>" + (f"<br><small>{_e(tags)}</small>" if tags else ""),
                     flip, checks,
                     f"<pre>{_e(truncate(str(f.get('baseline_output', '')), max_output))}</pre>",
                     f"<pre>{_e(truncate(str(f.get('candidate_output', '')), max_output))}</pre>",
                     *([_e(divergence_note(f) or DASH)] if parting else [])])
    cols = ('<colgroup><col style="width:11%"><col style="width:10%"><col style="width:19%"><col><col>'
            + ('<col style="width:14%">' if parting else "") + "</colgroup>")
    table = _table(["case", "flip", "failing checks (losing side)", "baseline output", "candidate output",
                    *(["where they part"] if parting else [])], rows, cls="flips").replace("<thead>", cols + "<thead>", 1)
    more = _note(f"... and {len(flips) - max_flips} more (see the JSON report).") if len(flips) > max_flips else ""
    return head + table + more


def to_html(report: Report, max_flips: int = 500, max_output: int = 4000) -> str:
    """The whole report as a single HTML document (no scripts, nothing fetched)."""
    title = (f"quantgate {verdict(report).upper()}: {side_label(report, 'candidate')} "
             f"vs {side_label(report, 'baseline')}")
    body = (_summary(report) + _pass_rates(report) + _tokens(report) + _length(report) + _performance(report)
            + _consistency(report) + _flips(report, max_flips, max_output))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n<body>\n{body}\n</body></html>\n")
