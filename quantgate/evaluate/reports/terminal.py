"""The comparison report as rich tables in the terminal.

One headline (both sides, cases, the coloured verdict), then one table per section: the gate's
rules, pass rates with intervals, token metrics, length, consistency, performance and the first
flipped cases. Sections with no data print one dim line instead of an empty table, so a server
comparison (no token metrics) reads the same as a local one.

Trade-offs: tables are sized for 100-120 columns; case ids and rule names never wrap (a wrapped
id is hard to copy), so the long free-text columns (reasons, outputs) take the squeeze, model
outputs are truncated to one line each, and below ~118 columns intervals move under their values
instead of beside them. Every value taken from the report is passed as ``rich.text.Text``, never
as a markup string, so an output containing ``[bold]`` prints literally, and control characters
are shown as their pictures (an ESC from a model output must not reach the user's terminal).
"""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

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
    length_summary,
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

__all__ = ["render_terminal"]

_WIDE = 118  # from this console width on, intervals sit beside their values; narrower, below them
_STYLE = {"pass": "bold green", "warn": "bold yellow", "fail": "bold red", "skip": "dim", "none": "bold"}


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD, pad_edge=False,
                  collapse_padding=True)
    for col in columns:
        table.add_column(col)
    return table


def _t(value: Any, style: str = "") -> Text:
    return Text(visible_controls(str(value)), style=style)


def _note(console: Console, title: str, text: str) -> None:
    console.print(Text.assemble((title, "bold"), (f"  {text}", "dim")))


def _headline(report: Report, console: Console) -> None:
    v = verdict(report)
    golden = report.get("golden") or {}
    reg, imp, crit = flip_counts(report)
    console.print(Text.assemble(("quantgate compare  ", "bold"), (v.upper(), _STYLE.get(v, "bold"))))
    console.print(Text.assemble(("  baseline   ", "dim"), side_label(report, "baseline")))
    console.print(Text.assemble(("  candidate  ", "dim"), side_label(report, "candidate")))
    line = Text.assemble(("  cases      ", "dim"), f"{golden.get('cases', DASH)} compared, ",
                         (plural(reg, "regression"), "red" if reg else ""), f", {plural(imp, 'improvement')}, ",
                         (plural(crit, "critical regression"), "bold red" if crit else ""))
    console.print(line)
    missing = golden.get("missing_cases") or []
    if missing:
        console.print(Text(f"  {len(missing)} golden case(s) missing from a run: {', '.join(missing[:5])}"
                           + (" ..." if len(missing) > 5 else ""), style="yellow"))
    if golden and golden.get("same_golden") is False:
        console.print(Text("  the two runs used different golden files", style="yellow"))


def _gate(report: Report, console: Console) -> None:
    rules = gate_rules(report)
    if not rules:
        _note(console, "Gate", "not gated")
        return
    wide = console.width >= _WIDE
    columns = ("rule", "outcome", "value", "interval", "bound") if wide else ("rule", "outcome", "value",
                                                                              "interval / bound")
    table = _table("Gate", *columns, "reason")
    for col in table.columns[:-1]:
        col.no_wrap = True
    table.columns[-1].ratio = 1
    for r in rules:
        outcome = str(r.get("outcome"))
        interval, bound = fmt_interval(r.get("low"), r.get("high"), digits=3), str(r.get("bound") or DASH)
        cells = [_t(interval), _t(bound)] if wide else [_t(f"{interval}\n{bound}")]
        table.add_row(_t(r.get("rule")), _t(outcome.upper(), _STYLE.get(outcome, "")), _t(fmt_num(r.get("value"), 3)),
                      *cells, _t(r.get("reason") or ""))
    console.print(table)


def _pass_rates(report: Report, console: Console) -> None:
    scopes = list(pass_rate_scopes(report))
    if not scopes:
        _note(console, "Pass rates", "no cases compared")
        return
    conf = as_float(report.get("confidence")) or 0.95
    table = _table(f"Pass rates (greedy; {conf:.0%} intervals)", "scope", "n", "baseline", "candidate", "change",
                   "-/+", "McNemar p")
    table.columns[0].no_wrap = True
    for col in table.columns[1:]:
        col.justify = "right"
    sep = " " if console.width >= _WIDE else "\n"  # narrow: each interval under its estimate

    def rate(block: dict[str, Any] | None) -> Text:
        return _t(fmt_rate(block).replace(" ", sep, 1))

    for _, label, b in scopes:
        diff = b.get("diff") or {}
        high, low = as_float(diff.get("high")) or 0.0, as_float(diff.get("low")) or 0.0
        style = "red" if high < 0 else "green" if low > 0 else ""
        table.add_row(_t(label), _t(b.get("n", DASH)), rate(b.get("baseline")), rate(b.get("candidate")),
                      _t(fmt_change(diff).replace(" [", f"{sep}[", 1), style),
                      _t(f"{b.get('regressions', 0)}/{b.get('improvements', 0)}"), _t(fmt_p(b.get("mcnemar_p"))))
    console.print(table)


