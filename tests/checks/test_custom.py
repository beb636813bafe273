"""python: inline expressions and bodies, files, callables, return shapes, errors, the opt-in."""

from __future__ import annotations

from pathlib import Path

import pytest

from quantgate.checks import CheckConfigError, Output, default_registry, parse_case

from .helpers import verdict

ALLOW = default_registry(allow_python=True)


def test_refused_without_opt_in() -> None:
    with pytest.raises(CheckConfigError, match=r"case.assert\[0\]: python: runs Python code .* --allow-python"):
        verdict("python", "x", "True")


@pytest.mark.parametrize(
    ("source", "output", "passed", "score", "code"),
    [
        ("len(output) < 5", "abc", True, 1.0, "ok"),
        ("len(output) < 5", "abcdef", False, 0.0, "python.failed"),
        ("0.75", "x", True, 0.75, "ok"),
        ("0", "x", False, 0.0, "python.failed"),
        ("{'pass': False, 'score': 0.2, 'reason': 'too long'}", "x", False, 0.2, "python.failed"),
        ("{'pass': True}", "x", True, 1.0, "ok"),
        (
            "words = output.split()\nif len(words) > 2:\n"
            "    return {'pass': True, 'reason': 'long enough'}\nreturn False",
            "a b c",
            True,
            1.0,
            "ok",
        ),
        ("context['vars']['name'] in output", "hi Ana", True, 1.0, "ok"),
        ("context['case']['id'] == 't'", "x", True, 1.0, "ok"),
    ],
)
def test_inline(source: str, output: str, passed: bool, score: float, code: str) -> None:
    v = verdict("python", output, source, registry=ALLOW, vars={"name": "Ana"})
    assert (v.passed, v.score, v.code) == (passed, score, code), v.reason


def test_threshold_and_errors() -> None:
    assert not verdict("python", "x", "0.4", registry=ALLOW, threshold=0.5).passed
    assert verdict("python", "x", "0.6", registry=ALLOW, threshold=0.5).passed
    v = verdict("python", "x", "1 / 0", registry=ALLOW)
    assert (v.passed, v.code, v.errored) == (False, "python.error", True)
    assert "ZeroDivisionError" in v.reason
    v = verdict("not-python", "x", "1 / 0", registry=ALLOW)
    assert (v.passed, v.errored) == (False, True)  # a crash is never a pass
    v = verdict("python", "x", "'yes'", registry=ALLOW)
    assert (v.passed, v.code, v.errored) == (False, "python.bad_return", True)
    v = verdict("python", "x", "{'pass': True, 'score': 'high'}", registry=ALLOW)
    assert v.code == "python.bad_return"
    v = verdict("not-python", "x", "True", registry=ALLOW)
    assert (v.passed, v.code) == (False, "python.passed")


def test_tool_calls_and_finish_reason_in_context() -> None:
    src = "return context['tool_calls'][0]['name'] == 'f' and context['finish_reason'] == 'tool_calls'"
    out = Output('<tool_call>{"name": "f", "arguments": {}}</tool_call>', finish_reason="tool_calls")
    assert verdict("python", out, src, registry=ALLOW).passed


def test_file_and_callable(tmp_path: Path) -> None:
    (tmp_path / "grader.py").write_text(
        "def get_assert(output, context):\n    return 'ok' in output\n\n"
        "def strict(output, context):\n    return {'pass': output == 'ok', 'score': 1.0 if output == 'ok' else 0.1}\n"
    )
    reg = default_registry(allow_python=True, base_dir=tmp_path)
    assert verdict("python", "it is ok", "file://grader.py", registry=reg).passed
    v = verdict("python", "it is ok", "file://grader.py:strict", registry=reg)
    assert (v.passed, v.score) == (False, 0.1)
    assert verdict("python", "ok", f"file://{tmp_path / 'grader.py'}:strict", registry=ALLOW).passed
    case = parse_case({"id": "c", "assert": [{"type": "contains", "value": "x"}]}, "t:1")
    from quantgate.checks import Assertion

    reg2 = default_registry(allow_python=True)
    compiled = reg2.compile(Assertion("python", lambda output, context: output.startswith("x")), case)
    assert compiled.run(Output("xyz")).passed


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("file://missing.py", "no such file"),
        ("file://grader.py:nope", "has no function 'nope'"),
        ("file://broken.py", "importing"),
        ("def (", "not a Python expression or function body"),
        ("", "expected file://PATH[:FUNCTION], inline Python or a callable"),
        (3, "expected file://PATH[:FUNCTION], inline Python or a callable, got integer"),
    ],
)
def test_bad_values(tmp_path: Path, value: object, fragment: str) -> None:
    (tmp_path / "grader.py").write_text("def get_assert(output, context):\n    return True\n")
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n")
    reg = default_registry(allow_python=True, base_dir=tmp_path)
    with pytest.raises(CheckConfigError) as exc:
        verdict("python", "x", value, registry=reg)
    assert fragment in str(exc.value) and "case.assert[0].value" in str(exc.value)
