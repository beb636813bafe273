"""The demo's serving half on a tiny random model: every request answered, broken formats escalated."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from quantgate.demo import reference_golden_path
from quantgate.demo_gateway import run_gateway_demo


def test_gateway_demo_escalates_broken_formats(tiny_model_dir: Path) -> None:
    console = Console(record=True, width=160)
    out = run_gateway_demo([("low", tiny_model_dir, 0.01), ("high", tiny_model_dir, 0.04)], reference_golden_path(),
                           console, requests=6, concurrency=3)
    assert out["requests"] == 6 and set(out["statuses"]) == {200}
    text = console.export_text()
    assert "served through the gateway" in text and "cost per successful request" in text
    # a random model never writes a valid tool call or JSON object: every request climbs to "high",
    # whose answers come back marked as failing validation
    assert out["variants"]["low"]["escalated_up"] == 6 and out["variants"]["low"]["answered"] == 0
    assert out["variants"]["high"]["answered"] == 6 and out["variants"]["high"]["valid"] == 0
    assert out["variants"]["low"]["cost"] > 0  # the failed attempts are paid for
