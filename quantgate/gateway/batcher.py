"""A local model as a gateway engine: one worker thread per variant, continuous batching.

Concurrent requests decode together on ``engines.continuous.RunningBatch``: a request that
arrives while others are generating joins at the next step (its prompt prefilled as a group with
whatever else arrived), and a finished one leaves at once, so a short answer never waits for a
long one and a streaming request shares the batch like any other. When the worker is idle it
waits ``batch_wait_ms`` after the first arrival for company, so a burst prefills as one group.

The trade-offs: one thread owns the model (torch releases the GIL inside kernels, the event loop
stays responsive), so scoring jobs for shadow token metrics run between decode steps and delay
them by one forward pass; joining on every step with arrivals favours time to first token over
the fewer, larger prefills a throughput-only batcher would make.
"""

from __future__ import annotations

import asyncio
import collections
import queue
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from quantgate.checks.reasoning import ReasoningStream, prompt_opens_reasoning
from quantgate.engines.types import GenerationRequest, SamplingParams, TokenDelta  # no torch import
from quantgate.errors import ChatTemplateError, QuantgateError
from quantgate.gateway.engines import Completion, EngineFailure, StreamPiece, split_answer, split_tool_calls
from quantgate.gateway.protocol import ChatRequest, NamedToolChoice

__all__ = ["LocalBatchingEngine"]

_TOOL_OPEN = "<tool_call>"


def _messages(request: ChatRequest) -> list[dict[str, Any]]:
    return [m.model_dump(exclude_none=True) for m in request.messages]


def _tools(request: ChatRequest) -> list[dict[str, Any]] | None:
    """The tools the prompt offers: none for ``tool_choice: none``, only the named one for a named choice.

    A local model cannot be forced to call a tool; offering only the named one makes it the only
    call the model can make, and validation (with escalation) catches an answer that calls none.
    """
    choice = request.tool_choice
    if not request.tools or choice == "none":
        return None
    tools = request.tools
    if isinstance(choice, NamedToolChoice):
        tools = [t for t in tools if t.function.name == choice.function.name]
    return [t.model_dump(exclude_none=True) for t in tools]


@dataclass
class _Job:
    prompt: str
    params: Any
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any] | None = None
    deltas: asyncio.Queue[Any] | None = None
    submitted: float = field(default_factory=time.perf_counter)
    continuation: str | None = None  # set: a scoring job (teacher-forced log-probabilities of this text)
    abandoned: bool = False  # set by the caller's side when it stops listening (a closed stream)

    @property
    def gone(self) -> bool:
        """Nobody waits for this job any more: a closed stream, or a cancelled future (a cancelled request)."""
        return self.abandoned or (self.future is not None and self.future.cancelled())


