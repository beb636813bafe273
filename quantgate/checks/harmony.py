"""GPT-OSS's harmony format in raw model text: reasoning, answer and tool calls pulled apart.

gpt-oss writes its output as harmony *messages*: ``<|channel|>analysis<|message|>...<|end|>`` for
its chain of thought, ``<|start|>assistant<|channel|>final<|message|>...<|return|>`` for the
answer, and ``<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>{...}<|call|>``
for a tool call. A server with a harmony parser (vLLM, llama.cpp with ``--jinja``, Ollama) returns
these apart; raw text (a local engine, a completions endpoint, a server without the parser) has
them inline, and checks that graded it whole would call a thought that says "I can't" a refusal
and never find the tool call.

``split_harmony`` maps the messages onto quantgate's own convention, so every consumer of
``split_reasoning`` handles gpt-oss without knowing about it: the ``analysis`` channel becomes the
reasoning, ``final`` (and ``commentary`` without a recipient: a preamble meant for the user) the
answer, and each call to ``functions.NAME`` a Hermes ``<tool_call>`` block appended to the answer,
which the checks and the gateway already parse. A call's arguments are copied as the model wrote
them, so broken JSON fails as ``tool_call.invalid_json`` rather than vanishing.

Also recognised: the same text with its special tokens stripped (a server decoding with
``skip_special_tokens``), which reads ``analysis...assistantfinal...``; only that reasoning/answer
pair is recovered from it (a stripped tool call has lost the markers that delimit it).
"""

from __future__ import annotations

import json
import re

__all__ = ["OPENERS", "STRIPPED_FINAL", "STRIPPED_OPEN", "HarmonyStream", "is_harmony", "partial_suffix",
           "split_harmony"]

_CHANNEL, _MESSAGE, _START = "<|channel|>", "<|message|>", "<|start|>"
_ENDS = ("<|end|>", "<|return|>", "<|call|>")
_TOKEN_RE = re.compile(r"<\|(?:start|end|message|channel|constrain|return|call)\|>")
# How a completion opens: its prompt ended with <|start|>assistant (gpt-oss's template), or not.
OPENERS = (_CHANNEL, _START + "assistant")
# What is left of the markers when a server decodes with skip_special_tokens.
STRIPPED_OPEN, STRIPPED_FINAL = "analysis", "assistantfinal"
_STRIPPED_RE = re.compile(rf"\s*{STRIPPED_OPEN}(.*?){STRIPPED_FINAL}(.*)\Z", re.DOTALL)


def is_harmony(text: str) -> bool:
    """Whether ``text`` opens like a gpt-oss completion (tokens kept or stripped)."""
    lead = text.lstrip()
    return lead.startswith(OPENERS) or (
        lead.startswith(STRIPPED_OPEN) and STRIPPED_FINAL in lead)  # no overlap: the opener cannot end a marker


def split_harmony(text: str) -> tuple[str | None, str]:
    """``(reasoning, answer)`` of a harmony completion; the answer carries calls as ``<tool_call>`` blocks."""
    lead = text.lstrip()
    if not lead.startswith((_CHANNEL, _START)):
        stripped = _STRIPPED_RE.match(lead)
        if stripped is None:
            return None, text
        return stripped.group(1).strip() or None, stripped.group(2).strip()
    thoughts: list[str] = []
    answer: list[str] = []
    for header, body in _messages(lead):
        channel, recipient = _header(header)
        if recipient is not None and recipient.startswith("functions."):
            answer.append(_tool_call_block(recipient.removeprefix("functions."), body))
        elif channel == "analysis":
            thoughts.append(body.strip())
        elif recipient is None:  # final, or a commentary preamble for the user
            answer.append(body.strip())
    reasoning = "\n\n".join(t for t in thoughts if t)
    return reasoning or None, "\n".join(a for a in answer if a)


def _messages(text: str) -> list[tuple[str, str]]:
    """``(header, body)`` of each message; a message cut off by the token limit runs to the end."""
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        mark = text.find(_MESSAGE, pos)
        if mark < 0:
            break  # a header with no body yet: nothing was said
        header = text[pos:mark]
        start = mark + len(_MESSAGE)
        end, stop = _next_end(text, start)
        out.append((header, text[start:end]))
        pos = stop
        if text.startswith(_START, pos):
            pos += len(_START)
    return out


def _next_end(text: str, start: int) -> tuple[int, int]:
    """Where the body starting at ``start`` ends, and where the next message's header starts."""
    best = len(text), len(text)
    for token in (*_ENDS, _START):
        at = text.find(token, start)
        if 0 <= at < best[0]:
            best = at, at + (len(token) if token != _START else 0)
    return best


