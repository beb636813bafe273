"""Continuous batching for the eager local engine: requests join and leave a running batch per step.

A static batch runs until its longest row ends, so one 200-token answer holds 15 finished slots
idle and every request that arrives meanwhile waits for the whole batch. ``RunningBatch`` instead
keeps up to ``capacity`` rows decoding together: ``join`` prefills new requests as a group
(left-padded among themselves), samples their first token and puts their KV rows into the
running cache (over finished rows' slots, or below: ``kvcache.place``/``append``); ``step`` runs one decode step for every live row; a row that
finishes leaves at once and its slot is free for the next ``join``.

What it trades: each join is one extra forward call (the prefill of the joining group), so a
caller that joins on every freed slot pays more calls than it saves steps; ``LocalEngine.generate``
joins once a quarter of the slots are free (or the batch is empty), the gateway's worker joins on
every step that has arrivals, because there time to first token matters more than throughput.

Greedy output does not depend on the company a row keeps: positions come from each row's own
mask, and padded columns are zero keys under a zero mask (see ``kvcache``).
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from quantgate.engines import kvcache
from quantgate.engines.sampling import sample_next
from quantgate.engines.types import Generation, GenerationRequest
from quantgate.errors import QuantgateError

if TYPE_CHECKING:
    from quantgate.engines.local import LocalEngine, _Row

__all__ = ["Event", "RunningBatch"]

# Leading columns no live row uses are cut once there are this many (a view; fewer is not worth a step).
_TRIM_SLACK = 32


@dataclass(frozen=True)
class Event:
    """Something a row produced in a ``join`` or ``step``: a text piece, or its finished ``Generation``."""

    tag: Hashable
    text: str = ""
    token_id: int = -1
    generation: Generation | None = None
    error: QuantgateError | None = None  # the request could not join (for example its prompt is too long)


class RunningBatch:
    """Rows decoding together on one model. Not thread-safe: one caller drives it.

    The cache has one row per *slot*. A finished row's slot stays in the batch, fed a pad token
    and ignored, until a joining request takes it over (only that row is written) or the batch
    compacts because more slots are dead than live: copying a whole cache every time a row ends
    cost more than decoding a few idle rows.
    """

    def __init__(self, engine: LocalEngine, capacity: int):
        if engine.compile:
            raise ValueError("continuous batching runs in eager mode; the compiled path keeps fixed batch shapes")
        self.engine = engine
        self.capacity = capacity
        self._own_mask = kvcache.takes_additive_mask(engine.model)
        self._reset()

    def _reset(self) -> None:
        self._rows: list[_Row | None] = []  # per slot; None = finished, free for a joining row
        self._tags: list[Hashable] = []
        self._cache = kvcache.new_cache()
        self._mask = torch.zeros((0, 0), dtype=torch.long, device=self.engine.device)
        self._last = torch.zeros((0, 1), dtype=torch.long, device=self.engine.device)

    @property
    def live(self) -> int:
        return sum(r is not None for r in self._rows)

    @property
    def free(self) -> int:
        return self.capacity - self.live

    def join(self, items: list[tuple[Hashable, GenerationRequest]]) -> list[Event]:
        """Prefill ``items`` (at most ``free``) and add them; returns the events of their first token."""
        if len(items) > self.free:
            raise ValueError(f"{len(items)} rows joining a batch with {self.free} free slots")
        if not items:
            return []
        started = time.perf_counter()
        rows: list[_Row] = []
        tags: list[Hashable] = []
        refused: list[Event] = []
        for tag, request in items:
            try:
                rows.append(self.engine._make_row(request))
                tags.append(tag)
            except QuantgateError as e:  # one bad request must not take its group down
                refused.append(Event(tag, error=e))
        if not rows:
            return refused
        ids, mask, positions = kvcache.left_padded([r.prompt_ids for r in rows], self.engine.pad_id, self.engine.device)
        cache = kvcache.new_cache()
        with torch.inference_mode():
            out = self.engine.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                                    cache=cache, use_cache=True, logits_to_keep=1)
        prefill_done = time.perf_counter()
        for r in rows:
            r.started, r.prefill_done = started, prefill_done
        events, keep = self._take(rows, tags, out.logits[:, -1, :])
        if keep:
            with torch.inference_mode():
                self._admit(cache, mask, positions[:, -1:], [(rows[j], tags[j], j) for j in keep])
        return refused + events

    def _admit(self, cache: Any, mask: torch.Tensor, last: torch.Tensor, joining: list[tuple[_Row, Hashable, int]]) -> None:
        """Put the prefilled rows ``joining`` (row, tag, index in ``cache``) into dead slots, then below."""
        if not any(r is not None for r in self._rows):
            keep = [j for _, _, j in joining]
            self._cache = cache
            self._mask = mask if len(keep) == mask.shape[0] else kvcache.select(cache, mask, keep)
            self._last = last[keep]
            self._rows = [r for r, _, _ in joining]
            self._tags = [t for _, t, _ in joining]
            return
        if mask.shape[1] > self._mask.shape[1]:
            self._mask = kvcache.widen(self._cache, self._mask, mask.shape[1] - self._mask.shape[1])
        dead = [s for s, r in enumerate(self._rows) if r is None]
        placed, below = joining[: len(dead)], joining[len(dead) :]
        if placed:
            slots = dead[: len(placed)]
            kvcache.place(self._cache, self._mask, slots, cache, mask, [j for _, _, j in placed])
            for slot, (row, tag, j) in zip(slots, placed):
                self._rows[slot], self._tags[slot] = row, tag
                self._last[slot] = last[j]
        if below:
            index = [j for _, _, j in below]
            sub = kvcache.select(cache, mask, index)
            self._mask = kvcache.append(self._cache, self._mask, cache, sub)
            self._last = torch.cat([self._last, last[index]])
            self._rows += [r for r, _, _ in below]
            self._tags += [t for _, t, _ in below]

    def step(self) -> list[Event]:
        """One decode step for every live row; finished rows free their slots."""
        live = [s for s, r in enumerate(self._rows) if r is not None]
        if not live:
            return []
        pending = [r.completion[-1] if r is not None else self.engine.pad_id for r in self._rows]
        tokens = torch.tensor(pending, dtype=torch.long, device=self._mask.device)[:, None]
        self._mask = torch.cat([self._mask, self._mask.new_ones((self._mask.shape[0], 1))], dim=1)
        self._last = self._last + 1
        with torch.inference_mode():
            mask = self._mask
            if self._own_mask:  # keys are in the activations' dtype, which the mask must match
                mask = kvcache.additive_mask(mask, self._cache.layers[0].keys.dtype)
            out = self.engine.model(input_ids=tokens, attention_mask=mask, position_ids=self._last,
                                    cache=self._cache, use_cache=True)
        rows = [self._rows[s] for s in live]
        logits = out.logits[:, -1, :] if len(live) == len(self._rows) else out.logits[live, -1, :]
        events, keep = self._take(rows, [self._tags[s] for s in live], logits)  # type: ignore[arg-type]
        if len(keep) < len(live):  # only a row leaving can free columns or call for compaction
            for j in set(range(len(live))) - set(keep):
                self._rows[live[j]] = None
            with torch.inference_mode():
                self._tidy()
        return events

    def _tidy(self) -> None:
        """Compact when dead slots outnumber live ones; drop leading columns no live row uses."""
        live = [s for s, r in enumerate(self._rows) if r is not None]
        if not live:
            self._reset()
            return
        if len(self._rows) - len(live) > len(live):
            self._mask = kvcache.select(self._cache, self._mask, live)
            self._last = self._last[live]
            self._rows = [self._rows[s] for s in live]
            self._tags = [self._tags[s] for s in live]
            live = list(range(len(live)))
        used = self._mask[live].any(dim=0).nonzero()
        first = int(used[0]) if used.numel() else 0
        if first >= _TRIM_SLACK:
            self._mask = kvcache.trim(self._cache, self._mask, first)

    def drop(self, tags: set[Hashable]) -> None:
        """Stop the rows of ``tags`` (their callers went away) without an event: their slots free at once."""
        hit = False
        for s, tag in enumerate(self._tags):
            if self._rows[s] is not None and tag in tags:
                self._rows[s] = None
                hit = True
        if hit:
            with torch.inference_mode():
                self._tidy()

    def abort(self) -> None:
        """Drop every row, after a failed forward left the cache in an unknown state."""
        self._reset()

    def _take(self, rows: list[_Row], tags: list[Hashable], logits: torch.Tensor) -> tuple[list[Event], list[int]]:
        """Sample one token per row from ``logits``; returns the events and the rows still generating."""
        picked = sample_next(logits, [r.request.params for r in rows], [r.generator for r in rows])
        chosen = logits.float().log_softmax(-1).gather(1, picked[:, None]).squeeze(1).tolist()
        now = time.perf_counter()
        events: list[Event] = []
        keep: list[int] = []
        for j, (row, tag, token) in enumerate(zip(rows, tags, picked.tolist())):
            if not row.completion:
                row.first_token_at = now
            row.completion.append(token)
            row.logprobs.append(chosen[j])
            piece = self.engine._advance(row, token, now)
            if piece:
                events.append(Event(tag, text=piece, token_id=token))
            if row.finish is None:
                keep.append(j)
            else:
                events.append(Event(tag, generation=self.engine._finish(row, row.started, row.prefill_done)))
        return events, keep
