"""A KV cache that rows can join and leave between decode steps, for continuous batching.

transformers' ``DynamicCache`` appends by ``torch.cat``, which copies the whole cache of every
layer on every decode step: for 16 rows of a few hundred tokens that copy costs more than the
attention itself on a CPU. ``GrowableLayer`` keeps keys and values in a buffer with spare
capacity (doubled when full), so a step writes one column in place and hands attention a view.

Rows are left-aligned per batch: every row's newest token sits in the last column, older columns
of a shorter row are zero and masked out. ``merge`` joins a freshly prefilled group to a running
one by left-padding the narrower side, ``select`` drops finished rows, and ``trim`` cuts leading
columns that no remaining row uses, so a batch that has churned through many requests does not
keep attending over the padding of requests long gone. Zero keys under a mask of 0 add exactly
nothing to attention, which is why a row's greedy output does not depend on who it shares a batch
with. The trade-off against a paged cache (vLLM) is memory: a batch holds ``rows x width`` slots
even where rows are short; at the batch sizes a CPU engine runs (16) that waste is small.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicLayer

__all__ = ["GrowableLayer", "append", "new_cache", "place", "select", "trim", "widen"]

_MIN_CAPACITY = 64


class GrowableLayer(DynamicLayer):
    """One layer's keys and values ``[rows, heads, capacity, head_dim]``; ``keys``/``values`` view the used part."""

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        self.length = 0
        self._k = key_states.new_zeros((*key_states.shape[:2], 0, key_states.shape[-1]))
        self._v = value_states.new_zeros((*value_states.shape[:2], 0, value_states.shape[-1]))
        self.keys, self.values = self._k, self._v
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object,
               **kwargs: object) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self._k.shape[-2]:
            self._reserve(end)
        self._k[:, :, self.length : end] = key_states
        self._v[:, :, self.length : end] = value_states
        self.length = end
        self.keys, self.values = self._k[:, :, :end], self._v[:, :, :end]
        return self.keys, self.values

    def _reserve(self, needed: int) -> None:
        capacity = max(needed, 2 * self._k.shape[-2], _MIN_CAPACITY)
        self._k = _widen(self._k[:, :, : self.length], capacity, left=0)
        self._v = _widen(self._v[:, :, : self.length], capacity, left=0)

    def get_seq_length(self) -> int:
        return self.length if self.is_initialized else 0

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:  # copies the used columns only, with room for the next steps
            capacity = self.length + _MIN_CAPACITY
            self._k = _widen(self._k[indices, :, : self.length], capacity, left=0)
            self._v = _widen(self._v[indices, :, : self.length], capacity, left=0)
            self.keys, self.values = self._k[:, :, : self.length], self._v[:, :, : self.length]


def _widen(t: torch.Tensor, capacity: int, left: int) -> torch.Tensor:
    """``t`` copied into a buffer of ``capacity`` columns at column ``left``; the columns before are zero.

    Columns after ``t`` stay uninitialised: a step writes each one before any view reaches it.
    Padding columns must be zero, not garbage, because a masked score is added to -inf and NaN
    would survive that.
    """
    out = t.new_empty((*t.shape[:2], capacity, t.shape[-1]))
    out[:, :, :left] = 0
    out[:, :, left : left + t.shape[-2]] = t
    return out


def new_cache() -> Cache:
    """An empty cache whose layers are ``GrowableLayer`` (created as the model first writes them)."""
    return Cache(layer_class_to_replicate=GrowableLayer)


def _layers(cache: Cache) -> list[GrowableLayer]:
    layers = cache.layers
    if not all(isinstance(layer, GrowableLayer) and layer.is_initialized for layer in layers):
        raise TypeError("continuous batching needs a cache made by new_cache() and filled by a forward pass")
    return layers  # type: ignore[return-value]


def select(cache: Cache, mask: torch.Tensor, keep: list[int]) -> torch.Tensor:
    """Keep only rows ``keep`` (in that order) of ``cache`` and ``mask``; returns the new mask."""
    index = torch.tensor(keep, dtype=torch.long, device=mask.device)
    for layer in _layers(cache):
        layer.batch_select_indices(index)
    return mask[index]


def trim(cache: Cache, mask: torch.Tensor, first: int) -> torch.Tensor:
    """Drop the ``first`` leading columns (which no row may still need); a view, no copy."""
    for layer in _layers(cache):
        layer._k, layer._v = layer._k[:, :, first:], layer._v[:, :, first:]
        layer.length -= first
        layer.keys, layer.values = layer._k[:, :, : layer.length], layer._v[:, :, : layer.length]
    return mask[:, first:]


def widen(cache: Cache, mask: torch.Tensor, extra: int) -> torch.Tensor:
    """Left-pad every row by ``extra`` zero columns (a copy, with room for the next steps)."""
    for layer in _layers(cache):
        capacity = layer.length + extra + _MIN_CAPACITY
        layer._k = _widen(layer.keys, capacity, extra)
        layer._v = _widen(layer.values, capacity, extra)
        layer.length += extra
        layer.keys, layer.values = layer._k[:, :, : layer.length], layer._v[:, :, : layer.length]
    return torch.nn.functional.pad(mask, (extra, 0))


def place(cache: Cache, mask: torch.Tensor, slots: list[int], joining: Cache, joining_mask: torch.Tensor,
          rows: list[int]) -> None:
    """Write row ``rows[i]`` of ``joining`` over row ``slots[i]`` of ``cache``, right-aligned (in place).

    The joining group must be no wider than the cache (``widen`` first). Only the placed rows are
    copied, which is why a finished row's slot is reused rather than the batch rebuilt.
    """
    width, theirs = mask.shape[1], _layers(joining)
    n = joining_mask.shape[1]
    if n > width:
        raise ValueError(f"joining rows are {n} columns wide, the batch {width}")
    dst = torch.tensor(slots, dtype=torch.long, device=mask.device)
    src = torch.tensor(rows, dtype=torch.long, device=mask.device)
    for a, b in zip(_layers(cache), theirs, strict=True):
        a._k[dst, :, : width - n] = 0
        a._v[dst, :, : width - n] = 0
        a._k[dst, :, width - n : width] = b.keys[src]
        a._v[dst, :, width - n : width] = b.values[src]
    mask[dst] = 0
    mask[dst, width - n :] = joining_mask[src]


def append(cache: Cache, mask: torch.Tensor, joining: Cache, joining_mask: torch.Tensor) -> torch.Tensor:
    """Add the rows of ``joining`` below those of ``cache`` (a rebuild); returns the merged mask.

    Both sides are right-aligned to the wider one; the narrower side's extra columns are zeros,
    masked out. The result gets spare capacity so the next steps append without copying.
    """
    width = max(mask.shape[1], joining_mask.shape[1])
    for a, b in zip(_layers(cache), _layers(joining), strict=True):
        capacity = width + _MIN_CAPACITY
        ka, kb = _widen(a.keys, capacity, width - a.length), _widen(b.keys, capacity, width - b.length)
        va, vb = _widen(a.values, capacity, width - a.length), _widen(b.values, capacity, width - b.length)
        a._k, a._v = torch.cat([ka, kb]), torch.cat([va, vb])
        a.length = width
        a.keys, a.values = a._k[:, :, :width], a._v[:, :, :width]
    pad = lambda m: torch.nn.functional.pad(m, (width - m.shape[1], 0))  # noqa: E731
    return torch.cat([pad(mask), pad(joining_mask)])
