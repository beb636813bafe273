"""Report formats for a comparison report: terminal tables, JSON, Markdown, JUnit XML and HTML.

Every renderer takes the plain report dict (``compare_runs`` plus ``report["gate"]``) and nothing
else, tolerates the optional sections being absent, and never mutates the report. Only
``render_terminal`` writes anywhere (to the console it is given); the others return a string, and
``write_reports`` writes the requested files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from quantgate.evaluate.reports.html import to_html
from quantgate.evaluate.reports.json_report import lm_eval_results, to_json
from quantgate.evaluate.reports.junit import to_junit
from quantgate.evaluate.reports.markdown import to_markdown
from quantgate.evaluate.reports.terminal import render_terminal

__all__ = ["lm_eval_results", "render_terminal", "to_html", "to_json", "to_junit", "to_markdown", "write_reports"]


def write_reports(
    report: dict[str, Any],
    json_path: str | Path | None = None,
    markdown_path: str | Path | None = None,
    junit_path: str | Path | None = None,
    html_path: str | Path | None = None,
) -> list[Path]:
    """Write each requested format (UTF-8, parent folders created); return the paths written, in order."""
    written: list[Path] = []
    for path, render in ((json_path, to_json), (markdown_path, to_markdown), (junit_path, to_junit),
                         (html_path, to_html)):
        if path is None:
            continue
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(render(report), encoding="utf-8")
        written.append(p)
    return written
