"""``quantgate demo``'s offline half on a tiny model: quantize, answer side by side, gate each variant against fp32.

The full demo on the reference model is the README's main command (run by hand and before every stop);
this keeps its gate wiring under test in seconds. Serving and rollouts have their own tests
(tests/test_demo_gateway.py, tests/test_demo_rollout.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from quantgate.demo import run_demo


def test_the_demo_gates_each_variant_and_shows_why(tiny_model_dir: Path, tmp_path: Path) -> None:
    cases = [{"id": f"e{i}", "prompt": f"extract {i}", "assert": [{"type": "is-json"}], "tags": ["kind:extract"],
              "critical": i == 0} for i in range(6)]
    cases += [{"id": f"s{i}", "prompt": f"hello {i}", "assert": [{"type": "word-count", "value": {"min": 1}}],
               "tags": ["kind:short"]} for i in range(6)]
    golden = tmp_path / "golden.jsonl"
    golden.write_text("\n".join(json.dumps(c) for c in cases))
    console = Console(record=True, width=1000)
    results = run_demo(tmp_path / "out", ["int8wo", "int2wo-g32"], console, model_dir=tiny_model_dir,
                       golden_path=golden, max_cases=8, serve_requests=0, rollouts=False)
    assert [r.name for r in results] == ["fp32", "int8wo", "int2wo-g32"]
    assert results[0].report is None and all(r.weight_mb > 0 and r.decode_tok_s > 0 for r in results)
    assert (tmp_path / "out" / "int8wo" / "manifest.json").is_file()
    assert len((tmp_path / "out" / "golden-subset.jsonl").read_text().splitlines()) == 8
    for r in results[1:]:
        report = r.report
        assert report is not None and report["gate"]["verdict"] in ("pass", "warn", "fail")
        assert report["behaviour"]["overall"]["n"] == 8 and report["tokens"]["positions"] > 0
        assert set(r.answers) == {"e0", "s0"}  # the first case of each behaviour, side by side
    text = console.export_text()
    assert "Gate against fp32 on the golden set (default policy)" in text
    for r in results[1:]:
        verdict = r.report["gate"]["verdict"] if r.report else ""
        assert any(f" {r.name} " in line and f" {verdict.upper()} " in line for line in text.splitlines()), text
        # every rule that did not pass is printed with its reason
        for rule in r.report["gate"]["rules"] if r.report else []:
            if rule["outcome"] in ("fail", "warn"):
                assert f"{r.name}: {rule['outcome']} {rule['rule']}: {rule['reason']}" in text