def _header(header: str) -> tuple[str, str | None]:
    """``(channel, recipient)`` of a header such as ``assistant<|channel|>commentary to=functions.f <|constrain|>json``."""
    recipient = re.search(r"\bto=(\S+)", _TOKEN_RE.sub(" ", header))
    after = _TOKEN_RE.sub(" ", header.split(_CHANNEL, 1)[1]).split() if _CHANNEL in header else []
    return (after[0] if after else ""), (recipient.group(1) if recipient else None)


def _tool_call_block(name: str, arguments: str) -> str:
    body = arguments.strip() or "{}"
    return f'<tool_call>{{"name": {json.dumps(name)}, "arguments": {body}}}</tool_call>'


class HarmonyStream:
    """``split_harmony`` for streamed text: ``feed`` pieces, get ``(kind, text)`` parts, ``flush`` at the end.

    Analysis bodies stream out as ``"reasoning"`` and final or preamble bodies as ``"content"`` as
    they arrive; a tool call's body is held until its message ends, then sent whole as its
    ``<tool_call>`` block, so no consumer sees half a call. Joined, the content parts equal the
    answer ``split_harmony`` gives for the whole text when no body starts or ends with whitespace
    (the whole split strips bodies; a stream cannot know a body's end before it comes). Text whose
    special tokens were stripped is ``ReasoningStream``'s to recognise (it has no channels to follow).
    """

    def __init__(self) -> None:
        self._buf = ""
        self._header: str | None = ""  # the header being read; None while in a body
        self._kind = ""  # the body's: "reasoning", "content", "call" or "ignored" (another recipient)
        self._call = ""  # the called function's name, while in its body
        self._call_body = ""
        self._fresh = True  # nothing of the current message's content sent yet
        self._answered = False  # some content already sent
        self._thought = False  # some reasoning already sent

    def feed(self, text: str) -> list[tuple[str, str]]:
        self._buf += text
        out: list[tuple[str, str]] = []
        while self._buf:
            if self._header is not None:  # reading a header, up to <|message|>
                mark = self._buf.find(_MESSAGE)
                if mark < 0:
                    return out
                self._open(self._header + self._buf[:mark])
                self._buf = self._buf[mark + len(_MESSAGE):]
                continue
            end, stop = _next_end(self._buf, 0)
            if end == len(self._buf):  # no end marker yet: send all but what may be the start of one
                keep = max(partial_suffix(self._buf, token) for token in (*_ENDS, _START))
                self._emit(self._buf[: len(self._buf) - keep], out)
                self._buf = self._buf[len(self._buf) - keep:]
                return out
            self._emit(self._buf[:end], out)
            self._close(out)
            self._buf = self._buf[stop:].removeprefix(_START)
        return out

    def flush(self) -> list[tuple[str, str]]:
        """What is still held when the text ends (a body cut off by the token limit ends here)."""
        out: list[tuple[str, str]] = []
        if self._header is None:
            self._emit(self._buf, out)
            self._close(out)
        self._buf = ""
        return out

    def _open(self, header: str) -> None:
        channel, recipient = _header(header)
        self._header, self._fresh = None, True
        if recipient is not None and recipient.startswith("functions."):
            self._kind, self._call, self._call_body = "call", recipient.removeprefix("functions."), ""
        elif channel == "analysis":
            self._kind = "reasoning"
        else:
            self._kind = "content" if recipient is None else "ignored"

    def _emit(self, text: str, out: list[tuple[str, str]]) -> None:
        if self._kind == "call":
            self._call_body += text
        elif text and self._kind == "reasoning":
            if self._fresh and self._thought:
                text = "\n\n" + text  # split_harmony joins thoughts with a blank line
            self._fresh, self._thought = False, True
            out.append(("reasoning", text))
        elif text and self._kind == "content":
            self._send(text, out)

    def _send(self, text: str, out: list[tuple[str, str]]) -> None:
        if self._fresh and self._answered:
            text = "\n" + text  # split_harmony joins the answer's messages with a newline
        self._fresh, self._answered = False, True
        out.append(("content", text))

    def _close(self, out: list[tuple[str, str]]) -> None:
        if self._kind == "call":
            self._send(_tool_call_block(self._call, self._call_body), out)
        self._header, self._kind = "", ""


def partial_suffix(text: str, token: str) -> int:
    """Length of the longest end of ``text`` that is a proper start of ``token`` (held back in a stream)."""
    for n in range(min(len(token) - 1, len(text)), 0, -1):
        if text.endswith(token[:n]):
            return n
    return 0
