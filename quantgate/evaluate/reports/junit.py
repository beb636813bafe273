"""The comparison report as JUnit XML, so CI systems list the gate's rules and regressed cases as tests.

Two suites under one ``<testsuites>``:

- ``quantgate.gate``: one testcase per gate rule. ``fail`` carries a ``<failure>``, ``skip`` a
  ``<skipped>``; ``warn`` is a *passing* testcase with a ``<system-out>`` saying why (JUnit has no
  warning state, and a warning must not fail the build: the gate's exit code is 0 on warn);
- ``quantgate.cases``: one testcase per case that passed on the baseline and fails on the
  candidate, its name marked ``[critical]`` when the golden set says so, the failing checks' codes
  as the failure message and both outputs in the failure body. Improvements are not listed.

Trade-offs: a gate may pass with a few regressed cases inside its tolerance, and a CI job that
fails on any JUnit failure would then go red though the gate said pass. ``cases_as_failures=False``
writes those testcases as passing with the detail in ``<system-out>``; rely on ``quantgate compare``'s
exit code for the decision either way. Characters XML 1.0 forbids are replaced, because
ElementTree writes them unchanged and the file would not parse: C0 controls (NUL, ESC... which
model outputs do contain) by their visible pictures (␀, ␛), lone surrogates by U+FFFD.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

from quantgate.evaluate.reports.common import (
    Report,
    divergence_note,
    fmt_interval,
    fmt_num,
    gate_rules,
    side_label,
    sorted_flips,
    truncate,
    verdict,
    visible_controls,
)

__all__ = ["to_junit"]


def _clean(text: Any) -> str:
    """Text XML 1.0 can carry: C0 controls as their pictures, surrogates and non-characters as U+FFFD."""
    return re.sub("[\ufffe\uffff\ud800-\udfff]", "\ufffd", visible_controls(str(text)))


def _suite(parent: ET.Element, name: str) -> ET.Element:
    return ET.SubElement(parent, "testsuite", {"name": name})


def _count(suite: ET.Element) -> tuple[int, int, int]:
    cases = suite.findall("testcase")
    failures = sum(1 for c in cases if c.find("failure") is not None)
    skipped = sum(1 for c in cases if c.find("skipped") is not None)
    suite.set("tests", str(len(cases)))
    suite.set("failures", str(failures))
    suite.set("errors", "0")
    suite.set("skipped", str(skipped))
    suite.set("time", "0")
    return len(cases), failures, skipped


def _gate_suite(report: Report, root: ET.Element) -> None:
    suite = _suite(root, "quantgate.gate")
    props = ET.SubElement(suite, "properties")
    for key, value in (("verdict", verdict(report)), ("baseline", side_label(report, "baseline")),
                       ("candidate", side_label(report, "candidate")),
                       ("cases", (report.get("golden") or {}).get("cases", ""))):
        ET.SubElement(props, "property", {"name": key, "value": _clean(value)})
    for rule in gate_rules(report):
        name = _clean(rule.get("rule"))
        case = ET.SubElement(suite, "testcase", {"classname": "quantgate.gate", "name": name, "time": "0"})
        outcome = str(rule.get("outcome"))
        reason = _clean(rule.get("reason") or "")
        interval = fmt_interval(rule.get("low"), rule.get("high"), digits=4)
        detail = f"value {fmt_num(rule.get('value'), 4)} interval {interval} bound {rule.get('bound') or '-'}: {reason}"
        if outcome == "fail":
            ET.SubElement(case, "failure", {"message": reason, "type": "gate.fail"}).text = _clean(detail)
        elif outcome == "skip":
            ET.SubElement(case, "skipped", {"message": reason})
        elif outcome == "warn":
            ET.SubElement(case, "system-out").text = _clean(
                f"WARN (not enough evidence either way; a person should look): {detail}")
        else:
            ET.SubElement(case, "system-out").text = _clean(f"PASS: {detail}")


def _cases_suite(report: Report, root: ET.Element, as_failures: bool, max_output: int) -> None:
    suite = _suite(root, "quantgate.cases")
    for flip in sorted_flips(report):
        if flip.get("direction") != "regression":
            continue
        cid = str(flip.get("case_id"))
        name = f"{cid} [critical]" if flip.get("critical") else cid
        case = ET.SubElement(suite, "testcase", {"classname": "quantgate.cases", "name": _clean(name), "time": "0"})
        checks = flip.get("failed_checks") or []
        message = "; ".join(f"{c.get('code') or c.get('type')}: {c.get('reason', '')}" for c in checks) \
            or "failed on the candidate"
        critical = " (critical case)" if flip.get("critical") else ""
        body = "\n".join([
            f"regressed: passed on the baseline, fails on the candidate{critical}",
            f"tags: {', '.join(map(str, flip.get('tags') or [])) or '-'}",
            *(f"check {c.get('type')}: {c.get('code')}: {c.get('reason', '')}" for c in checks),
            *([f"the answers part at {divergence_note(flip)}"] if divergence_note(flip) else []),
            "--- baseline output ---", truncate(str(flip.get("baseline_output", "")), max_output),
            "--- candidate output ---", truncate(str(flip.get("candidate_output", "")), max_output),
        ])
        if as_failures:
            kind = "critical_regression" if flip.get("critical") else "regression"
            failure = ET.SubElement(case, "failure", {"message": _clean(truncate(message, 500)), "type": kind})
            failure.text = _clean(body)
        else:
            ET.SubElement(case, "system-out").text = _clean(body)


def to_junit(report: Report, cases_as_failures: bool = True, max_output: int = 2000) -> str:
    """JUnit XML (``<testsuites>`` with ``quantgate.gate`` and ``quantgate.cases``) as a string."""
    root = ET.Element("testsuites", {"name": "quantgate"})
    _gate_suite(report, root)
    _cases_suite(report, root, cases_as_failures, max_output)
    totals = [_count(s) for s in root.findall("testsuite")]
    root.set("tests", str(sum(t[0] for t in totals)))
    root.set("failures", str(sum(t[1] for t in totals)))
    root.set("errors", "0")
    root.set("skipped", str(sum(t[2] for t in totals)))
    root.set("time", "0")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
