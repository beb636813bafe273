"""The local engine: batched generation and teacher-forced scoring on an in-process torch model.

Batches are left-padded so every row's last prompt token sits in the same column; position ids
come from the attention mask so padding does not shift positions, which keeps a row's greedy
output identical whether it runs alone or in a batch. In eager mode the batch is continuous
(``continuous.RunningBatch``): a finished row leaves at once and a waiting request takes its
slot, on a cache that grows in place (``kvcache``). With ``compile=True`` the one-token decode step
runs under ``torch.compile`` on transformers' ``StaticCache``: that is what makes the int8/int4
CPU kernels pay, at the price of a cold compile (18-40 s on a 2-core CPU) and fixed shapes (batch
rounded up to a bucket, length to a multiple of 64) so recompiles stay rare; there batches are
fixed and finished rows ride along on a pad token until the batch ends.

The compiled step runs transformers' eager attention, which inductor fuses, instead of SDPA,
whose CPU flash kernel costs ~170 us per call at one query token against ~50 us for the plain
math; for grouped-query models, a form of it that does not copy the shared key/value heads
(``attention``). Prefill keeps SDPA (eager attention there would hold a batch x heads x prompt x
cache score tensor). It is also frozen (inductor treats the weights as constants: guards shrink, float
weights are prepacked for oneDNN) when the model holds quantized weights, where that costs a few
tens of MiB, and when its float linear weights weigh at most ``onednn_linear.REORDER_LIMIT`` (512 MiB),
the limit the eager engine's reordered copies keep too: the prepacked copy doubles them in memory
(+468 MiB on a 291M bf16 model) for 1.3-1.8x its compiled decode speed (docs/benchmarks.md, "Compiled
decode settings"; 25.2 -> 18.5 ms a step on the AMD Zen 5 host). ``freeze=True``/``False`` decides
either way. On the CPU, int8 weight-only layers of an fp32 model run quantgate's own kernel at
decode steps (``quantize.int8_kernel``: torchao's path widens every weight on every call); ``int8_kernel=False``
keeps torchao's. Likewise int4 weight-only layers run quantgate's int4 kernel at decode steps and short
prefills (``quantize.int4_kernel``: torch's widens every weight too); ``int4_kernel=False`` keeps torch's.
The eager engine's float linears run on oneDNN from weights laid out once (``engines.onednn_linear``:
fp32 on AMD CPUs, where MKL loses, 1.1-8.5x a layer with AVX-512, large layers only with AVX2;
bf16 on AMD CPUs with native bf16, where torch reorders the weight on every call, 1.2-2.3x at a few rows;
``onednn=False`` keeps torch's paths). The engine's model is changed either way (its layers'
``forward``), so engines that share one model share the choice of the last one built. The compiled step keeps guards on its
inputs only, not on the model's modules (``_decode_step``): graphs already compiled keep the modules as
they were traced, and a frozen engine never sees later in-place edits of the weights; quantgate swaps
variants by loading a new engine, never by editing one.
The compiled path keeps one static cache per (batch bucket, cache length) it has served, reset for
each batch and never replaced: a frozen step's graph keeps the cache tensors it was compiled with as
constants (transformers marks them as fixed addresses), so a new cache per call went unseen by the
step, which attended over the first call's keys and wrote at a position that kept counting across
calls. The memory is what the graph held anyway, now reused.
"""

from __future__ import annotations

import collections
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.fx.experimental.symbolic_shapes import GuardOnDataDependentSymNode

from quantgate.engines import kvcache
from quantgate.engines.attention import step_attention
from quantgate.engines.continuous import RunningBatch
from quantgate.engines.onednn_linear import REORDER_LIMIT, float_linear_bytes, use_onednn
from quantgate.engines.sampling import StopMatcher, sample_next, writes_harmony
from quantgate.engines.types import (
    Generation,
    GenerationRequest,
    SamplingParams,
    Score,
    Timings,
    TokenDelta,
    Usage,
)
from quantgate.errors import ModelLoadError, QuantgateError
from quantgate.models.chat import render_chat
from quantgate.models.loading import LoadedModel
from quantgate.quantize.codec import is_quantized
from quantgate.quantize.int4_kernel import use_int4_kernel
from quantgate.quantize.int8_kernel import use_int8_kernel
from quantgate.quantize.schemes import cpu_has_native_bf16

