"""Reasoning blocks are split off before grading: ``<think>`` inline, an opened-by-the-prompt block, ``reasoning_content``."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from quantgate.checks import CheckConfigError, default_registry, parse_case, parse_output
from quantgate.checks.harmony import is_harmony
from quantgate.checks.reasoning import ReasoningStream, prompt_opens_reasoning, split_reasoning


@pytest.mark.parametrize("text, opened, expected", [
    ('<think>\nThe user wants JSON.\n</think>\n\n{"a": 1}', None, ("The user wants JSON.", '{"a": 1}')),
    ('  <think>x</think>answer', None, ("x", "answer")),
    ("<think>\n\n</think>\n\nHello", None, ("", "Hello")),  # Qwen3 with thinking off
    ("Okay, JSON it is.\n</think>\n\n{}", None, ("Okay, JSON it is.", "{}")),  # R1: the prompt opened it
    ("Okay, JSON it is.\n</think>\n\n{}", True, ("Okay, JSON it is.", "{}")),
    ("still thinking when max_tokens hit", True, ("still thinking when max_tokens hit", "")),
    ("<think>still thinking when max_tokens hit", None, ("still thinking when max_tokens hit", "")),
    ('{"a": 1}', None, (None, '{"a": 1}')),
    ('{"a": 1}', False, (None, '{"a": 1}')),
    ("Use <think> and </think> tags like this.", None, (None, "Use <think> and </think> tags like this.")),
    ("a </think> in an answer", False, (None, "a </think> in an answer")),  # the prompt opened nothing
])
def test_split_reasoning(text: str, opened: bool | None, expected: tuple[str | None, str]) -> None:
    assert split_reasoning(text, opened) == expected


@given(st.text())
def test_split_never_invents_text(text: str) -> None:
    assume(not is_harmony(text))  # harmony tool calls are rewritten as <tool_call> blocks (test_harmony)
    reasoning, answer = split_reasoning(text)
    if reasoning is None:
        assert answer == text
    else:
        assert answer in text and reasoning in text and len(reasoning) + len(answer) <= len(text)


def test_prompt_opens_reasoning() -> None:
    assert prompt_opens_reasoning("<|User|>hi<|Assistant|><think>\n")
    assert not prompt_opens_reasoning("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert not prompt_opens_reasoning("<|im_start|>assistant\n")


def test_checks_grade_the_answer_not_the_reasoning() -> None:
    registry = default_registry()
    case = parse_case({"id": "j", "prompt": "json", "assert": [{"type": "is-json"}, {"type": "not-is-refusal"}]}, "t:1")
    thought = "<think>I can't just write prose; the user wants JSON.</think>\n{\"a\": 1}"
    result = registry.check(thought, case)
    assert result.passed, [v.reason for v in result.verdicts]
    out = parse_output({"role": "assistant", "content": '{"a": 1}', "reasoning_content": "plan"}, "t:2")
    assert out.text == '{"a": 1}' and out.reasoning == "plan"
    out = parse_output(thought, "t:3")
    assert out.reasoning == "I can't just write prose; the user wants JSON." and out.text == '{"a": 1}'
    with pytest.raises(CheckConfigError, match="t:4: output.reasoning_content: expected a string or null"):
        parse_output({"role": "assistant", "content": "x", "reasoning_content": 3}, "t:4")


def _streamed(text: str, cuts: list[int], opened: bool) -> tuple[str, str]:
    stream = ReasoningStream(opened)
    parts, last = [], 0
    for cut in sorted(c % (len(text) + 1) for c in cuts) + [len(text)]:
        parts += stream.feed(text[last:cut])
        last = cut
    parts += stream.flush()
    return ("".join(t for k, t in parts if k == "reasoning"), "".join(t for k, t in parts if k == "content"))


_PIECES = st.sampled_from(["<think>", "</think>", "<th", "ink>", "</", "think", ">", " ", "\n", "{", "}", "a", "I can't",
                          "analysis", "anal", "assistantfinal", "assistant", "final"])  # stripped gpt-oss markers


@given(st.lists(_PIECES, max_size=12), st.lists(st.integers(0, 200), max_size=6), st.booleans())
def test_streamed_split_equals_the_whole_split(pieces: list[str], cuts: list[int], opened: bool) -> None:
    text = "".join(pieces)
    reasoning, answer = _streamed(text, cuts, opened)
    whole_reasoning, whole_answer = split_reasoning(text, opened)
    assert answer == whole_answer
    assert reasoning.strip() == (whole_reasoning or "")