class LocalBatchingEngine:
    """An eager ``LocalEngine`` behind a worker thread that batches concurrent requests continuously."""

    def __init__(self, name: str, engine: Any, *, max_batch: int = 16, batch_wait_ms: float = 2.0):
        from quantgate.engines.continuous import RunningBatch

        self.name = name
        self._engine = engine
        self._max_batch = max_batch
        self._wait = batch_wait_ms / 1000
        self._batch = RunningBatch(engine, max_batch)
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self.batch_sizes: collections.Counter[int] = collections.Counter()  # live rows per decode step
        self._thread = threading.Thread(target=self._work, name=f"engine-{name}", daemon=True)
        self._thread.start()

    def count_prompt_tokens(self, request: ChatRequest) -> int:
        return self._engine.count_tokens(self._engine.render(_messages(request), _tools(request)))

    def _render(self, request: ChatRequest, tools: list[dict[str, Any]] | None) -> str:
        # The token count at admission rendered the same messages, so a refusal here means this rung's
        # template differs from the first's: a failure of this variant, not of the request.
        try:
            return self._engine.render(_messages(request), tools)
        except ChatTemplateError as e:
            raise EngineFailure("error", f"variant {self.name!r}: {e}") from None

    def _params(self, request: ChatRequest, max_tokens: int) -> SamplingParams:
        return SamplingParams(max_tokens=max_tokens, temperature=request.temperature or 0.0,
                              top_p=request.top_p or 1.0, seed=request.seed, stop=tuple(request.stop or ()))

    async def complete(self, request: ChatRequest, max_tokens: int) -> Completion:
        loop = asyncio.get_running_loop()
        job = _Job(self._render(request, _tools(request)), self._params(request, max_tokens),
                   loop, future=loop.create_future())
        self._jobs.put(job)
        gen = await job.future  # type: ignore[misc]
        reasoning, content, calls = split_answer(gen.text, prompt_opens_reasoning(job.prompt))
        return Completion(content, calls, "tool_calls" if calls else gen.finish_reason, gen.usage.prompt_tokens,
                          gen.usage.completion_tokens, gen.timings.total_s, gen.timings.ttft_s, reasoning)

    async def stream(self, request: ChatRequest, max_tokens: int) -> AsyncIterator[StreamPiece]:
        loop = asyncio.get_running_loop()
        tools = _tools(request)
        job = _Job(self._render(request, tools), self._params(request, max_tokens),
                   loop, deltas=asyncio.Queue())
        self._jobs.put(job)
        # Text that may open a Hermes <tool_call> block is held back: a tool call goes out as an
        # OpenAI tool_calls delta at the end, never as raw markup in the content.
        held = "" if tools else None
        try:
            async for piece in self._pieces(job, held):
                yield piece
        finally:
            job.abandoned = True  # finished, failed or closed early: the worker stops decoding it

    async def _pieces(self, job: _Job, held: str | None) -> AsyncIterator[StreamPiece]:
        # A thinking model's <think> block goes out as reasoning_content deltas, never as content.
        split = ReasoningStream(prompt_opens_reasoning(job.prompt))
        while True:
            item = await job.deltas.get()  # type: ignore[union-attr]
            if isinstance(item, BaseException):
                raise EngineFailure("error", f"{self.name}: {item}")
            ended = hasattr(item, "usage")
            for kind, text in split.flush() if ended else split.feed(item.text):
                if kind == "reasoning":
                    yield StreamPiece(reasoning=text)
                elif held is None:
                    yield StreamPiece(content=text)
                else:
                    held += text
                    stripped = held.lstrip()
                    if not (stripped.startswith(_TOOL_OPEN) or _TOOL_OPEN.startswith(stripped)):
                        yield StreamPiece(content=held)  # not a tool call: stream the rest as it comes
                        held = None
            if ended:
                finish = item.finish_reason
                if held:
                    content, calls = split_tool_calls(held)
                    if calls:
                        yield StreamPiece(tool_calls=[{"index": i, **c} for i, c in enumerate(calls)])
                        finish = "tool_calls"
                    else:
                        yield StreamPiece(content=content)
                yield StreamPiece(finish_reason=finish, prompt_tokens=item.usage.prompt_tokens,
                                  completion_tokens=item.usage.completion_tokens)
                return

    @property
    def running_rows(self) -> int:
        """Rows decoding in the batch now (read from another thread: a snapshot)."""
        return self._batch.live

    @property
    def vocab_size(self) -> int:
        return int(self._engine.model.config.vocab_size)

    async def logprobs(self, request: ChatRequest, continuation: str) -> Any:
        """Per-token log-probability rows (tokens x vocab, fp32) of ``continuation`` after ``request``'s prompt.

        Runs on the worker thread like generation (one model, one thread), between decode steps.
        """
        loop = asyncio.get_running_loop()
        job = _Job(self._render(request, _tools(request)), None, loop,
                   future=loop.create_future(), continuation=continuation)
        self._jobs.put(job)
        return await job.future  # type: ignore[misc]

    async def aclose(self) -> None:
        self._jobs.put(None)
        await asyncio.to_thread(self._thread.join, 30)

    # -- worker thread ---------------------------------------------------------------------
    def _arrivals(self, closing: bool) -> list[_Job | None]:
        """Jobs to consider now: blocks (then waits ``batch_wait_ms`` for company) only when idle."""
        got: list[_Job | None] = []
        if not self._batch.live and not closing:
            got.append(self._jobs.get())
            deadline = time.perf_counter() + self._wait
            while len(got) < self._max_batch and got[-1] is not None:
                try:
                    got.append(self._jobs.get(timeout=max(0.0, deadline - time.perf_counter())))
                except queue.Empty:
                    break
        while True:
            try:
                got.append(self._jobs.get_nowait())
            except queue.Empty:
                return got

    def _work(self) -> None:
        waiting: collections.deque[_Job] = collections.deque()
        running: dict[int, _Job] = {}
        closing = False
        while True:  # until closed and drained
            for job in self._arrivals(closing):
                if job is None:
                    closing = True
                elif job.continuation is not None:
                    self._run_score(job)
                else:
                    waiting.append(job)
            if closing and not waiting and not self._batch.live:
                return
            # a request that went away (closed stream, cancelled call) stops taking a slot at once
            waiting = collections.deque(j for j in waiting if not j.gone)
            gone = {tag for tag, j in running.items() if j.gone}
            if gone:
                self._batch.drop(gone)
                for tag in gone:
                    del running[tag]
            joining = [waiting.popleft() for _ in range(min(self._batch.free, len(waiting)))]
            running.update((id(j), j) for j in joining)  # before the join: a failed prefill must reach them too
            try:
                events = self._batch.join([(id(j), GenerationRequest(j.prompt, j.params, j.submitted))
                                           for j in joining])
                if self._batch.live:
                    self.batch_sizes[self._batch.live] += 1
                events += self._batch.step()
            except (RuntimeError, ValueError) as e:  # torch raises RuntimeError; the batch is lost
                self._batch.abort()
                for job in running.values():  # every job in flight was in the batch or joining it
                    _deliver(job, error=e)
                running.clear()
                continue
            for event in events:
                tag = int(event.tag)  # type: ignore[call-overload]
                job = running[tag]
                if event.error is not None:
                    _deliver(running.pop(tag), error=event.error)
                elif event.generation is not None:
                    _deliver(running.pop(tag), result=event.generation)
                elif job.deltas is not None:
                    job.loop.call_soon_threadsafe(job.deltas.put_nowait, TokenDelta(0, event.text, event.token_id))

    def _run_score(self, job: _Job) -> None:
        try:
            _, matrices = self._engine.score_batch([(job.prompt, job.continuation)], return_logprobs=True)
        except (RuntimeError, ValueError, QuantgateError) as e:
            _deliver(job, error=e)
            return
        _deliver(job, result=matrices[0])


def _deliver(job: _Job, *, result: Any = None, error: BaseException | None = None) -> None:
    """Hand a result or an error to the job's event loop (a future, or the end of its delta queue)."""
    if job.deltas is not None:
        job.loop.call_soon_threadsafe(job.deltas.put_nowait, error if error is not None else result)
    elif error is not None:
        job.loop.call_soon_threadsafe(_fail, job.future, error)
    else:
        job.loop.call_soon_threadsafe(_resolve, job.future, result)


def _resolve(fut: asyncio.Future[Any] | None, value: Any) -> None:
    if fut is not None and not fut.done():
        fut.set_result(value)


def _fail(fut: asyncio.Future[Any] | None, exc: BaseException) -> None:
    if fut is not None and not fut.done():
        fut.set_exception(EngineFailure("error", f"local engine failed: {exc}"))

