"""quantgate loadtest against a real fake upstream: counts, percentiles, sheds, prompt files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from quantgate.cli import main
from quantgate.loadtest import LoadtestError, format_table, load_prompts, percentile, run_sweep
from tests.fakes.upstream import FakeUpstream, Reply, completion, sse_events


def test_percentile() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([5], 99) == 5


def test_sweep_counts_ok_shed_and_errors(tmp_path: Path) -> None:
    n = {"i": 0}

    def reply(body: dict) -> Reply:
        n["i"] += 1
        if n["i"] % 10 == 0:
            return Reply(429, {"error": {"message": "slow down"}})
        if n["i"] % 10 == 5:
            return Reply(500, {"error": {"message": "boom"}})
        return Reply(body=completion("ok", completion_tokens=4))

    with FakeUpstream(reply=reply) as up:
        [one, four] = run_sweep(up.url, "fake", [{"messages": [{"role": "user", "content": "x"}]}], [1, 4], 40)
    assert (one.ok, one.shed, one.errors) == (32, 4, 4)
    assert four.ok + four.shed + four.errors == 40
    assert one.tokens_per_s > 0 and one.latency_p99_ms >= one.latency_p50_ms
    assert "500" in (one.error_sample or "")


def _usage_only_when_asked(body: dict[str, Any]) -> Reply:
    # as OpenAI-compatible servers do: a streamed answer carries usage only on request
    events = sse_events(["a", "b"])
    if not (body.get("stream_options") or {}).get("include_usage"):
        events = [e for e in events if '"usage"' not in e]
    return Reply(events=events)


def test_stream_measures_ttft_and_tokens() -> None:
    with FakeUpstream(reply=_usage_only_when_asked) as up:
        [r] = run_sweep(up.url + "/v1", "fake", [{"messages": [{"role": "user", "content": "x"}]}], [2], 6, stream=True)
    assert r.ok == 6 and r.ttft_p50_ms is not None and r.tokens_per_s > 0


def test_a_cut_stream_is_an_error_not_a_success() -> None:
    replies = iter([sse_events(["a"], finish_reason=None, done=False),  # the server died mid-answer
                    sse_events(["a"])[:2] + ['{"error": {"message": "upstream went away"}}'],  # a gateway's cut
                    sse_events(["a", "b"])] * 4)
    with FakeUpstream(reply=lambda body: Reply(events=next(replies))) as up:
        [r] = run_sweep(up.url, "fake", [{"messages": [{"role": "user", "content": "x"}]}], [1], 6, stream=True)
    assert (r.ok, r.errors) == (2, 4)
    assert r.error_sample == "stream cut: ended without [DONE]"


def test_the_table_shows_every_ttft_percentile() -> None:
    with FakeUpstream(reply=_usage_only_when_asked) as up:
        results = run_sweep(up.url, "fake", [{"messages": [{"role": "user", "content": "x"}]}], [1], 3, stream=True)
    head, row = format_table(results).splitlines()[:2]
    assert head.split()[-6:] == ["ttft", "p50", "ttft", "p95", "ttft", "p99"]
    assert row.split()[-3:] == [f"{v:.1f}" for v in (results[0].ttft_p50_ms, results[0].ttft_p95_ms,
                                                      results[0].ttft_p99_ms)]


def test_prompt_files(tmp_path: Path) -> None:
    bodies = tmp_path / "b.jsonl"
    bodies.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}], "model": "x"}) + "\n")
    assert load_prompts(bodies) == [{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 64}]
    golden = Path(__file__).resolve().parents[1] / "quantgate" / "reference" / "golden" / "golden.jsonl"
    loaded = load_prompts(golden, max_tokens=8)
    assert len(loaded) == 320 and all(b["max_tokens"] == 8 for b in loaded)
    # a case's response_format travels with its prompt: the gateway validates against it, part of the cost
    fmt = {"type": "json_object"}
    cases = tmp_path / "g.jsonl"
    cases.write_text(json.dumps({"id": "a", "prompt": "json please", "response_format": fmt,
                                 "assert": [{"type": "is-json"}]}) + "\n")
    assert load_prompts(cases) == [{"messages": [{"role": "user", "content": "json please"}], "max_tokens": 64,
                                    "response_format": fmt}]
    with pytest.raises(LoadtestError, match="not found"):
        load_prompts(tmp_path / "nope.jsonl")


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bodies = tmp_path / "b.jsonl"
    bodies.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    out = tmp_path / "r.json"
    with FakeUpstream() as up, pytest.raises(SystemExit) as exit_:
        main(["loadtest", up.url, "--model", "fake", "--prompts", str(bodies), "--concurrency", "1,2",
              "--requests", "5", "--json", str(out)])
    assert exit_.value.code == 0
    assert "req/s" in capsys.readouterr().out
    assert [lvl["concurrency"] for lvl in json.loads(out.read_text())["levels"]] == [1, 2]
    with pytest.raises(SystemExit) as exit_:
        main(["loadtest", "http://127.0.0.1:9", "--model", "m", "--prompts", str(bodies), "--concurrency", "a"])
    assert exit_.value.code == 2