__all__ = ["LocalEngine"]

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
# Each (batch bucket, cache length) pair is one compiled graph; dynamo's default of 8 graphs per
# function would silently drop to eager under varied traffic, so the limit is raised per call.
RECOMPILE_LIMIT = 64


def _length_buckets(context: int) -> list[int]:
    """Cache lengths the compiled path uses: powers of two from 256, then the context itself."""
    buckets = [b for b in (256, 512, 1024, 2048, 4096, 8192, 16384, 32768) if b < context]
    return buckets + [context]


@contextlib.contextmanager
def _attention(config: Any, implementation: str) -> Iterator[None]:
    """Run the model with another attention implementation, restored afterwards.

    Transformers reads ``config._attn_implementation`` on every forward, so the compiled decode
    step traces (and its guard checks) eager attention while eager prefill and scoring keep SDPA.
    The engine is single-threaded, so no other call sees the switch.
    """
    previous = config._attn_implementation
    config._attn_implementation = implementation
    try:
        yield
    finally:
        config._attn_implementation = previous


@dataclass
class _Row:
    request: GenerationRequest
    prompt_ids: list[int]
    matcher: StopMatcher
    generator: torch.Generator | None
    completion: list[int]
    logprobs: list[float] = field(default_factory=list)
    finish: str | None = None
    first_token_at: float = 0.0
    finished_at: float = 0.0
    started: float = 0.0  # when its prefill began
    prefill_done: float = 0.0


