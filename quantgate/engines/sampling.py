"""Choosing the next token per row of a batch, and cutting text at stop sequences.

Each row has its own temperature, top-p and random generator, so one request's seed gives the
same tokens whatever else shares its batch. Greedy rows take the argmax and never touch a
generator.
"""

from __future__ import annotations

from typing import Any

import torch

from quantgate.engines.types import SamplingParams

__all__ = ["StopMatcher", "sample_next", "writes_harmony"]


def sample_next(
    logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator | None]
) -> torch.Tensor:
    """Pick one token per row from ``logits`` (batch, vocab) under each row's parameters."""
    logits = logits.float()
    chosen = logits.argmax(dim=-1)
    for row, p in enumerate(params):
        if p.greedy:
            continue
        # Sampled on the CPU whatever the model's device: the row's generator is a CPU one, so a
        # seed draws the same tokens on a GPU as on a CPU (given the same logits).
        probs = torch.softmax(logits[row].cpu() / p.temperature, dim=-1)
        if p.top_p < 1.0:
            sorted_probs, order = probs.sort(descending=True)
            cumulative = sorted_probs.cumsum(0)
            # keep the smallest prefix whose mass reaches top_p (always at least one token)
            keep = cumulative - sorted_probs < p.top_p
            sorted_probs = sorted_probs * keep
            probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
        chosen[row] = int(torch.multinomial(probs, 1, generator=generators[row]))
    return chosen


class StopMatcher:
    """Incremental detokenisation of one row with stop-sequence cutting.

    ``push`` adds a token and returns the text that is now safe to emit: text that cannot still
    turn out to be the start of a stop sequence, and no half-decoded UTF-8 character.
    """

    def __init__(self, tokenizer: Any, stop: tuple[str, ...], keep_special: bool = False):
        self.tokenizer = tokenizer
        self.stop = stop
        self.keep_special = keep_special
        self.holdback = max((len(s) for s in stop), default=1) - 1
        self.ids: list[int] = []
        self.text = ""
        self.emitted = 0
        self.stopped = False
        # Incremental detokenisation (as vLLM does it): decode only the tokens since the last
        # complete character, against a few tokens of left context that fix spacing/merges.
        self._prefix = 0
        self._read = 0

    def _decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=not self.keep_special))

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        before = self._decode(self.ids[self._prefix : self._read])
        after = self._decode(self.ids[self._prefix :])
        # A character needs at most 4 bytes: past that, the bytes are invalid and stay replaced.
        if after.endswith("\ufffd") and len(self.ids) - self._read < 4:
            return ""
        if len(after) <= len(before):
            return ""  # a token with no text of its own
        self.text += after[len(before) :]
        self._prefix, self._read = self._read, len(self.ids)
        text = self.text
        if self.stop:
            start = max(0, self.emitted - self.holdback)
            cuts = [i for i in (text.find(s, start) for s in self.stop) if i >= 0]
            if cuts:
                self.text = text[: min(cuts)]
                self.stopped = True
                return self.flush()
        safe = len(self.text) - self.holdback
        if safe <= self.emitted:
            return ""
        piece = self.text[self.emitted : safe]
        self.emitted = safe
        return piece

    def flush(self) -> str:
        """Emit whatever is held back; call once the row has finished."""
        if not self.stopped and self._read < len(self.ids):  # bytes still waiting for a character
            before = self._decode(self.ids[self._prefix : self._read])
            self.text += self._decode(self.ids[self._prefix :])[len(before) :]
            self._prefix = self._read = len(self.ids)
        piece = self.text[self.emitted :]
        self.emitted = len(self.text)
        return piece


def writes_harmony(tokenizer: Any) -> bool:
    """Whether ``tokenizer`` is gpt-oss's: its harmony markers (``<|channel|>``...) are special tokens.

    Decoding must keep them there, or the analysis channel, the answer and a tool call's recipient
    run together as ``analysis...assistantfinal...`` (``checks.harmony``).
    """
    # The marker is spelled out rather than imported from checks.harmony: that would load the whole
    # checks package (jsonschema and all, ~50 ms) into every engine.
    token_id = tokenizer.convert_tokens_to_ids("<|channel|>")
    return isinstance(token_id, int) and token_id != tokenizer.unk_token_id
