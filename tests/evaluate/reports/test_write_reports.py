from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from quantgate.evaluate.reports import to_markdown, write_reports


def test_writes_requested_formats_only(report: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "nested" / "dir"
    written = write_reports(report, json_path=out / "r.json", junit_path=out / "r.xml", html_path=str(out / "r.html"))
    assert written == [out / "r.json", out / "r.xml", out / "r.html"]
    assert json.loads((out / "r.json").read_text())["results"]["diff"]["gate_verdict,overall"] == "fail"
    assert ET.parse(out / "r.xml").getroot().get("tests") == "17"
    assert (out / "r.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert not (out / "r.md").exists()


def test_positional_order_matches_the_cli(report: dict[str, Any], tmp_path: Path) -> None:
    md = tmp_path / "r.md"
    assert write_reports(report, None, md, None, None) == [md]
    assert md.read_text(encoding="utf-8") == to_markdown(report)
    assert write_reports(report) == []


def test_does_not_mutate_the_report(report: dict[str, Any], tmp_path: Path) -> None:
    before = json.dumps(report, sort_keys=True)
    write_reports(report, tmp_path / "a.json", tmp_path / "a.md", tmp_path / "a.xml", tmp_path / "a.html")
    assert json.dumps(report, sort_keys=True) == before