class LocalEngine:
    """Generate and score with a ``LoadedModel``. Not thread-safe: one call at a time."""

    def __init__(self, loaded: LoadedModel, max_batch_size: int = 16, compile: bool = False,
                 freeze: bool | None = None, int8_kernel: bool = True, onednn: bool = True,
                 int4_kernel: bool = True):
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.max_batch_size = max_batch_size
        self.compile = compile
        # None: freeze where the prepacked copy is small (module docstring).
        self.freeze = freeze if freeze is not None else (any(is_quantized(p) for p in self.model.parameters())
                                                         or float_linear_bytes(self.model) <= REORDER_LIMIT)
        self.device = loaded.device
        unsupported = kvcache.unsupported_cache(self.model)
        if unsupported is not None:
            raise ModelLoadError(f"{loaded.path}: {unsupported}; quantgate's local engine serves attention models "
                                 f"(serve this one through an upstream server)")
        # int8 weight-only layers on the CPU decode through quantgate's kernel (quantize.int8_kernel)
        self.int8_kernel_layers = use_int8_kernel(self.model, int8_kernel and self.device == "cpu", onednn)
        self.int4_kernel_layers = use_int4_kernel(self.model, int4_kernel and self.device == "cpu")
        # float linears on oneDNN with weights laid out once (engines.onednn_linear); eager only
        self.onednn_layers = use_onednn(self.model, onednn and self.device == "cpu" and not compile)
        config = self.model.config
        self.max_context = int(getattr(config, "max_position_embeddings", 2048))
        self.pad_id = self._pad_id()
        self.eos_ids = self._eos_ids()
        # gpt-oss: decoded text keeps the harmony markers, so its channels can be told apart.
        self.keeps_markers = writes_harmony(self.tokenizer)
        self._compiled_step: Any = None
        # how the compiled decode step runs: "one" graph, or "uncompiled" (dynamo could not capture it
        # as one: see _decode_step, and step_uncompiled_because); None before the first compiled step
        self.step_graphs: str | None = None
        self.step_uncompiled_because = ""
        # The compiled path's static caches, one per (batch bucket, cache length): module docstring.
        self._static_caches: dict[tuple[int, int], Any] = {}
        # What the compiled decode step attends with (prefill keeps the model's own, SDPA): module docstring.
        # A bf16 model on a CPU that emulates bf16 attends in fp32 there (engines.attention).
        emulated = self.device == "cpu" and loaded.dtype == "bf16" and not cpu_has_native_bf16()
        self.step_attention = step_attention(self.model, fp32=emulated) if compile else "eager"

    # -- set-up -----------------------------------------------------------------------------

    def _pad_id(self) -> int:
        for candidate in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id, 0):
            if candidate is not None:
                return int(candidate)
        return 0

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        for source in (self.tokenizer.eos_token_id, getattr(self.model.generation_config, "eos_token_id", None)):
            if isinstance(source, int):
                ids.add(source)
            elif isinstance(source, (list, tuple)):
                ids.update(int(i) for i in source)
        return ids

    # -- prompts -----------------------------------------------------------------------------

    def render(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> str:
        return render_chat(self.tokenizer, messages, tools, self.loaded.chat_template)

    def encode(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, list):
            return prompt
        return list(self.tokenizer.encode(prompt, add_special_tokens=False))

    def count_tokens(self, prompt: str) -> int:
        return len(self.encode(prompt))

    # -- generation --------------------------------------------------------------------------

    def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        """Generate for every request, at most ``max_batch_size`` at a time; order kept.

        Requests run in order of prompt length, so rows that share a batch pad little. In eager mode
        the batch is continuous: a finished row's slot goes to the next request (joining once a
        quarter of the slots are free, since each join is a prefill call of its own); the compiled
        path runs fixed batches.
        """
        requests = [GenerationRequest(self.encode(r.prompt), r.params, r.submitted_at) for r in requests]
        order = sorted(range(len(requests)), key=lambda i: len(requests[i].prompt))
        results: list[Generation | None] = [None] * len(requests)
        if not self.compile:
            self._generate_continuous(requests, collections.deque(order), results)
            return [r for r in results if r is not None]
        for start in range(0, len(order), self.max_batch_size):
            chunk = order[start : start + self.max_batch_size]
            stream = self.iter_batch([requests[i] for i in chunk])
            try:
                while True:
                    next(stream)
            except StopIteration as done:
                for i, generation in zip(chunk, done.value):
                    results[i] = generation
        return [r for r in results if r is not None]

    def _generate_continuous(self, requests: list[GenerationRequest], waiting: collections.deque[int],
                             results: list[Generation | None]) -> None:
        batch = RunningBatch(self, self.max_batch_size)
        join_at = max(1, self.max_batch_size // 4)
        while waiting or batch.live:
            events = []
            if waiting and batch.free >= min(join_at, len(waiting)):
                joining = [waiting.popleft() for _ in range(min(batch.free, len(waiting)))]
                events += batch.join([(i, requests[i]) for i in joining])
            events += batch.step()
            for event in events:
                if event.error is not None:
                    raise event.error
                if event.generation is not None:
                    results[event.tag] = event.generation  # type: ignore[index]

    def stream(self, request: GenerationRequest) -> Iterator[TokenDelta | Generation]:
        """Yield text pieces as they become final, then the finished ``Generation``."""
        stream = self.iter_batch([request])
        try:
            while True:
                yield next(stream)
        except StopIteration as done:
            yield done.value[0]

    def iter_batch(self, requests: list[GenerationRequest]) -> Iterator[TokenDelta]:
        """Run one batch; yields ``TokenDelta``s and returns the ``Generation`` list at the end."""
        if not requests:
            return []
        if not self.compile:
            return (yield from self._iter_continuous(requests))
        started = time.perf_counter()
        rows = [self._make_row(r) for r in requests]
        budget = max(r.request.params.max_tokens for r in rows)
        with torch.inference_mode():
            step = self._stepper(rows, budget)
            logits = next(step)
            prefill_done = time.perf_counter()
            active = list(range(len(rows)))  # rows still generating; logits row j is rows[active[j]]
            for _ in range(budget):
                logits = logits[: len(active)]  # drop bucket-filler rows of the compiled path
                live = [rows[i] for i in active]
                picked = sample_next(logits, [r.request.params for r in live], [r.generator for r in live])
                chosen_lp = logits.float().log_softmax(-1).gather(1, picked[:, None]).squeeze(1).tolist()
                now = time.perf_counter()
                for j, (i, token) in enumerate(zip(active, picked.tolist())):
                    row = rows[i]
                    if not row.completion:
                        row.first_token_at = now
                    row.completion.append(token)
                    row.logprobs.append(chosen_lp[j])
                    piece = self._advance(row, token, now)
                    if piece:
                        yield TokenDelta(i, piece, token)
                keep = [j for j, i in enumerate(active) if rows[i].finish is None]
                if not keep:
                    break
                active = [active[j] for j in keep]
                logits = step.send(([rows[i].completion[-1] for i in active], keep))
            step.close()
        return [self._finish(row, started, prefill_done) for row in rows]

    def _iter_continuous(self, requests: list[GenerationRequest]) -> Iterator[TokenDelta]:
        batch = RunningBatch(self, len(requests))
        results: list[Generation | None] = [None] * len(requests)
        events = batch.join(list(enumerate(requests)))
        while True:
            for event in events:
                if event.error is not None:
                    raise event.error
                if event.text:
                    yield TokenDelta(event.tag, event.text, event.token_id)  # type: ignore[arg-type]
                if event.generation is not None:
                    results[event.tag] = event.generation  # type: ignore[index]
            if not batch.live:
                return [r for r in results if r is not None]
            events = batch.step()

    def _make_row(self, request: GenerationRequest) -> _Row:
        ids = self.encode(request.prompt)
        if not ids:
            raise QuantgateError("prompt is empty")
        params = request.params
        if len(ids) + params.max_tokens > self.max_context:
            if len(ids) >= self.max_context:
                raise QuantgateError(
                    f"prompt has {len(ids)} tokens; the model's context is {self.max_context}"
                )
            params = SamplingParams(self.max_context - len(ids), params.temperature, params.top_p,
                                    params.seed, params.stop)
            request = GenerationRequest(request.prompt, params, request.submitted_at)
        generator = None
        if not params.greedy:
            generator = torch.Generator(device="cpu")
            generator.manual_seed(params.seed if params.seed is not None else torch.seed())
        return _Row(request, ids, StopMatcher(self.tokenizer, params.stop, self.keeps_markers), generator, [])

    def _advance(self, row: _Row, token: int, now: float) -> str:
        if token in self.eos_ids:
            row.completion.pop()
            row.logprobs.pop()
            row.finish, row.finished_at = "stop", now
            return row.matcher.flush()
        piece = row.matcher.push(token)
        if row.matcher.stopped:
            row.finish, row.finished_at = "stop", now
        elif len(row.completion) >= row.request.params.max_tokens:
            row.finish, row.finished_at = "length", now
            piece += row.matcher.flush()
        return piece

    def _finish(self, row: _Row, started: float, prefill_done: float) -> Generation:
        generated = len(row.completion) + (1 if row.finish == "stop" and not row.matcher.stopped else 0)
        ids, logprobs = row.completion, row.logprobs
        if row.matcher.stopped:  # drop tokens past the stop sequence from the ids as from the text
            ids = list(self.tokenizer.encode(row.matcher.text, add_special_tokens=False)) if row.matcher.text else []
            logprobs = logprobs[: len(ids)] if ids == row.completion[: len(ids)] else []
        queue = max(0.0, started - row.request.submitted_at)
        first = row.first_token_at or row.finished_at
        return Generation(
            text=row.matcher.text,
            token_ids=ids,
            finish_reason="stop" if row.finish == "stop" else "length",
            usage=Usage(len(row.prompt_ids), max(generated, 1)),
            timings=Timings(
                queue_s=queue,
                prefill_s=prefill_done - started,
                ttft_s=first - row.request.submitted_at,
                decode_s=max(0.0, row.finished_at - first),
                total_s=row.finished_at - row.request.submitted_at,
            ),
            logprobs=logprobs,
        )

    # -- the forward passes ------------------------------------------------------------------

    def _stepper(self, rows: list[_Row], budget: int) -> Any:
        """The compiled path's coroutine: yields the prefill's last logits, then one step per ``send(tokens)``."""
        bucket = next((b for b in BATCH_BUCKETS if b >= len(rows)), len(rows))
        ids, mask, positions = kvcache.left_padded([r.prompt_ids for r in rows], self.pad_id, self.device, bucket)
        return self._static_steps(ids, mask, positions, ids.shape[1] + budget)

    def _static_steps(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
                      length: int) -> Any:
        from transformers import StaticCache

        cache_len = next(b for b in _length_buckets(self.max_context) if b >= min(length, self.max_context))
        shape = (ids.shape[0], cache_len)
        if shape not in self._static_caches:
            self._static_caches[shape] = StaticCache(config=self.model.config, max_cache_len=cache_len)
        cache = self._static_caches[shape]
        cache.reset()  # zeroes keys, values and the write position in place (a new cache: the position only)
        width = ids.shape[1]
        full_mask = torch.zeros((ids.shape[0], cache_len), dtype=torch.long, device=ids.device)
        full_mask[:, :width] = mask
        out = self.model(input_ids=ids, attention_mask=full_mask, position_ids=positions,
                         cache=cache, use_cache=True, logits_to_keep=1,
                         cache_position=torch.arange(width, device=ids.device))
        step = self._decode_step()
        last = positions[:, -1:]
        cursor = width
        rows = ids.shape[0]
        slots = list(range(rows))  # batch slot of each live row: shapes stay fixed for compile
        logits = out.logits[:, -1, :]
        while True:
            feed, keep = yield logits
            slots = [slots[j] for j in keep]
            tokens = torch.full((rows, 1), self.pad_id, dtype=torch.long, device=ids.device)
            tokens[slots, 0] = torch.tensor(feed, dtype=torch.long, device=ids.device)
            full_mask[:, cursor] = 1
            last = last + 1
            # ``freezing`` must be set while dynamo traces (it decides whether parameters are graph
            # inputs, each guarded on every call, or constants: 2 ms against 0.9 ms of guards per
            # step at batch 1 on a 291M model), so it is patched here, not passed as a compile option.
            with (torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT),
                  torch._inductor.config.patch(freezing=self.freeze),
                  _attention(self.model.config, self.step_attention)):
                logits = step(tokens, full_mask, last, cache,
                              torch.tensor([cursor], device=ids.device))[slots].clone()
            cursor += 1

    def _decode_step(self) -> Any:
        if self._compiled_step is None:
            def step(tokens: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
                     cache: Any, cache_position: torch.Tensor) -> torch.Tensor:
                out = self.model(input_ids=tokens, attention_mask=mask, position_ids=positions,
                                 cache=cache, use_cache=True, cache_position=cache_position)
                return out.logits[:, -1, :]

            # Guards on the model's modules cost ~1.3 ms a step (the 291M Llama, batch 1) to say what
            # never changes in an engine's life; only the inputs' are kept. Dynamo files graphs under
            # the function's code object, so each engine gets one of its own: with module guards gone,
            # a shared one would hand this engine's graph to another model's engine. A step that is not
            # one graph runs uncompiled: where a model breaks the graph on data (a mixture-of-experts
            # loop over the experts a batch hits, transformers' eager experts too), the compiled step
            # was wrong, with the module guards skipped (greedy tokens changed) and in some runs even
            # with them (log-probabilities off by 0.01-0.03 on a tiny Mixtral, torch 2.13, unexplained),
            # against the same step uncompiled, which equals the eager engine.
            step.__code__ = step.__code__.replace(co_name=f"decode_step_{id(self):x}")
            one_graph = torch.compile(step, dynamic=False, fullgraph=True,
                                      options={"guard_filter_fn": torch.compiler.skip_guard_on_all_nn_modules_unsafe})

            def compiled(*args: Any) -> torch.Tensor:
                if self.step_graphs != "uncompiled":
                    try:
                        out = one_graph(*args)
                        self.step_graphs = "one"
                        return out
                    except (torch._dynamo.exc.TorchDynamoException, GuardOnDataDependentSymNode) as exc:
                        # raised while tracing, before the step ran: running it now is safe. A compiler
                        # that fails (no C++ toolchain, say) is not a graph break: that stays an error.
                        if isinstance(exc, torch._dynamo.exc.BackendCompilerFailed):
                            raise
                        self.step_graphs = "uncompiled"
                        self.step_uncompiled_because = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}"
                return step(*args)

            self._compiled_step = compiled
        return self._compiled_step

    # -- scoring -----------------------------------------------------------------------------

    def score(self, prompt: str | list[int], continuation: str | list[int], top_k: int = 0) -> Score:
        return self.score_batch([(prompt, continuation)], top_k=top_k)[0]

    def score_batch(
        self,
        pairs: list[tuple[str | list[int], str | list[int]]],
        top_k: int = 0,
        return_logprobs: bool = False,
    ) -> list[Score] | tuple[list[Score], list[torch.Tensor]]:
        """Teacher-forced log-probabilities of each continuation given its prompt.

        With ``return_logprobs`` also returns, per pair, the full fp32 log-probability matrix
        (continuation length x vocab) for token-level comparisons such as KL divergence.
        """
        scores: list[Score] = []
        matrices: list[torch.Tensor] = []
        for start in range(0, len(pairs), self.max_batch_size):
            chunk = pairs[start : start + self.max_batch_size]
            s, m = self._score_chunk(chunk, top_k, return_logprobs)
            scores.extend(s)
            matrices.extend(m)
        return (scores, matrices) if return_logprobs else scores

    def _score_chunk(self, pairs: list[tuple[str | list[int], str | list[int]]], top_k: int,
                     keep: bool) -> tuple[list[Score], list[torch.Tensor]]:
        encoded = [(self.encode(p), self.encode(c)) for p, c in pairs]
        for p, c in encoded:
            if not p or not c:
                raise QuantgateError("scoring needs a non-empty prompt and continuation")
            if len(p) + len(c) > self.max_context:
                raise QuantgateError(f"prompt + continuation is {len(p) + len(c)} tokens; "
                                     f"the model's context is {self.max_context}")
        # Left-padded, so every continuation ends in the last column and the model computes logits
        # only for the last ``tail`` columns: with a 152k vocabulary, logits for the whole prompt
        # were most of the memory (16 prompts of 300 tokens: 4.6 GB more than the model itself).
        ids, mask, positions = kvcache.left_padded([p + c for p, c in encoded], self.pad_id, self.device)
        tail = max(len(c) for _, c in encoded) + 1
        with torch.inference_mode():
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                                use_cache=False, logits_to_keep=tail).logits
        scores, matrices = [], []
        for i, (p, c) in enumerate(encoded):
            rows = logits[i, tail - len(c) - 1 : tail - 1].float().log_softmax(-1)
            target = torch.tensor(c, device=rows.device)
            chosen = rows.gather(1, target[:, None]).squeeze(1)
            top_ids: list[list[int]] = []
            top_lp: list[list[float]] = []
            if top_k:
                values, indices = rows.topk(top_k, dim=-1)
                top_ids, top_lp = indices.tolist(), values.tolist()
            scores.append(Score(token_ids=c, logprobs=chosen.tolist(), top_ids=top_ids, top_logprobs=top_lp))
            if keep:
                matrices.append(rows.cpu())
        return scores, matrices
