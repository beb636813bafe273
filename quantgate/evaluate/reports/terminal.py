"""The comparison report as rich tables in the terminal.

One headline (both sides, cases, the coloured verdict), then one table per section: the gate's
rules, pass rates with intervals, token metrics, length, consistency, performance and the first
flipped cases. Sections with no data print one dim line instead of an empty table, so a server
comparison (no token metrics) reads the same as a local one.

Trade-offs: tables are sized for 100-120 columns; case ids and rule names never wrap (a wrapped
id is hard to copy), so the long free-text columns (reasons, outputs) take the squeeze and model
outputs are truncated to one line each. Every value taken from the report is passed as
``rich.text.Text``, never as a markup string, so an output containing ``[bold]`` prints literally.
"""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from quantgate.evaluate.reports.common import (
    DASH, Report, as_float, failed_codes, flip_counts, fmt_bytes, fmt_interval, fmt_num, fmt_p, fmt_pct, fmt_rate,
    fmt_signed_pct, gate_rules, one_line, pass_rate_scopes, plural, ratio, side_label, sorted_flips, token_block, truncate,
    verdict,
)

__all__ = ["render_terminal"]

_STYLE = {"pass": "bold green", "warn": "bold yellow", "fail": "bold red", "skip": "dim", "none": "bold"}


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    for col in columns:
        table.add_column(col)
    return table


def _t(value: Any, style: str = "") -> Text:
    return Text(str(value), style=style)


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
    table = _table("Gate", "rule", "outcome", "value", "interval", "bound", "reason")
    table.columns[0].no_wrap = True
    table.columns[5].ratio = 1
    for r in rules:
        outcome = str(r.get("outcome"))
        table.add_row(_t(r.get("rule")), _t(outcome.upper(), _STYLE.get(outcome, "")), _t(fmt_num(r.get("value"), 4)),
                      _t(fmt_interval(r.get("low"), r.get("high"), digits=4)), _t(r.get("bound") or DASH),
                      _t(r.get("reason") or ""))
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
    for _, label, b in scopes:
        diff = b.get("diff") or {}
        change = f"{fmt_signed_pct(diff.get('estimate'))} {fmt_interval(diff.get('low'), diff.get('high'), True, True)}"
        style = "red" if (as_float(diff.get("high")) or 0) < 0 else "green" if (as_float(diff.get("low")) or 0) > 0 else ""
        table.add_row(_t(label), _t(b.get("n", DASH)), _t(fmt_rate(b.get("baseline"))), _t(fmt_rate(b.get("candidate"))),
                      _t(change, style), _t(f"{b.get('regressions', 0)}/{b.get('improvements', 0)}"),
                      _t(fmt_p(b.get("mcnemar_p"))))
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
        ("perplexity base / cand (ratio)", f"{fmt_num(tokens.get('ppl_base'), 4)} / {fmt_num(tokens.get('ppl_cand'), 4)} "
                                           f"(x{fmt_num(tokens.get('ppl_ratio'), 4)})"),
        ("greedy identical", fmt_pct(tokens.get("greedy_identical"))),
        ("first divergence (median token)", fmt_num(tokens.get("first_divergence_median"))),
    ]
    for name, value in rows:
        table.add_row(_t(name), _t(value))
    console.print(table)


def _length_and_consistency(report: Report, console: Console) -> None:
    length = report.get("length") or {}
    if length.get("ratio") is None and length.get("baseline_mean") is None:
        _note(console, "Length", "no lengths")
    else:
        r = length.get("ratio") or {}
        console.print(Text.assemble(("Length  ", "bold"), "mean completion tokens ",
                                    f"{fmt_num(length.get('baseline_mean'), 4)} -> {fmt_num(length.get('candidate_mean'), 4)}",
                                    f", ratio x{fmt_num(r.get('estimate'), 4)} {fmt_interval(r.get('low'), r.get('high'), digits=4)}",
                                    f", Wilcoxon p={fmt_p(length.get('wilcoxon_p'))}"))
    cons = report.get("consistency") or {}
    if not cons.get("cases"):
        _note(console, "Consistency", "no case was sampled more than once on both sides")
        return
    b, c = cons.get("baseline") or {}, cons.get("candidate") or {}
    console.print(Text.assemble(("Consistency  ", "bold"), f"{cons['cases']} sampled cases: passing share ",
                                f"{fmt_pct(b.get('pass_share'))} -> {fmt_pct(c.get('pass_share'))}, distinct answers ",
                                f"{fmt_num(b.get('distinct_mean'))} -> {fmt_num(c.get('distinct_mean'))}"))


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
    table = _table(f"Flipped cases (first {len(shown)} of {len(flips)})", "case", "flip", "failed checks",
                   "baseline output", "candidate output")
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
                      _t(truncate(one_line(str(f.get("candidate_output", ""))), 80)))
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
