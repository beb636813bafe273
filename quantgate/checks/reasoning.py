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
from quantgate.checks.harmony import (
    STRIPPED_FINAL,
    STRIPPED_OPEN,
    HarmonyStream,
    is_harmony,
    partial_suffix,
    split_harmony,
)

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

    gpt-oss text whose special tokens were stripped (``analysis...assistantfinal...``) cannot be told
    from an answer that opens with the word "analysis" until ``assistantfinal`` comes, so such text
    is held until then (the reasoning is sent in one part) or to the end (all of it is content): a
    plain answer opening with lowercase "analysis" reaches the client late, not wrong. The stripped
    answer's trailing whitespace is held too, since the whole split strips it.
    """

    def __init__(self, opened: bool):
        self._state = "reasoning" if opened else "start"
        self._buf = ""
        self._harmony: HarmonyStream | None = None  # set once the text opens as gpt-oss's channels
        # Stripped harmony, until its answer's marker: the pieces as they came (joined once, so a long
        # thought costs linear time) and the end of what came, where a marker cut in two may start.
        self._held: list[str] = []
        self._tail = ""
        self._trim = False  # the answer of stripped harmony: its trailing whitespace is not sent

    @property
    def harmony(self) -> bool:
        """Whether the text opened as gpt-oss's harmony channels (content parts may then be whole tool calls)."""
        return self._harmony is not None

    def feed(self, text: str) -> list[tuple[str, str]]:
        if self._harmony is not None:
            return self._harmony.feed(text)
        if self._state == "stripped":
            return self._feed_stripped(text)
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
                if lead.startswith(STRIPPED_OPEN):
                    self._state, held, self._buf = "stripped", self._buf, ""
                    return self._feed_stripped(held)
                if any(tag.startswith(lead) for tag in (OPEN, *HARMONY_OPENERS, STRIPPED_OPEN)):  # maybe a tag: wait
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
            body = self._buf.rstrip() if self._trim else self._buf
            if body:
                out.append(("content", body))
            self._buf = self._buf[len(body):]
            return out

    def _feed_stripped(self, text: str) -> list[tuple[str, str]]:
        """Hold stripped harmony (leading space too) until ``assistantfinal``; then split it like the whole."""
        self._held.append(text)
        window = self._tail + text
        if STRIPPED_FINAL not in window:
            self._tail = window[-(len(STRIPPED_FINAL) - 1):]
            return []
        lead = "".join(self._held).lstrip()
        self._held, self._tail = [], ""
        end = lead.find(STRIPPED_FINAL, len(STRIPPED_OPEN))  # the opener cannot end inside a marker
        thought = lead[len(STRIPPED_OPEN):end].strip()
        self._state, self._buf, self._trim = "answer", lead[end + len(STRIPPED_FINAL):], True
        return ([("reasoning", thought)] if thought else []) + self.feed("")

    def flush(self) -> list[tuple[str, str]]:
        """What is still held when the text ends."""
        if self._harmony is not None:
            return self._harmony.flush()
        if self._state == "stripped":  # no answer marker came: it was all an answer
            held, self._held = "".join(self._held), []
            return [("content", held)] if held else []
        held, self._buf = self._buf, ""
        if not held:
            return []
        if self._state == "reasoning":
            return [("reasoning", held)]
        if self._state == "start" and held.lstrip() == OPEN:
            return []  # an opening tag and nothing after it: empty reasoning, no answer
        if self._trim:
            return []  # only the stripped answer's trailing whitespace was held
        return [("content", held)] if self._state in ("start", "content") else []

