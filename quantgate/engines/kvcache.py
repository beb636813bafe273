"""A KV cache that rows can join and leave between decode steps, for continuous batching.

transformers' ``DynamicCache`` appends by ``torch.cat``, which copies the whole cache of every
layer on every decode step: for 16 rows of a few hundred tokens that copy costs more than the
attention itself on a CPU. ``GrowableLayer`` keeps keys and values in a buffer with spare
capacity (doubled when full), so a step writes one column in place and hands attention a view.

Rows are left-padded (``left_padded``): every row's newest token sits in the last column, the
columns before a shorter row's first token are zero and masked out. ``place`` writes a freshly
prefilled row over a finished one, ``widen`` left-pads the batch for a wider newcomer, ``append``
adds rows below, ``select`` keeps some rows, and ``trim`` cuts leading columns that no remaining
row uses, so a batch that has churned through many requests does not keep attending over the
padding of requests long gone. Zero keys under a mask of 0 add exactly nothing to attention, which
is why a row's greedy output does not depend on who it shares a batch with. The trade-off against
a paged cache (vLLM) is memory: a batch holds ``rows x width`` slots even where rows are short; at
the batch sizes a CPU engine runs (16) that waste is small.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicLayer

__all__ = ["GrowableLayer", "additive_mask", "append", "full_attention_only", "left_padded", "new_cache", "place",
           "select", "takes_additive_mask", "trim", "unsupported_cache", "widen"]

# Cache layer kinds (transformers' ``layer_types``) whose keys and values this cache can hold: sliding
# and chunked layers keep every column here and transformers masks the ones out of reach; "dummy"
# layers (MoE-only, or reusing another layer's cache) store nothing.
_ATTENTION_LAYERS = frozenset({"full_attention", "sliding_attention", "chunked_attention", "dummy"})

_MIN_CAPACITY = 64


def left_padded(prompts: list[list[int]], pad_id: int, device: torch.device | str,
                rows: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token ids, attention mask and position ids of ``prompts`` right-aligned in one batch.

    ``rows`` (at least ``len(prompts)``) adds filler rows, as a compiled graph's fixed batch size
    needs: each sees one pad token, which keeps its softmax finite.
    """
    width = max(len(p) for p in prompts)
    rows = rows or len(prompts)
    ids = torch.full((rows, width), pad_id, dtype=torch.long)
    mask = torch.zeros((rows, width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    mask[len(prompts) :, -1] = 1
    ids, mask = ids.to(device), mask.to(device)
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


def full_attention_only(config: object) -> bool:
    """Whether every layer of the model attends to the whole context (no sliding or chunked layers).

    Only such a model can take ``additive_mask``: transformers builds a sliding-window layer's
    mask itself, from the 2D mask, and a prepared 4D mask would replace it.
    """
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None:
        return all(t == "full_attention" for t in layer_types)
    return getattr(config, "sliding_window", None) is None


def takes_additive_mask(model: Any) -> bool:
    """Whether decode steps may hand ``model`` a prepared ``additive_mask``.

    Besides full attention everywhere, the model must build its masks through transformers'
    attention interface (``_supports_attention_backend``), which takes a 4D mask as given; older
    implementations read the 2D mask themselves (BLOOM builds its ALiBi biases from it) and fail
    on a 4D one.
    """
    return full_attention_only(model.config) and bool(getattr(type(model), "_supports_attention_backend", False))


def unsupported_cache(model: Any) -> str | None:
    """Why this cache cannot serve ``model`` (a recurrent or linear-attention state), or None.

    Mamba, RWKV and hybrids (Jamba, Falcon-H1, Qwen3-Next ...) keep convolution or recurrent states
    besides (or instead of) keys and values; without this check they failed at the first decode with
    an IndexError from inside transformers.
    """
    from transformers.cache_utils import get_layer_types_and_kwargs

    supports = getattr(type(model), "_supports_default_dynamic_cache", None)
    if callable(supports) and not supports():
        return f"{type(model).__name__} keeps a cache of its own kind, not keys and values per layer"
    layer_types, _ = get_layer_types_and_kwargs(model.config.get_text_config(decoder=True))
    other = sorted(set(layer_types) - _ATTENTION_LAYERS)
    if other:
        return f"layers of type {', '.join(other)} keep a recurrent state, not only keys and values"
    return None


def additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
    """The ``[rows, 1, 1, width]`` additive mask of a one-token decode step; None when nothing is padded.

    Transformers would build a boolean 4D mask from the 2D one on every step, in Python (~0.3 ms a
    step on a 2-core CPU), and the CPU flash kernel runs slower on a boolean mask than on an
    additive one (350 against 439 us per call at 16 rows of 360 columns). A masked column's score
    is ``finfo.min`` below the others, so its weight is exactly zero, as with the boolean mask:
    outputs are bit-identical.
    """
    if bool(mask.all()):
        return None
    out = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return out.masked_fill_(mask == 0, torch.finfo(dtype).min)[:, None, None, :]


class GrowableLayer(DynamicLayer):
    """One layer's keys and values ``[rows, heads, capacity, head_dim]``; ``keys``/``values`` view the used part.

    The used part starts at column ``_offset`` of the buffers. Dropping leading columns moves the
    offset forward (no copy), and widening the batch moves it back over those columns (zeroed, no
    copy) while there is room; a buffer reallocated by a widening (or by rows added below) keeps
    ``_MIN_CAPACITY`` spare columns on the left as well as on the right. ``LocalEngine.generate`` joins requests in order of
    length, so nearly every join is wider than the batch: before the left room, each one copied
    every row's keys and values (0.13 of 1.5 s of a 64-answer batched pass under the profiler on a
    2-core CPU; 1-3% of the pass end to end, docs/benchmarks.md).
    """

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        self._hold(key_states.new_zeros((*key_states.shape[:2], 0, key_states.shape[-1])),
                   value_states.new_zeros((*value_states.shape[:2], 0, value_states.shape[-1])), 0, 0)
        self.is_initialized = True

    def _hold(self, k: torch.Tensor, v: torch.Tensor, offset: int, length: int) -> None:
        """Take ``k``/``v`` as the buffers, columns ``offset`` to ``offset + length`` of them in use."""
        self._k, self._v, self._offset, self.length = k, v, offset, length
        self.keys, self.values = k[:, :, offset : offset + length], v[:, :, offset : offset + length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object,
               **kwargs: object) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start, end = self.length, self.length + key_states.shape[-2]
        if self._offset + end > self._k.shape[-2]:
            # The first write is a prefill: leave room for decode steps, or the first step copies it all.
            capacity = max(end + _MIN_CAPACITY, 2 * self._k.shape[-2])
            self._hold(_widen(self.keys, capacity, 0), _widen(self.values, capacity, 0), 0, start)
        at = self._offset + start
        self._k[:, :, at : at + key_states.shape[-2]] = key_states
        self._v[:, :, at : at + key_states.shape[-2]] = value_states
        self._hold(self._k, self._v, self._offset, end)
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length if self.is_initialized else 0

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:  # copies the used columns only, with room for the next steps
            capacity = self.length + _MIN_CAPACITY
            self._hold(_widen(self.keys[indices], capacity, 0), _widen(self.values[indices], capacity, 0), 0,
                       self.length)

    def pad_left(self, extra: int, rows_below: GrowableLayer | None = None) -> None:
        """Shift every row right by ``extra`` zero columns, optionally adding ``rows_below`` (right-aligned)."""
        width = self.length + extra
        if rows_below is None and extra <= self._offset:  # room on the left: zero it and take it
            start = self._offset - extra
            self._k[:, :, start : self._offset] = 0
            self._v[:, :, start : self._offset] = 0
            self._hold(self._k, self._v, start, width)
            return
        left = _MIN_CAPACITY
        capacity = left + width + _MIN_CAPACITY
        k, v = _widen(self.keys, capacity, left + extra), _widen(self.values, capacity, left + extra)
        if rows_below is not None:
            below = left + width - rows_below.length
            k = torch.cat([k, _widen(rows_below.keys, capacity, below)])
            v = torch.cat([v, _widen(rows_below.values, capacity, below)])
        self._hold(k, v, left, width)

    def overwrite(self, dst: torch.Tensor, src: GrowableLayer, rows: torch.Tensor) -> None:
        """Rows ``rows`` of ``src`` over rows ``dst`` of this layer, right-aligned; only those rows are written."""
        n, width = src.length, self.length
        for mine, theirs in ((self.keys, src.keys), (self.values, src.values)):
            mine[dst, :, : width - n] = 0
            mine[dst, :, width - n : width] = theirs[rows]

    def drop_leading(self, first: int) -> None:
        """Forget the ``first`` columns: the view moves right, nothing is copied."""
        self._hold(self._k, self._v, self._offset + first, self.length - first)


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
        layer.drop_leading(first)
    return mask[:, first:]


def widen(cache: Cache, mask: torch.Tensor, extra: int) -> torch.Tensor:
    """Left-pad every row by ``extra`` zero columns (a copy, with room for the next steps)."""
    for layer in _layers(cache):
        layer.pad_left(extra)
    return torch.nn.functional.pad(mask, (extra, 0))


def place(cache: Cache, mask: torch.Tensor, slots: list[int], joining: Cache, joining_mask: torch.Tensor,
          rows: list[int]) -> None:
    """Write row ``rows[i]`` of ``joining`` over row ``slots[i]`` of ``cache``, right-aligned (in place).

    The joining group must be no wider than the cache (``widen`` first). Only the placed rows are
    copied, which is why a finished row's slot is reused rather than the batch rebuilt.
    """
    width, n = mask.shape[1], joining_mask.shape[1]
    if n > width:
        raise ValueError(f"joining rows are {n} columns wide, the batch {width}")
    dst = torch.tensor(slots, dtype=torch.long, device=mask.device)
    src = torch.tensor(rows, dtype=torch.long, device=mask.device)
    for a, b in zip(_layers(cache), _layers(joining), strict=True):
        a.overwrite(dst, b, src)
    mask[dst] = 0
    mask[dst, width - n :] = joining_mask[src]


def append(cache: Cache, mask: torch.Tensor, joining: Cache, joining_mask: torch.Tensor) -> torch.Tensor:
    """Add the rows of ``joining`` below those of ``cache`` (a rebuild); returns the merged mask.

    Both sides are right-aligned to the wider one; the narrower side's extra columns are zeros,
    masked out. The result gets spare capacity so the next steps append without copying.
    """
    width = max(mask.shape[1], joining_mask.shape[1])
    for a, b in zip(_layers(cache), _layers(joining), strict=True):
        a.pad_left(width - a.length, rows_below=b)
    pad = lambda m: torch.nn.functional.pad(m, (width - m.shape[1], 0))  # noqa: E731
    return torch.cat([pad(mask), pad(joining_mask)])
