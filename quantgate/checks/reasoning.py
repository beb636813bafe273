"""Reasoning blocks: a thinking model's ``<think>...</think>`` is not its answer.

Qwen3, QwQ, DeepSeek-R1 and its distills write their reasoning between ``<think>`` and
``</think>`` before the answer; DeepSeek-R1's chat template opens the block in the prompt, so the
output holds only its end. Servers with a reasoning parser (vLLM, SGLang) return the reasoning
apart, as the message's ``reasoning_content``; raw model text has it inline. Checks grade the
answer: JSON validity, refusals, citations and tool calls are properties of what the user is
shown, and a thought that says "I can't" is not a refusal.

gpt-oss writes harmony channels instead (``<|channel|>analysis<|message|>...``): text that opens
that way is split by ``harmony`` (reasoning, answer, and tool calls as ``<tool_call>`` blocks).

Trade-offs: only ``<think>`` tags and harmony channels are recognised (the conventions of the
open reasoning models served today; a model with other markers needs its server's parser), and without the
prompt a leading ``</think>`` with no opening tag is taken as the end of a block the prompt opened,
so a non-reasoning answer that begins by quoting ``</think>`` would be misread. Where the prompt is
known (the local engine), ``opened`` says whether it left a block open. ``ReasoningStream`` does
the same split on text that arrives in pieces, holding back only what may be the start of a tag.
"""

from __future__ import annotations

from quantgate.checks.harmony import OPENERS as HARMONY_OPENERS
from quantgate.checks.harmony import HarmonyStream, is_harmony, partial_suffix, split_harmony

__all__ = ["CLOSE", "OPEN", "ReasoningStream", "prompt_opens_reasoning", "split_reasoning"]

OPEN, CLOSE = "<think>", "</think>"


def prompt_opens_reasoning(prompt: str) -> bool:
    """Whether a rendered prompt ends inside a ``<think>`` block (DeepSeek-R1's template opens one)."""
    return prompt.rfind(OPEN) > prompt.rfind(CLOSE)


def split_reasoning(text: str, opened: bool | None = None) -> tuple[str | None, str]:
    """``(reasoning, answer)`` of model text; ``(None, text)`` when it holds no leading reasoning block.

    ``opened``: the prompt left a block open (True), did not (False), or is unknown (None: a
    ``</think>`` before any ``<think>`` is taken as that block's end). An output that stopped while
    still thinking has an empty answer.
    """
    if not opened and is_harmony(text):
        return split_harmony(text)
    end = text.find(CLOSE)
    start = text.find(OPEN)
    if opened or (opened is None and end >= 0 and (start < 0 or start > end)):
        if end < 0:
            return text.strip(), ""
        return text[:end].strip(), text[end + len(CLOSE):].lstrip()
    if start < 0 or text[:start].strip():
        return None, text  # no block, or text before it: the block is part of the answer
    if end < start:
        return text[start + len(OPEN):].strip(), ""
    return text[start + len(OPEN) : end].strip(), text[end + len(CLOSE):].lstrip()


class ReasoningStream:
    """``split_reasoning`` for streamed text: ``feed`` pieces, get ``(kind, text)`` parts, ``flush`` at the end.

    ``kind`` is ``"reasoning"`` or ``"content"``. Joined, the content parts equal the answer that
    ``split_reasoning(whole, opened)`` gives; the reasoning parts are its reasoning unstripped.
    """

    def __init__(self, opened: bool):
        self._state = "reasoning" if opened else "start"
        self._buf = ""
        self._harmony: HarmonyStream | None = None  # set once the text opens as gpt-oss's channels

    @property
    def harmony(self) -> bool:
        """Whether the text opened as gpt-oss's harmony channels (content parts may then be whole tool calls)."""
        return self._harmony is not None

    def feed(self, text: str) -> list[tuple[str, str]]:
        if self._harmony is not None:
            return self._harmony.feed(text)
        self._buf += text
        out: list[tuple[str, str]] = []
        while True:
            if self._state == "start":
                lead = self._buf.lstrip()
                if lead.startswith(OPEN):
                    self._state, self._buf = "reasoning", lead[len(OPEN):]
                    continue
                if lead.startswith(HARMONY_OPENERS):
                    self._harmony, self._buf = HarmonyStream(), ""
                    return self._harmony.feed(lead)
                if any(tag.startswith(lead) for tag in (OPEN, *HARMONY_OPENERS)):  # maybe a tag's start: wait
                    return out
                self._state = "content"
            if self._state == "reasoning":
                end = self._buf.find(CLOSE)
                if end < 0:
                    keep = partial_suffix(self._buf, CLOSE)
                    if len(self._buf) > keep:
                        out.append(("reasoning", self._buf[: len(self._buf) - keep]))
                        self._buf = self._buf[len(self._buf) - keep :]
                    return out
                if end:
                    out.append(("reasoning", self._buf[:end]))
                self._state, self._buf = "answer", self._buf[end + len(CLOSE):]
            if self._state == "answer":  # the answer starts at its first non-space character
                self._buf = self._buf.lstrip()
                if not self._buf:
                    return out
                self._state = "content"
            if self._buf:
                out.append(("content", self._buf))
            self._buf = ""
            return out

    def flush(self) -> list[tuple[str, str]]:
        """What is still held when the text ends."""
        if self._harmony is not None:
            return self._harmony.flush()
        held, self._buf = self._buf, ""
        if not held:
            return []
        if self._state == "reasoning":
            return [("reasoning", held)]
        if self._state == "start" and held.lstrip() == OPEN:
            return []  # an opening tag and nothing after it: empty reasoning, no answer
        return [("content", held)] if self._state in ("start", "content") else []

