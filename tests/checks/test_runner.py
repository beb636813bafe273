"""run_check end to end: verdict lines, exit codes, every bad-input path, throughput, no torch."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from quantgate.checks import CasesFileError, CheckConfigError, UnknownCheckError, run_check
from quantgate.checks.runner import MAX_LISTED

GOOD = {"case": {"id": "a", "assert": [{"type": "contains", "value": "Paris"}]}, "output": "Paris it is."}
BAD = {"case": {"id": "b", "critical": True, "assert": [{"type": "contains", "value": "Rome"}]}, "output": "Paris."}


def write(tmp_path: Path, *lines: Any) -> Path:
    path = tmp_path / "cases.jsonl"
    path.write_bytes(
        b"".join((line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n" for line in lines)
    )
    return path


def run(path: Path, **kw: Any) -> tuple[list[dict[str, Any]], Any]:
    out = io.StringIO()
    summary = run_check(path, out, **kw)
    return [json.loads(line) for line in out.getvalue().splitlines()], summary


def test_verdict_lines_and_summary(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD, b"", {**BAD, "sample": 3})
    lines, summary = run(path)
    assert [line["line"] for line in lines] == [1, 3]  # blank lines skipped, numbering kept
    assert lines[0] == {
        "line": 1,
        "id": "a",
        "passed": True,
        "score": 1.0,
        "critical": False,
        "verdicts": [
            {
                "type": "contains",
                "passed": True,
                "score": 1.0,
                "code": "ok",
                "reason": "output contains 'Paris'",
                "weight": 1.0,
            }
        ],
    }
    assert lines[1]["sample"] == 3 and lines[1]["verdicts"][0]["code"] == "text.not_found"
    assert (summary.lines, summary.passed, summary.failed, summary.critical_failed) == (2, 1, 1, 1)
    assert summary.exit_code == 1
    assert "2 output(s): 1 passed, 1 failed, 1 critical" == summary.line()
    _, summary = run(write(tmp_path, GOOD))
    assert summary.exit_code == 0


def test_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD, b'{"case": {"id": "x", "assert": []}, "output": "x"', GOOD)
    out = io.StringIO()
    with pytest.raises(CasesFileError, match=rf"^{path}:2: not valid JSON: Expecting"):
        run_check(path, out)
    graded = [json.loads(line)["line"] for line in out.getvalue().splitlines()]
    assert graded == [1, 3]  # the good lines on either side were graded


def test_every_bad_line_is_named_at_once(tmp_path: Path) -> None:
    unknown = {"case": {"id": "u", "assert": [{"type": "contians", "value": "a"}]}, "output": "x"}
    no_output = {"case": {"id": "n", "assert": [{"type": "contains", "value": "a"}]}}
    path = write(tmp_path, b"\xff{}", GOOD, b"{oops", unknown, GOOD, no_output)
    out = io.StringIO()
    with pytest.raises(CasesFileError) as exc:
        run_check(path, out)
    message = str(exc.value)
    assert message.startswith(f"{path}: 4 bad line(s), the other 2 graded:"), message
    for fragment in (":1: not UTF-8", ":3: not valid JSON", ":4: case.assert[0].type: unknown check type 'contians'",
                     ":6: output: missing"):
        assert fragment in message, message
    assert [json.loads(line)["line"] for line in out.getvalue().splitlines()] == [2, 5]


def test_bad_lines_beyond_the_listed_ones_are_counted(tmp_path: Path) -> None:
    path = write(tmp_path, *([b"{oops"] * (MAX_LISTED + 7)))
    with pytest.raises(CasesFileError) as exc:
        run_check(path, io.StringIO())
    message = str(exc.value)
    assert f"{MAX_LISTED + 7} bad line(s)" in message and message.endswith("... and 7 more")
    assert message.count("not valid JSON") == MAX_LISTED


def test_unknown_type_names_line_and_type(tmp_path: Path) -> None:
    path = write(
        tmp_path, GOOD, {"case": {"id": "x", "assert": [{"type": "llm-rubric", "value": "nice"}]}, "output": "x"}
    )
    with pytest.raises(UnknownCheckError, match=rf"^{path}:2: case.assert\[0\].type: unknown check type 'llm-rubric'"):
        run(path)


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        (b"\xff\xfe{}", ":1: not UTF-8"),
        (b"[" * 200_000, ":1: not valid JSON"),
        (b'"just a string"', ':1: expected an object {"case": ..., "output": ...}, got string'),
        (
            json.dumps(
                {"case": {"id": "x", "assert": [{"type": "contains", "value": 1, "weight": "high"}]}, "output": "x"}
            ).encode(),
            ":1: case.assert[0].weight: expected a number >= 0",
        ),
        (
            json.dumps(
                {"case": {"id": "x", "assert": [{"type": "contains", "value": {"a": 1}}]}, "output": "x"}
            ).encode(),
            ":1: case.assert[0].value: contains: expected a string, got object",
        ),
        (
            json.dumps({"case": {"id": "x", "assert": [{"type": "python", "value": "True"}]}, "output": "x"}).encode(),
            ":1: case.assert[0]: python: runs Python code",
        ),
        (
            json.dumps({"case": {"id": "x", "assert": [{"type": "contains", "value": "a"}]}, "output": 5}).encode(),
            ":1: output: expected a string or an assistant message object, got integer",
        ),
    ],
)
def test_bad_input_paths(tmp_path: Path, line: bytes, fragment: str) -> None:
    path = write(tmp_path, line)
    with pytest.raises((CasesFileError, CheckConfigError)) as exc:
        run(path)
    assert str(exc.value).startswith(str(path)) and fragment in str(exc.value), str(exc.value)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(CasesFileError, match="no such file"):
        run_check(tmp_path / "nope.jsonl", io.StringIO())
    with pytest.raises(CasesFileError, match="is a directory"):
        run_check(tmp_path, io.StringIO())


def test_python_file_resolves_next_to_the_cases_file(tmp_path: Path) -> None:
    (tmp_path / "grade.py").write_text("def get_assert(output, context):\n    return output.endswith('.')\n")
    path = write(
        tmp_path, {"case": {"id": "p", "assert": [{"type": "python", "value": "file://grade.py"}]}, "output": "done."}
    )
    lines, _ = run(path, allow_python=True)
    assert lines[0]["passed"]


def test_stdin_and_no_torch(tmp_path: Path) -> None:
    """`-` reads stdin; a run with every family, is-refusal included, never imports torch."""
    lines = [
        GOOD,
        {
            "case": {
                "id": "r",
                "assert": [
                    {"type": "is-refusal"},
                    {"type": "is-json"},
                    {"type": "has-citation", "value": 2},
                    {"type": "tool-call-match", "value": [{"f": {}}]},
                ],
            },
            "output": "I'm sorry, but I can't help with that.",
        },
    ]
    code = (
        "import sys, io; from quantgate.checks import run_check; out = io.StringIO(); "
        "s = run_check('-', out); print(out.getvalue(), end=''); "
        "print('TORCH', 'torch' in sys.modules, s.exit_code)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        input="\n".join(map(json.dumps, lines)),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    out = proc.stdout.splitlines()
    assert out[-1] == "TORCH False 1"
    refusal = json.loads(out[1])["verdicts"][0]
    assert refusal["passed"], refusal


def test_import_does_not_pull_torch() -> None:
    code = "import sys, quantgate.checks; print('torch' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.split() == ["False", "False"]


def test_throughput(tmp_path: Path) -> None:
    """bench/checks.py measures properly; this guards against an order-of-magnitude regression."""
    import importlib.util
    import random

    spec = importlib.util.spec_from_file_location(
        "bench_checks", Path(__file__).resolve().parents[2] / "bench" / "checks.py"
    )
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    rng = random.Random(0)
    path = write(tmp_path, *(bench._line(rng, i) for i in range(2000)))
    run_check(path, io.StringIO())  # warm caches
    t0 = time.perf_counter()
    out = io.StringIO()
    summary = run_check(path, out)
    dt = time.perf_counter() - t0
    verdicts = sum(len(json.loads(line)["verdicts"]) for line in out.getvalue().splitlines())
    assert summary.lines == 2000
    # 5,000 verdicts/s is the target on an idle 2-core machine (bench: ~7,400 on a loaded one);
    # the bar here is lower so a busy CI box does not flake.
    assert verdicts / dt > 1500, f"{verdicts / dt:.0f} verdicts/s"
