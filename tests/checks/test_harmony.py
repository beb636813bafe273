"""gpt-oss's harmony channels: reasoning, answer and tool calls pulled apart, whole and streamed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quantgate.checks import default_registry, parse_case, parse_output
from quantgate.checks.harmony import HarmonyStream, is_harmony, split_harmony
from quantgate.checks.reasoning import ReasoningStream, split_reasoning

ANALYSIS = "<|channel|>analysis<|message|>User wants the weather. I can't guess it; call the tool.<|end|>"
CALL = ('<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>'
        '{"city": "Oslo", "days": 3}<|call|>')
FINAL = "<|start|>assistant<|channel|>final<|message|>It will be sunny in Oslo.<|return|>"
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city"], "additionalProperties": False}}}


@pytest.mark.parametrize("text, expected", [
    # the cookbook's example: the prompt ended with <|start|>assistant, so the output opens with the channel
    (('<|channel|>analysis<|message|>User asks: "What is 2 + 2?" Simple arithmetic.<|end|>'
      "<|start|>assistant<|channel|>final<|message|>2 + 2 = 4.<|return|>"),
     ('User asks: "What is 2 + 2?" Simple arithmetic.', "2 + 2 = 4.")),
    ("<|start|>assistant<|channel|>final<|message|>Hello!<|return|>", (None, "Hello!")),
    (ANALYSIS + CALL, ("User wants the weather. I can't guess it; call the tool.",
                       '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo", "days": 3}}</tool_call>')),
    # a preamble for the user, then the call; a built-in tool's call is thinking (analysis) or
    # nobody's answer (commentary): neither is a function call to validate
    ("<|channel|>commentary<|message|>Checking the forecast.<|end|>" + CALL,
     (None, 'Checking the forecast.\n<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo", "days": 3}}</tool_call>')),
    ('<|channel|>analysis to=browser.search<|message|>{"query": "oslo"}<|call|>', ('{"query": "oslo"}', "")),
    ('<|channel|>commentary to=python<|message|>print(1)<|call|>', (None, "")),
    # cut off by the token limit while thinking, and while answering
    ("<|channel|>analysis<|message|>Let me thi", ("Let me thi", "")),
    (ANALYSIS + "<|start|>assistant<|channel|>final<|message|>It will be su",
     ("User wants the weather. I can't guess it; call the tool.", "It will be su")),
    # decoded with skip_special_tokens: only the markers' words are left
    ("analysisUser asks for 2 + 2.assistantfinal2 + 2 = 4.", ("User asks for 2 + 2.", "2 + 2 = 4.")),
])
def test_split_harmony(text: str, expected: tuple[str | None, str]) -> None:
    assert is_harmony(text)
    assert split_harmony(text) == expected
    assert split_reasoning(text) == expected  # what every consumer calls


@pytest.mark.parametrize("text", ["Plain answer.", '{"a": 1}', "analysis of the data shows growth",
                                  "<think>x</think>y", "Use <|channel|> markers like this."])
def test_other_text_is_not_harmony(text: str) -> None:
    assert not is_harmony(text)
    assert split_harmony(text) == (None, text)


def test_a_prompt_that_opened_a_think_block_is_not_read_as_harmony() -> None:
    assert split_reasoning("<|channel|>odd thought</think>answer", opened=True) == ("<|channel|>odd thought", "answer")


def test_checks_grade_the_final_channel_and_the_call() -> None:
    registry = default_registry()
    refusal = parse_case({"id": "r", "prompt": "weather?", "assert": [{"type": "not-is-refusal"}]}, "t:1")
    tool = parse_case({"id": "t", "prompt": "weather in Oslo for 3 days", "tools": [WEATHER], "assert": [
        {"type": "is-valid-tool-call"},
        {"type": "tool-call-match", "value": [{"name": "get_weather", "arguments": {"city": ["Oslo"], "days": [3]}}]}]},
        "t:2")
    # "I can't guess it" sits in the analysis channel: not a refusal; the call validates and matches
    result = registry.check(ANALYSIS + CALL, refusal)
    assert result.passed, [v.reason for v in result.verdicts]
    result = registry.check(ANALYSIS + CALL, tool)
    assert result.passed, [v.reason for v in result.verdicts]
    # broken arguments fail as broken JSON, not as a missing call
    broken = registry.check(ANALYSIS + CALL.replace('"days": 3}', '"days": 3'), tool)
    assert not broken.passed and broken.verdicts[0].code == "tool_call.invalid_json"
    # a message whose content is raw harmony (a server without its harmony parser)
    out = parse_output({"role": "assistant", "content": ANALYSIS + FINAL}, "t:3")
    assert out.text == "It will be sunny in Oslo." and out.reasoning and out.reasoning.startswith("User wants")


def _streamed(text: str, cuts: list[int]) -> tuple[str, str]:
    stream = ReasoningStream(opened=False)
    parts, last = [], 0
    for cut in sorted(c % (len(text) + 1) for c in cuts) + [len(text)]:
        parts += stream.feed(text[last:cut])
        last = cut
    parts += stream.flush()
    return "".join(t for k, t in parts if k == "reasoning"), "".join(t for k, t in parts if k == "content")


_MESSAGES = st.sampled_from([
    "<|channel|>analysis<|message|>Plan it.<|end|>", "<|channel|>analysis<|message|>Check <|en twice.<|end|>",
    "<|start|>assistant<|channel|>final<|message|>Answer: 4.<|return|>",
    "<|start|>assistant<|channel|>commentary<|message|>One moment.<|end|>",
    '<|start|>assistant<|channel|>commentary to=functions.f <|constrain|>json<|message|>{"x": 1}<|call|>',
    '<|start|>assistant<|channel|>commentary to=browser.open<|message|>{"id": 2}<|call|>',
    "<|start|>assistant<|channel|>final<|message|>Cut sho",
])


@given(st.lists(_MESSAGES, min_size=1, max_size=5), st.lists(st.integers(0, 400), max_size=8))
def test_streamed_split_equals_the_whole_split(messages: list[str], cuts: list[int]) -> None:
    text = "".join(messages)
    reasoning, answer = _streamed(text, cuts)
    whole_reasoning, whole_answer = split_harmony(text)
    assert answer == whole_answer
    # the whole split strips each thought and joins them with a blank line; the stream sends them as written
    assert reasoning.split() == (whole_reasoning or "").split()


def test_a_call_is_sent_whole_once_its_message_ends() -> None:
    stream = HarmonyStream()
    sent = []
    for ch in CALL.removeprefix("<|start|>assistant"):
        sent += stream.feed(ch)
        assert all("<tool_call>" not in t or t.endswith("</tool_call>") for _, t in sent)
    assert sent == [("content", '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo", "days": 3}}</tool_call>')]
    assert stream.flush() == []


@pytest.mark.parametrize("text, reasoning, answer", [
    ("analysisUser asks for 2 + 2.assistantfinal2 + 2 = 4.  ", "User asks for 2 + 2.", "2 + 2 = 4."),
    ("  analysis Think. assistantfinal\n{\"a\": 1}", "Think.", '{"a": 1}'),
    ("analysis of the data shows growth", "", "analysis of the data shows growth"),  # no marker: an answer
])
def test_stripped_harmony_streams_like_the_whole_split(text: str, reasoning: str, answer: str) -> None:
    for cuts in ([], list(range(len(text)))):  # whole, then a character at a time
        assert _streamed(text, cuts) == (reasoning, answer)
    whole = split_reasoning(text)
    assert (whole[0] or "", whole[1]) == (reasoning, answer)