def _tokens(report: Report, console: Console) -> None:
    tokens = token_block(report)
    if tokens is None:
        _note(console, "Token metrics", "none (a server on either side, or --no-token-metrics)")
        return
    table = _table(f"Token metrics ({tokens.get('positions')} positions)", "metric", "value")
    table.columns[1].justify = "right"
    rows = [
        ("KL mean ± se", f"{fmt_num(tokens.get('kl_mean'), 4)} ± {fmt_num(tokens.get('kl_se'), 2)}"),
        ("KL p90 / p99 / max", " / ".join(fmt_num(tokens.get(k), 4) for k in ("kl_p90", "kl_p99", "kl_max"))),
        ("top-1 agreement ± se", f"{fmt_pct(tokens.get('top1_agreement'), 2)} ± {fmt_pct(tokens.get('top1_se'), 2)}"),
        ("Δp mean / rms", f"{fmt_num(tokens.get('dp_mean'), 3)} / {fmt_num(tokens.get('dp_rms'), 3)}"),
        ("perplexity base / cand (ratio)",
         f"{fmt_num(tokens.get('ppl_base'), 4)} / {fmt_num(tokens.get('ppl_cand'), 4)} "
         f"(x{fmt_num(tokens.get('ppl_ratio'), 4)})"),
        ("greedy identical", fmt_pct(tokens.get("greedy_identical"))),
        ("first divergence (median token)", fmt_num(tokens.get("first_divergence_median"))),
        ("baseline near ties (< 0.1 nats)", fragile_summary(report) or "none"),
    ]
    for name, value in rows:
        table.add_row(_t(name), _t(value))
    console.print(table)


def _length_and_consistency(report: Report, console: Console) -> None:
    length, consistency = length_summary(report), consistency_summary(report)
    if length is None:
        _note(console, "Length", "no lengths")
    else:
        console.print(Text.assemble(("Length  ", "bold"), length))
    if consistency is None:
        _note(console, "Consistency", "no case was sampled more than once on both sides")
    else:
        console.print(Text.assemble(("Consistency  ", "bold"), consistency))


def _performance(report: Report, console: Console) -> None:
    perf = report.get("performance") or {}
    b, c = perf.get("baseline") or {}, perf.get("candidate") or {}
    if not b and not c:
        _note(console, "Performance", "not measured")
        return
    table = _table("Performance", "metric", "baseline", "candidate", "cand/base")
    for col in table.columns[1:]:
        col.justify = "right"

    def row(name: str, bv: Any, cv: Any, fmt: Any, compare: bool = True) -> None:
        r = ratio(cv, bv) if compare else None
        table.add_row(_t(name), _t(fmt(bv)), _t(fmt(cv)), _t(DASH if r is None else f"x{r:.3f}"))

    def ms(v: Any) -> str:
        f = as_float(v)
        return DASH if f is None else f"{1000 * f:,.1f} ms"

    for q in ("p50", "p95", "p99"):
        row(f"latency {q}", (b.get("latency_s") or {}).get(q), (c.get("latency_s") or {}).get(q), ms)
    row("tokens/s", b.get("tokens_per_s"), c.get("tokens_per_s"), lambda v: fmt_num(v, 4))
    row("weights", b.get("weight_bytes"), c.get("weight_bytes"), fmt_bytes)
    if "cost_per_success" in b or "cost_per_success" in c:
        row("cost per success", b.get("cost_per_success"), c.get("cost_per_success"), lambda v: fmt_num(v, 4))
    row("answers", b.get("answers"), c.get("answers"), fmt_num, compare=False)
    row("passing answers", b.get("successes"), c.get("successes"), fmt_num, compare=False)
    console.print(table)


def _flips(report: Report, console: Console, max_flips: int) -> None:
    flips = sorted_flips(report)
    if not flips:
        _note(console, "Flipped cases", "none: every case has the same outcome on both sides")
        return
    shown = flips[:max_flips] if max_flips >= 0 else flips
    parting = any(divergence_note(f) for f in shown)
    table = _table(f"Flipped cases (first {len(shown)} of {len(flips)})", "case", "flip", "failed checks",
                   "baseline output", "candidate output", *(["where they part"] if parting else []))
    table.columns[0].no_wrap = True
    table.columns[1].no_wrap = True
    for col in table.columns[3:]:
        col.ratio = 1
        col.overflow = "ellipsis"
    for f in shown:
        reg = f.get("direction") == "regression"
        flip = Text("regressed" if reg else "improved", style="red" if reg else "green")
        if f.get("critical"):
            flip.append(" CRITICAL", style="bold red")
        table.add_row(_t(f.get("case_id")), flip, _t(", ".join(failed_codes(f)) or DASH),
                      _t(truncate(one_line(str(f.get("baseline_output", ""))), 80)),
                      _t(truncate(one_line(str(f.get("candidate_output", ""))), 80)),
                      *([_t(divergence_note(f) or DASH)] if parting else []))
    console.print(table)


def render_terminal(report: Report, console: Console, max_flips: int = 10) -> None:
    """Print the whole comparison report to ``console``; ``max_flips`` < 0 lists every flipped case."""
    _headline(report, console)
    console.print()
    _gate(report, console)
    _pass_rates(report, console)
    _tokens(report, console)
    _length_and_consistency(report, console)
    console.print()
    _performance(report, console)
    _flips(report, console, max_flips)
