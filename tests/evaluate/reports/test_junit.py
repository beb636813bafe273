from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from quantgate.evaluate.reports import to_junit


def _one(element: ET.Element, tag: str) -> ET.Element:
    found = element.find(tag)
    assert found is not None, f"no <{tag}> in <{element.tag} name={element.get('name')!r}>"
    return found


def _suites(xml: str) -> tuple[ET.Element, dict[str, ET.Element]]:
    root = ET.fromstring(xml)
    return root, {s.get("name", ""): s for s in root.iter("testsuite")}


def test_parses_and_counts(report: dict[str, Any]) -> None:
    root, suites = _suites(to_junit(report))
    gate, cases = suites["quantgate.gate"], suites["quantgate.cases"]
    assert (gate.get("tests"), gate.get("failures"), gate.get("skipped"), gate.get("errors")) == ("7", "2", "1", "0")
    assert (cases.get("tests"), cases.get("failures"), cases.get("skipped")) == ("10", "10", "0")
    assert (root.get("tests"), root.get("failures"), root.get("skipped")) == ("17", "12", "1")
    for suite in (gate, cases):  # the attributes agree with the elements
        tcs = suite.findall("testcase")
        assert int(suite.get("tests", "")) == len(tcs)
        assert int(suite.get("failures", "")) == sum(tc.find("failure") is not None for tc in tcs)
        assert int(suite.get("skipped", "")) == sum(tc.find("skipped") is not None for tc in tcs)


def test_gate_outcomes(report: dict[str, Any]) -> None:
    _, suites = _suites(to_junit(report))
    by_name = {tc.get("name"): tc for tc in suites["quantgate.gate"].findall("testcase")}
    assert by_name["pass_rate"].find("failure") is not None
    assert "1 critical case(s) regressed: j0" in _one(by_name["critical_regressions"], "failure").get("message", "")
    assert by_name["pass_rate[tag kind:missing]"].find("skipped") is not None
    warn = by_name["kl_mean"]
    assert warn.find("failure") is None and warn.find("skipped") is None
    assert warn.findtext("system-out", "").startswith("WARN")
    props = {p.get("name"): p.get("value") for p in suites["quantgate.gate"].iter("property")}
    assert props["verdict"] == "fail" and props["cases"] == "31"


def test_regressed_cases(report: dict[str, Any]) -> None:
    _, suites = _suites(to_junit(report))
    tcs = suites["quantgate.cases"].findall("testcase")
    names = [tc.get("name") for tc in tcs]
    assert names[0] == "j0 [critical]" and "j3" in names and "j99" not in names  # improvements are not tests
    assert _one(tcs[0], "failure").get("type") == "critical_regression"
    j3 = _one(tcs[names.index("j3")], "failure")
    assert j3.get("message", "").startswith("json.parse_error:")
    body = j3.text or ""
    assert "<script>alert(1)</script>" in body and "␀" in body and "--- baseline output ---" in body


def test_cases_as_passing(report: dict[str, Any]) -> None:
    root, suites = _suites(to_junit(report, cases_as_failures=False))
    assert suites["quantgate.cases"].get("failures") == "0" and root.get("failures") == "2"
    assert "regressed" in _one(suites["quantgate.cases"], "testcase").findtext("system-out", "")


def test_degraded_and_empty(degraded: dict[str, Any], empty: dict[str, Any]) -> None:
    _, suites = _suites(to_junit(degraded))
    assert suites["quantgate.gate"].get("skipped") == "4"
    root, suites = _suites(to_junit(empty))
    assert root.get("tests") == "0" and suites["quantgate.cases"].get("tests") == "0"


def test_invalid_xml_characters_are_replaced(report: dict[str, Any]) -> None:
    report["behaviour"]["flips"][0]["candidate_output"] = "\ud800 \ufffe \x0c end"
    report["gate"]["rules"][0]["reason"] = "bad \x01 reason"
    ET.fromstring(to_junit(report))


def test_regressed_case_says_where_the_answers_part(parted: dict[str, Any]) -> None:
    _, suites = _suites(to_junit(parted))
    tcs = suites["quantgate.cases"].findall("testcase")
    assert 'the answers part at token 7: "}" -> ",", baseline margin 0.0008 nats (near tie)' in (
        _one(tcs[0], "failure").text or "")
    assert "the answers part" not in (_one(tcs[1], "failure").text or "")
