"""The demo's rollout half on a tiny random model: a canary equal to its baseline completes its rollout."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from quantgate.demo import reference_golden_path
from quantgate.demo_rollout import run_rollout_demo


def test_rollout_demo_promotes_an_equal_canary_step_by_step(tiny_model_dir: Path) -> None:
    console = Console(record=True, width=200)
    # one request at a time: a random model's logits are near-ties, so the company a row keeps in a
    # batch (float rounding of a wider padded attention) can flip a token and let one answer pass
    out = run_rollout_demo(("fp32", tiny_model_dir), ("same", tiny_model_dir), reference_golden_path(), console,
                           max_requests=400, max_tokens=8, concurrency=1)
    # the random model fails validation on every request, on both arms: a ratio of 1, inside the margin
    assert out["state"] == "completed", out["evidence"]
    assert [d["action"] for d in out["decisions"]] == ["complete", "promote", "start"]
    text = console.export_text()
    assert "promote 50% -> 100%" in text and "the canary becomes the route's baseline" in text
