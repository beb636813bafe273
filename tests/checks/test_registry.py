"""The registry: resolution, negation, unknown types, thresholds, aggregation, custom types, codes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from quantgate.checks import (
    CODES,
    Assertion,
    Case,
    CheckType,
    Outcome,
    Output,
    Registry,
    UnknownCheckError,
    Verdict,
    aggregate,
    check_output,
    default_registry,
    parse_case,
)
from quantgate.errors import QuantgateError


def test_every_builtin_resolves_plain_and_negated() -> None:
    reg = default_registry()
    assert {
        "equals",
        "contains",
        "icontains",
        "contains-all",
        "contains-any",
        "regex",
        "starts-with",
        "is-json",
        "contains-json",
        "is-refusal",
        "word-count",
        "finish-reason",
        "python",
        "is-valid-tool-call",
        "tool-call-match",
        "has-citation",
        "token-count",
    } <= set(reg.names())
    for name in reg.names():
        assert reg.resolve(name) == (reg.get(name), False)
        assert reg.resolve("not-" + name) == (reg.get(name), True)
    assert reg.resolve("not-not-contains") is None
    assert reg.resolve("nope") is None


def test_unknown_type_names_line_type_and_suggestion() -> None:
    case = parse_case(
        {"id": "c", "assert": [{"type": "contains", "value": "x"}, {"type": "contians", "value": "x"}]}, "cases.jsonl:7"
    )
    with pytest.raises(UnknownCheckError) as exc:
        default_registry().compile_case(case)
    msg = str(exc.value)
    assert msg.startswith("cases.jsonl:7: case.assert[1].type: unknown check type 'contians'")
    assert "did you mean 'contains'" in msg
    assert isinstance(exc.value, QuantgateError) and exc.value.exit_code == 2


def test_threshold_only_where_it_means_something() -> None:
    case = Case("c", (Assertion("contains", "x", threshold=0.5),), where="f:1")
    with pytest.raises(QuantgateError, match=r"f:1: case.assert\[0\].threshold: contains: threshold has no meaning"):
        default_registry().compile_case(case)


def test_aggregate_follows_promptfoo() -> None:
    v = lambda passed, score, w: Verdict("t", passed, score, "", "ok" if passed else "x", w)  # noqa: E731
    assert aggregate([v(True, 1.0, 1), v(False, 0.0, 3)]) == (False, 0.25)
    assert aggregate([v(True, 1.0, 1), v(False, 0.0, 0)]) == (True, 1.0)  # weight 0: report only
    assert aggregate([]) == (True, 1.0)


def test_check_output_helper_with_weights() -> None:
    result = check_output(
        "The capital is Paris.",
        [
            {"type": "contains", "value": "Paris", "weight": 2},
            {"type": "contains", "value": "France", "weight": 1},
            {"type": "starts-with", "value": "Nope", "weight": 0, "metric": "style"},
        ],
    )
    assert not result.passed
    assert result.score == pytest.approx(2 / 3)
    assert [v.code for v in result.verdicts] == ["ok", "text.not_found", "text.wrong_prefix"]
    assert result.verdicts[2].metric == "style" and result.verdicts[2].to_dict()["metric"] == "style"
    assert check_output({"role": "assistant", "content": "hi"}, [Assertion("equals", "hi")]).passed


def test_custom_check_type_and_shared_env() -> None:
    calls: list[str] = []

    def compile_shout(value: object, ctx: object) -> object:
        def check(out: Output) -> Outcome:
            calls.append(out.text)
            ok = out.text.isupper()
            return Outcome(
                ok, float(ok), "shouting" if ok else "not shouting", "shout.matched" if ok else "shout.quiet"
            )

        return check

    reg = Registry([CheckType("shout", compile_shout, "all caps")])
    case = Case("c", (Assertion("shout"), Assertion("not-shout")))
    result = reg.compile_case(case).run(Output("HEY"))
    assert [(v.passed, v.code) for v in result.verdicts] == [(True, "ok"), (False, "shout.matched")]
    with pytest.raises(ValueError, match="already registered"):
        reg.register(CheckType("shout", compile_shout, ""))
    with pytest.raises(ValueError, match="may not start with 'not-'"):
        reg.register(CheckType("not-x", compile_shout, ""))
    assert reg.env.memo("k", lambda: 1) == 1 and reg.env.memo("k", lambda: 2) == 1
    assert default_registry().env is not default_registry().env  # no shared state


def test_compiled_case_is_reusable_across_samples() -> None:
    case = parse_case({"id": "c", "assert": [{"type": "icontains", "value": "paris"}]}, "f:1")
    compiled = default_registry().compile_case(case)
    assert [compiled.run(Output(t)).passed for t in ("Paris", "Rome", "PARIS")] == [True, False, True]


def test_every_code_in_the_source_is_documented() -> None:
    """Codes are API: each one a check can emit must be in CODES (and so in docs/checks.md)."""
    pkg = Path(__file__).resolve().parents[2] / "quantgate" / "checks"
    found = set()
    for path in pkg.glob("*.py"):
        if path.name == "codes.py":
            continue
        found |= set(
            re.findall(
                r'"((?:text|length|finish_reason|json|refusal|python|tool_call|tool_call_match|'
                r'citation)\.[a-z_]+)"',
                path.read_text(),
            )
        )
    assert found and found <= set(CODES), found - set(CODES)
    docs = (pkg.parents[1] / "docs" / "checks.md").read_text()
    assert all(f"`{code}`" in docs for code in CODES), [c for c in CODES if f"`{c}`" not in docs]


def test_the_memo_is_bounded_oldest_first() -> None:
    from quantgate.checks.registry import CheckEnv

    env = CheckEnv()
    builds: list[int] = []
    for i in range(CheckEnv.MEMO_LIMIT + 2):
        assert env.memo(("k", i), lambda i=i: builds.append(i) or i) == i
    assert len(builds) == CheckEnv.MEMO_LIMIT + 2
    assert env.memo(("k", CheckEnv.MEMO_LIMIT + 1), lambda: -1) == CheckEnv.MEMO_LIMIT + 1  # kept
    assert env.memo(("k", 0), lambda: -1) == -1  # the oldest went first
