"""Throughput of ``quantgate check``: verdicts and lines per second through ``run_check``.

Builds a JSONL file of ``{"case", "output"}`` lines in a temporary folder (a seeded mix of the
deterministic check families: text, JSON with a schema, OpenAI ``tool_calls`` messages and Hermes
``<tool_call>`` text checked with ``is-valid-tool-call`` and ``tool-call-match``, citations; about
half the outputs fail), then times ``quantgate.checks.run_check`` over it, end to end: reading,
JSON decoding, case parsing, assertion compiling, grading and writing the verdict lines (to a
discarding stream). Median of ``--repeats`` runs after a warm-up.

``is-refusal`` is measured separately (``--refusal N``): with the learned detector each output
costs one MiniLM encoder pass, a different order of magnitude, reported in outputs per second.

Usage::

    python bench/checks.py                  # 20,000 lines, 3 repeats
    python bench/checks.py --lines 2000 --repeats 1 --refusal 32
"""

from __future__ import annotations

import argparse
import io
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from quantgate.checks import default_registry, load_refusal_detector, run_check

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1},
            },
            "required": ["city"],
        },
    },
}
FLIGHTS = {
    "type": "function",
    "function": {
        "name": "search_flights",
        "parameters": {
            "type": "object",
            "properties": {"from": {"type": "string"}, "to": {"type": "string"}, "passengers": {"type": "integer"}},
            "required": ["from", "to"],
        },
    },
}
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}, "email": {"type": "string"}},
    "required": ["name", "age"],
}
CITIES = ["Paris", "Rome", "Lisbon", "Oslo", "Kyoto", "Lima"]


def _line(rng: random.Random, i: int) -> dict[str, Any]:
    kind = i % 5
    city = rng.choice(CITIES)
    good = rng.random() < 0.5
    if kind == 0:
        text = f"The capital you asked about is {city}." if good else "I am not sure."
        case = {
            "id": f"text-{i}",
            "assert": [
                {"type": "icontains", "value": city},
                {"type": "word-count", "value": {"max": 40}},
                {"type": "not-contains", "value": "As an AI"},
                {"type": "regex", "value": r"\b[A-Z][a-z]+\."},
            ],
        }
        return {"case": case, "output": text}
    if kind == 1:
        obj = {"name": "Ana", "age": 31 if good else "31", "email": "ana@example.com"}
        case = {"id": f"json-{i}", "assert": [{"type": "is-json", "value": PERSON}, {"type": "contains-json"}]}
        return {"case": case, "output": json.dumps(obj)}
    if kind == 2:
        args = {"city": city, "unit": "celsius" if good else "kelvin"}
        msg = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": json.dumps(args)}}
            ],
        }
        case = {
            "id": f"tool-{i}",
            "tools": [WEATHER, FLIGHTS],
            "assert": [
                {"type": "is-valid-tool-call"},
                {
                    "type": "tool-call-match",
                    "value": [{"name": "get_weather", "arguments": {"city": [city], "unit": ["celsius", ""]}}],
                },
            ],
        }
        return {"case": case, "output": msg, "finish_reason": "tool_calls"}
    if kind == 3:
        calls = [
            {"name": "search_flights", "arguments": {"from": "SFO", "to": "JFK", "passengers": 2 if good else "two"}},
            {"name": "get_weather", "arguments": {"city": city}},
        ]
        text = "\n".join(f"<tool_call>{json.dumps(c)}</tool_call>" for c in calls)
        case = {
            "id": f"hermes-{i}",
            "tools": [WEATHER, FLIGHTS],
            "assert": [
                {"type": "is-valid-tool-call"},
                {
                    "type": "tool-call-match",
                    "value": [
                        {"name": "get_weather", "arguments": {"city": [city]}},
                        {"name": "search_flights", "arguments": {"from": ["SFO"], "to": ["JFK"], "passengers": [2]}},
                    ],
                },
            ],
        }
        return {"case": case, "output": text}
    n = 2 if good else 4
    case = {
        "id": f"cite-{i}",
        "sources": ["s1", "s2", "s3"],
        "assert": [{"type": "has-citation"}, {"type": "contains-any", "value": CITIES}],
    }
    return {"case": case, "output": f"{city} hosted the event in 1937 [1] and again later [{n}]."}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lines", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--refusal", type=int, default=0, help="also time is-refusal on N outputs")
    args = ap.parse_args(argv)
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cases.jsonl"
        with path.open("w") as f:
            for i in range(args.lines):
                f.write(json.dumps(_line(rng, i)) + "\n")
        times, verdicts = [], 0
        for r in range(args.repeats + 1):  # run 0 is the warm-up
            sink = io.StringIO()
            t0 = time.perf_counter()
            summary = run_check(path, sink)
            dt = time.perf_counter() - t0
            if r:
                times.append(dt)
            verdicts = sum(len(json.loads(line)["verdicts"]) for line in sink.getvalue().splitlines()[:1000])
            verdicts = round(verdicts * summary.lines / min(summary.lines, 1000))
    med = statistics.median(times)
    print(
        f"run_check: {summary.lines} lines, {verdicts} verdicts ({summary.passed} lines passed) in {med:.3f} s "
        f"(median of {args.repeats}): {summary.lines / med:,.0f} lines/s, {verdicts / med:,.0f} verdicts/s"
    )
    if args.refusal:
        detector = load_refusal_detector()
        texts = [
            ("I'm sorry, but I can't help with that." if i % 2 else f"The answer is {i}, as the table shows.")
            for i in range(args.refusal)
        ]
        reg = default_registry(refusal_detector=detector)
        detector.probability("warm-up")
        t0 = time.perf_counter()
        for t in texts:
            detector.probability(t)
        dt = time.perf_counter() - t0
        print(f"is-refusal ({detector.name}): {len(texts)} outputs in {dt:.2f} s: {len(texts) / dt:,.1f} outputs/s")
        del reg
    print(f"python {sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
