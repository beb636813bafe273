"""The request pipeline: auth, routing, token budget, limits and budget, admission, engine, validation, escalation, metering.

Each stage is its own unit (``auth``, ``routing``, ``limits``, ``admission``, ``validate``); this
module only sequences them for one request and keeps the books. Routing runs before the limits
because it is pure and cheap and because the reservation needs what it decides: the variant whose
tokenizer counts the prompt and the ladder of rungs whose prices bound the worst-case cost.

Escalation: an attempt that fails validation, errors or times out is retried on the next rung up,
at most ``escalation.max_attempts`` attempts in all; every attempt's tokens and cost are metered,
so cost per successful request includes what escalation spent. A validated answer that fails on
the last rung is still returned (an OpenAI client expects the model's answer), marked with
``x-quantgate-validation: failed`` and counted; an engine failure on the last rung is a 502/504.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from quantgate.checks import CompiledAssertion
from quantgate.checks.refusal_patterns import match_refusal
from quantgate.config import GatewayConfig, PriceConfig, RouteConfig, TenantConfig
from quantgate.errors import ChatTemplateError
from quantgate.gateway.admission import Admission
from quantgate.gateway.auth import TenantDirectory
from quantgate.gateway.engines import Completion, EngineFailure, GatewayEngine, StreamPiece, StreamTally
from quantgate.gateway.limits import LimitStore, budget_period_key, retry_after_header
from quantgate.gateway.protocol import ApiError, ChatRequest, Message
from quantgate.gateway.routing import Decision, RequestFacts, Router, parse_tags
from quantgate.gateway.validate import Failure, Validator
from quantgate.observe.drift import DriftAlert, DriftMonitor
from quantgate.observe.events import EventLog
from quantgate.observe.metrics import GatewayMetrics
from quantgate.observe.tracing import Tracer
from quantgate.rollout.judge import Outcome

__all__ = ["Answer", "Pipeline", "Prepared", "StreamRelay", "route_headers"]

_ANONYMOUS = TenantConfig(name="anonymous")


@dataclass
class Prepared:
    """A request that passed every stage before the engine call, with what it reserved."""

    request: ChatRequest
    tenant: TenantConfig
    route: RouteConfig
    decision: Decision
    prompt_tokens: int
    max_tokens: int
    reserved_tokens: int
    reserved_cost: float
    budget_key: str | None
    assertions: tuple[CompiledAssertion, ...]
    deadline_s: float = 30.0  # from arrival, for queueing and every attempt together
    started: float = field(default_factory=time.perf_counter)

    @property
    def validates(self) -> bool:
        v = self.route.validate_
        return bool(self.assertions) or (v.response_format and self.request.response_format is not None
                                         and self.request.response_format.type != "text") \
            or (v.tool_arguments and bool(self.request.tools))


@dataclass
class Answer:
    completion: Completion
    variant: str
    attempts: int
    failures: list[Failure]
    headers: dict[str, str]


class Pipeline:
    def __init__(self, config: GatewayConfig, engines: Mapping[str, GatewayEngine], limits: LimitStore,
                 metrics: GatewayMetrics, events: EventLog, validator: Validator | None = None,
                 admin_digest: str | None = None, clock: Callable[[], float] = time.time,
                 tracer: Tracer | None = None):
        self.config = config
        self.engines = dict(engines)  # mutable: the hot-swap admin API replaces entries
        self.limits = limits
        self.metrics = metrics
        self.events = events
        self.validator = validator or Validator()
        self.tracer = tracer or Tracer()
        self.router = Router(config)
        self.tenants = TenantDirectory(config.tenants, admin_digest)
        self._clock = clock
        self.admission = {v.name: Admission(v.name, v.max_concurrency, config.admission.queue_size,
                                            config.admission.retry_after_s) for v in config.variants}
        for name, adm in self.admission.items():
            metrics.track_queue(name, lambda a=adm: a.in_flight, lambda a=adm: a.queued)
        self._assertions = {r.model: self.validator.route_assertions(r.validate_.assert_, f"routes[{i}].validate")
                            for i, r in enumerate(config.routes)}
        self._prices = {v.name: v.price for v in config.variants}
        # Called with every finished request a canary coin decided (the rollout controllers' feed).
        self.observers: dict[str, Callable[[Outcome], None]] = {}
        # Canary answers offered for replay on the baseline (route -> offer(request, max_tokens, answer, failed)).
        self.shadows: dict[str, Callable[[ChatRequest, int, Completion, bool], None]] = {}
        self.drift = {r.name: self._drift_monitor(r.name) for r in config.routes} if config.drift.enabled else {}

    def price(self, variant: str) -> PriceConfig:
        return self._prices[variant]

    def route_assertions(self, route: RouteConfig) -> tuple[CompiledAssertion, ...]:
        return self._assertions[route.model]

    def _drift_monitor(self, route: str) -> DriftMonitor:
        d = self.config.drift

        def alert(a: DriftAlert) -> None:
            self.metrics.drift_alerts.labels(route, a.feature).inc()
            self.events.record("drift", route=route, reason=f"{a.feature}: {a.statistic} {a.value:.3g} over "
                               f"threshold {a.threshold:.3g} at request {a.at_request}")

        def checked(last: dict[str, dict[str, float]]) -> None:
            for feature, stats in last.items():
                for stat, value in stats.items():
                    self.metrics.drift_statistic.labels(route, feature, stat).set(value)

        return DriftMonitor(d.reference_size, d.window, d.check_every, alpha=d.alpha, on_alert=alert, on_check=checked,
                            background=True)

    def _observe_drift(self, p: Prepared, answer: Answer | None) -> None:
        monitor = self.drift.get(p.route.name)
        if monitor is None:
            return
        depth = (p.request.metadata or {}).get("retrieval_depth")
        c = answer.completion if answer is not None else None
        monitor.observe({
            "prompt_tokens": p.prompt_tokens, "turns": len(p.request.messages),
            "tools_offered": len(p.request.tools or []),
            "tools_called": len(c.tool_calls or []) if c is not None else None,
            "response_tokens": c.completion_tokens if c is not None else None,
            "retrieval_depth": float(depth) if depth is not None and depth.replace(".", "", 1).isdigit() else None})

    # -- before the engine ---------------------------------------------------------------
    async def prepare(self, request: ChatRequest, headers: Mapping[str, str]) -> Prepared:
        """Auth, routing, token budget, rate limits and budget reservation; raises ``ApiError``."""
        with self.tracer.span("quantgate.prepare", model=request.model) as span:
            try:
                p = await self._prepare(request, headers)
            except ApiError as e:
                # refused before any variant was tried: counted under the route (if the model named one)
                route = self.router.route_name(request.model)
                self.metrics.requests.labels(route or "-", "-", str(e.status)).inc()
                raise
            if span is not None:
                span.set_attributes({"quantgate.route": p.route.name, "quantgate.tenant": p.tenant.name,
                                     "quantgate.variant": p.decision.variant, "quantgate.reason": p.decision.reason,
                                     "quantgate.prompt_tokens": p.prompt_tokens})
            return p

    async def _prepare(self, request: ChatRequest, headers: Mapping[str, str]) -> Prepared:
        span = self.tracer.span
        with span("quantgate.auth"):
            if self.config.server.require_auth:
                tenant = self.tenants.tenant(TenantDirectory.bearer(headers.get("authorization")))
            else:
                tenant = _ANONYMOUS
        route = self.router.route_for(request.model)
        self.validator.check_schemas(request)
        deadline_s = self._deadline(headers)  # before anything is reserved: a bad header leaks nothing
        with span("quantgate.route", **{"quantgate.tenant": tenant.name}):
            budget_key = None
            fraction = 0.0
            if tenant.budget is not None:
                budget_key = f"{tenant.name}:{budget_period_key(tenant.budget.period, self._clock())}"
                fraction = await self.limits.spent(budget_key) / tenant.budget.amount
            meta = request.metadata or {}
            facts = RequestFacts(headers, parse_tags(headers.get("x-quantgate-tags"), meta), meta, request.user,
                                 headers.get("x-quantgate-session") or meta.get("session_id"), fraction,
                                 tenant.budget.downgrade_at if tenant.budget else 1.0)
            decision = self.router.decide(route, facts)
        with span("quantgate.token_budget", **{"quantgate.variant": decision.variant}):
            request, prompt_tokens = self._token_budget(request, route, decision.variant)
            max_tokens = self._completion_cap(request, route)
        reserved_tokens = prompt_tokens + max_tokens
        attempts = decision.ladder[: route.escalation.max_attempts]
        # Worst case: every attempt writes max_tokens, and engine time (attempts run one after another,
        # all within the deadline) is billed at the dearest rung's engine-second price.
        reserved_cost = sum(self._prices[v].cost(prompt_tokens, max_tokens, 0.0) for v in attempts) \
            + deadline_s * max(self._prices[v].per_engine_second for v in attempts)
        with span("quantgate.limits", **{"quantgate.reserved_tokens": reserved_tokens,
                                         "quantgate.reserved_cost": reserved_cost}):
            await self._take_rates(tenant, reserved_tokens)
            if tenant.budget is not None and budget_key is not None:
                ok, spent = await self.limits.reserve_budget(budget_key, reserved_cost, tenant.budget.amount)
                if not ok:
                    await self._refund_rates(tenant, reserved_tokens, 1)
                    self.metrics.shed.labels("budget").inc()
                    raise ApiError(429, f"tenant {tenant.name!r} has spent {spent:.4f} of its "
                                        f"{tenant.budget.amount:g} {tenant.budget.period} budget; "
                                        f"this request may cost up to {reserved_cost:.4f}",
                                   "insufficient_quota", code="budget_exceeded")
        self.events.record("route", route=route.name, tenant=tenant.name, variant=decision.variant,
                           reason=decision.reason)
        return Prepared(request, tenant, route, decision, prompt_tokens, max_tokens, reserved_tokens, reserved_cost,
                        budget_key, self._assertions[route.model], deadline_s)

    def _deadline(self, headers: Mapping[str, str]) -> float:
        """The configured deadline, or a shorter one the client asks for in ``x-quantgate-deadline-ms``."""
        limit = self.config.admission.deadline_s
        raw = headers.get("x-quantgate-deadline-ms")
        if raw is None:
            return limit
        try:
            asked = float(raw) / 1000
        except ValueError:
            raise ApiError(400, f"x-quantgate-deadline-ms must be a number of milliseconds, got {raw[:40]!r}",
                           param="x-quantgate-deadline-ms") from None
        if not asked > 0:
            raise ApiError(400, "x-quantgate-deadline-ms must be positive", param="x-quantgate-deadline-ms")
        return min(limit, asked)

    def _token_budget(self, request: ChatRequest, route: RouteConfig, variant: str) -> tuple[ChatRequest, int]:
        engine = self.engines[variant]
        n = _count_tokens(engine, request)
        cap = route.limits.max_prompt_tokens
        if cap is None or n <= cap:
            return request, n
        if not route.limits.trim_oldest:
            raise ApiError(400, f"the prompt is {n} tokens, over the cap of {cap} on route {route.name!r} by {n - cap}",
                           param="messages", code="context_length_exceeded")
        messages = list(request.messages)
        while n > cap:
            drop = next((i for i, m in enumerate(messages[:-1]) if m.role not in ("system", "developer")), None)
            if drop is None:
                raise ApiError(400, f"the prompt is {n} tokens, over the cap of {cap} on route {route.name!r} by "
                                    f"{n - cap}, even with every older turn dropped", param="messages",
                               code="context_length_exceeded")
            messages.pop(drop)
            request = request.model_copy(update={"messages": _orphan_tools_dropped(messages)})
            messages = list(request.messages)
            n = _count_tokens(engine, request)
        return request, n

    def _completion_cap(self, request: ChatRequest, route: RouteConfig) -> int:
        asked = request.completion_cap()
        cap = route.limits.max_completion_tokens
        if asked is not None and cap is not None and asked > cap:
            raise ApiError(400, f"max_tokens {asked} is over the cap of {cap} on route {route.name!r} by {asked - cap}",
                           param="max_tokens", code="max_tokens_exceeded")
        return asked or min(route.limits.default_completion_tokens, cap or route.limits.default_completion_tokens)

    async def _take_rates(self, tenant: TenantConfig, tokens: int) -> None:
        rate = tenant.rate
        if rate.requests_per_min:
            wait = await self.limits.take_rate(f"{tenant.name}:req", 1, rate.requests_per_min)
            if wait:
                self.metrics.shed.labels("rate_requests").inc()
                raise ApiError(429, f"tenant {tenant.name!r} is over {rate.requests_per_min} requests per minute",
                               "rate_limit_error", code="rate_limit_requests", headers=retry_after_header(wait))
        if rate.tokens_per_min:
            if tokens > rate.tokens_per_min:
                await self._refund_rates(tenant, 0, 1)
                raise ApiError(400, f"this request needs up to {tokens} tokens (prompt + max_tokens), more than "
                                    f"the {rate.tokens_per_min} tokens per minute of tenant {tenant.name!r}",
                               param="max_tokens", code="request_too_large")
            wait = await self.limits.take_rate(f"{tenant.name}:tok", tokens, rate.tokens_per_min)
            if wait:
                await self._refund_rates(tenant, 0, 1)
                self.metrics.shed.labels("rate_tokens").inc()
                raise ApiError(429, f"tenant {tenant.name!r} is over {rate.tokens_per_min} tokens per minute",
                               "rate_limit_error", code="rate_limit_tokens", headers=retry_after_header(wait))

    async def _refund_rates(self, tenant: TenantConfig, tokens: int, requests: int) -> None:
        if requests and tenant.rate.requests_per_min:
            await self.limits.refund_rate(f"{tenant.name}:req", requests, tenant.rate.requests_per_min)
        if tokens > 0 and tenant.rate.tokens_per_min:
            await self.limits.refund_rate(f"{tenant.name}:tok", tokens, tenant.rate.tokens_per_min)

    # -- the engine, validation and escalation ---------------------------------------------
    async def _acquire(self, p: Prepared, variant: str) -> float:
        adm = self.admission[variant]
        try:
            with self.tracer.span("quantgate.admission", **{"quantgate.variant": variant}):
                waited = await adm.acquire(p.tenant.priority, self._time_left(p))
        except ApiError as e:
            self.metrics.shed.labels(e.code or "admission").inc()
            self.metrics.requests.labels(p.route.name, variant, str(e.status)).inc()
            self.events.record("shed", route=p.route.name, tenant=p.tenant.name, variant=variant, reason=e.message)
            raise
        self.metrics.queue_wait.labels(variant).observe(waited)
        return waited

    async def _attempt(self, p: Prepared, variant: str) -> Completion:
        with self.tracer.span("quantgate.attempt", **{"quantgate.variant": variant}) as span:
            try:
                c = await self._attempt_untraced(p, variant)
            except EngineFailure as e:
                if span is not None:
                    span.set_attribute("quantgate.outcome", e.kind)
                raise
            if span is not None:
                span.set_attributes({"quantgate.outcome": "answered", "quantgate.completion_tokens": c.completion_tokens})
            return c

    async def _attempt_untraced(self, p: Prepared, variant: str) -> Completion:
        await self._acquire(p, variant)
        adm = self.admission[variant]  # held: a hot swap may retire the name before the answer comes
        try:
            return await asyncio.wait_for(self.engines[variant].complete(p.request, p.max_tokens),
                                          timeout=max(0.001, self._time_left(p)))
        except TimeoutError:
            raise EngineFailure("timeout", f"{variant}: no answer within the request deadline") from None
        finally:
            adm.release()

    def _time_left(self, p: Prepared) -> float:
        """Seconds until the request's deadline: past it, no further rung can answer in time."""
        return p.deadline_s - (time.perf_counter() - p.started)

    def _deadline_at(self, p: Prepared) -> float:
        """The request's deadline on the event loop's clock (``asyncio.timeout_at``)."""
        return asyncio.get_running_loop().time() + self._time_left(p)

    def _meter(self, p: Prepared, variant: str, prompt: int, completion: int, engine_s: float) -> float:
        cost = self._prices[variant].cost(prompt, completion, engine_s)
        self.metrics.tokens.labels(variant, "prompt").inc(prompt)
        self.metrics.tokens.labels(variant, "completion").inc(completion)
        self.metrics.cost.labels(p.route.name, variant).inc(cost)
        return cost

    async def complete(self, p: Prepared) -> Answer:
        """Run the attempts up the ladder; returns the answer or raises ``ApiError`` (502/504)."""
        rungs = p.decision.ladder[: p.route.escalation.max_attempts]
        on = set(p.route.escalation.on)
        spent, used_tokens = 0.0, 0
        first: list[Failure] | str | None = None  # the first attempt's failures, or its engine failure kind
        first_completion: Completion | None = None
        answer: Answer | None = None
        tried = 0
        try:
            for i, variant in enumerate(rungs):
                last = i == len(rungs) - 1
                tried = i + 1
                try:
                    c = await self._attempt(p, variant)
                except EngineFailure as e:
                    first = e.kind if i == 0 else first
                    self.metrics.attempts.labels(variant, e.kind).inc()
                    if e.kind in on and not last and self._time_left(p) > 0:
                        self._escalated(p, variant, rungs[i + 1], e.kind, e.message)
                        continue
                    self.metrics.requests.labels(p.route.name, variant, "504" if e.kind == "timeout" else "502").inc()
                    raise ApiError(504 if e.kind == "timeout" else 502, e.message, "server_error",
                                   code=f"upstream_{e.kind}") from None
                spent += self._meter(p, variant, c.prompt_tokens, c.completion_tokens, c.engine_s)
                used_tokens += c.prompt_tokens + c.completion_tokens
                failures = self._validate(p, variant, c)
                if i == 0:
                    first, first_completion = failures, c
                self.metrics.attempts.labels(variant, "invalid" if failures else "ok").inc()
                if failures and "validation" in on and not last:
                    self._escalated(p, variant, rungs[i + 1], "validation",
                                    "; ".join(f"{f.code}: {f.reason}" for f in failures))
                    continue
                answer = self._answer(p, c, variant, i + 1, failures)
                return answer
            raise AssertionError("unreachable: the last rung always returns or raises")
        finally:
            await self._settle(p, spent, used_tokens)
            self._observe_drift(p, answer)
            if p.decision.arm is not None and first is not None:  # shed before any attempt: not the arm's doing
                self._report_arm(p, first, first_completion, answer, tried, spent)

    def _report_arm(self, p: Prepared, first: list[Failure] | str, c: Completion | None, answer: Answer | None,
                    tried: int, spent: float) -> None:
        """Tell the route's rollout (and its shadow) what the arm's own first attempt did."""
        shadow = self.shadows.get(p.route.name) if p.decision.arm == "canary" else None
        if shadow is not None and c is not None:
            shadow(p.request, p.max_tokens, c, bool(first))
        observer = self.observers.get(p.route.name)
        if observer is None:
            return
        failed = first if isinstance(first, list) else []
        observer(Outcome(
            canary=p.decision.arm == "canary", weight=p.decision.weight,
            validation_failed=bool(failed), error=isinstance(first, str),
            tool_error=any(f.code.startswith("tool_call") for f in failed) if c is not None and c.tool_calls else None,
            refused=bool(c is not None and not c.tool_calls and c.content and match_refusal(c.content)),
            escalated=tried > 1, latency_s=time.perf_counter() - p.started, cost=spent,
            success=answer is not None and not answer.failures, prompt_tokens=p.prompt_tokens))

    def _validate(self, p: Prepared, variant: str, c: Completion) -> list[Failure]:
        v = p.route.validate_
        with self.tracer.span("quantgate.validate", **{"quantgate.variant": variant}) as span:
            failures = self.validator.check(p.request, c, response_format=v.response_format,
                                            tool_arguments=v.tool_arguments, extra=p.assertions) if p.validates else []
            if span is not None:
                span.set_attribute("quantgate.failures", ",".join(f.code for f in failures))
        for f in failures:
            self.metrics.validation_failures.labels(variant, f.check, f.code).inc()
        if c.tool_calls:
            bad = any(f.code.startswith("tool_call") for f in failures)
            self.metrics.tool_calls.labels(variant, "invalid" if bad else "valid").inc()
        if c.content and match_refusal(c.content):
            self.metrics.refusals.labels(p.route.name, variant).inc()
        return failures

    def _escalated(self, p: Prepared, frm: str, to: str, why: str, detail: str) -> None:
        self.metrics.escalations.labels(p.route.name, frm, to, why).inc()
        self.events.record("escalation", route=p.route.name, tenant=p.tenant.name, variant=to,
                           reason=f"{why} on {frm}", detail=detail[:500])

    def _answer(self, p: Prepared, c: Completion, variant: str, attempts: int, failures: list[Failure]) -> Answer:
        status = "200"
        self.metrics.requests.labels(p.route.name, variant, status).inc()
        if not failures:
            self.metrics.successes.labels(p.route.name, variant).inc()
        self.metrics.latency.labels(p.route.name).observe(time.perf_counter() - p.started)
        headers = route_headers(p, variant, attempts - 1)
        if failures:
            headers["x-quantgate-validation"] = "failed"
            headers["x-quantgate-validation-codes"] = ",".join(sorted({f.code for f in failures}))
        return Answer(c, variant, attempts, failures, headers)

    async def _settle(self, p: Prepared, cost: float, tokens: int) -> None:
        if p.budget_key is not None:
            await self.limits.settle_budget(p.budget_key, p.reserved_cost, cost)
        await self._refund_rates(p.tenant, p.reserved_tokens - tokens, 0)

    # -- pass-through streaming (routes that do not validate) ------------------------------
    async def stream(self, p: Prepared) -> tuple[str, StreamRelay]:
        """Open the stream on the first rung that yields a first piece; escalates only before any byte is sent.

        Whoever serves the returned relay must ``aclose`` it, iterated or not: that releases the
        engine slot and settles the reservation, exactly once.
        """
        rungs = p.decision.ladder[: p.route.escalation.max_attempts]
        on = set(p.route.escalation.on)
        first_error: str | None = None  # how the first rung failed, for the rollout judge
        for i, variant in enumerate(rungs):
            try:
                await self._acquire(p, variant)
            except (ApiError, asyncio.CancelledError):
                await self._settle(p, 0.0, 0)  # shed, or the client left while queued: give back the reservation
                raise
            adm = self.admission[variant]  # held, not looked up again: a hot swap may retire the name meanwhile
            started = time.perf_counter()
            it = self.engines[variant].stream(p.request, p.max_tokens).__aiter__()
            failure: BaseException | None = None
            try:
                with self.tracer.span("quantgate.attempt", **{"quantgate.variant": variant}) as span:
                    try:
                        async with asyncio.timeout_at(self._deadline_at(p)):
                            first = await anext(it)
                    except (EngineFailure, StopAsyncIteration, TimeoutError) as e:
                        failure = e
                    kind = "streaming" if failure is None else failure.kind if isinstance(failure, EngineFailure) \
                        else "timeout" if isinstance(failure, TimeoutError) else "error"
                    if span is not None:
                        span.set_attribute("quantgate.outcome", kind)
            except asyncio.CancelledError:  # the client left while the first piece was on its way
                adm.release()
                await _close(it)
                await self._settle(p, 0.0, 0)
                raise
            if failure is None:
                return variant, StreamRelay(self, p, variant, adm, first, it, i + 1, first_error, started)
            adm.release()
            await _close(it)
            msg = failure.message if isinstance(failure, EngineFailure) else \
                f"{variant}: no first token within the request deadline" if kind == "timeout" else f"{variant}: empty stream"
            if i == 0:
                first_error = kind
            self.metrics.attempts.labels(variant, kind).inc()
            if kind in on and i < len(rungs) - 1 and self._time_left(p) > 0:
                self._escalated(p, variant, rungs[i + 1], kind, msg)
                continue
            await self._settle(p, 0.0, 0)
            status = 504 if kind == "timeout" else 502
            self.metrics.requests.labels(p.route.name, variant, str(status)).inc()
            self._observe_stream(p, variant, i + 1, first_error, None, 0.0)
            raise ApiError(status, msg, "server_error", code=f"upstream_{kind}")
        raise AssertionError("unreachable")

    def _observe_stream(self, p: Prepared, variant: str, attempts: int, first_error: str | None,
                        c: Completion | None, spent: float) -> None:
        """Feed a streamed-through answer (``None``: the stream failed) to drift and the rollout judge.

        The route does not validate (or the stream would have been buffered), so there are no
        failures to find, but refusals, tool calls, errors, latency and cost still count.
        """
        answer = None
        if c is not None:
            answer = Answer(c, variant, attempts, self._validate(p, variant, c), {})
        self._observe_drift(p, answer)
        if p.decision.arm is None:
            return
        first: list[Failure] | str = first_error if first_error is not None else ([] if c is not None else "error")
        self._report_arm(p, first, c if attempts == 1 else None, answer, attempts, spent)


async def _close(it: AsyncIterator[StreamPiece]) -> None:
    closer = getattr(it, "aclose", None)
    if closer is not None:
        await closer()


def route_headers(p: Prepared, variant: str, escalations: int) -> dict[str, str]:
    """The ``x-quantgate-*`` headers every answer carries, buffered or streamed."""
    return {"x-quantgate-variant": variant, "x-quantgate-escalated": str(escalations),
            "x-quantgate-route-reason": p.decision.reason.encode("ascii", "replace").decode()[:512]}


def _count_tokens(engine: GatewayEngine, request: ChatRequest) -> int:
    """The prompt's tokens on ``engine``; a local model's chat template that refuses the messages is the client's 400."""
    try:
        return engine.count_prompt_tokens(request)
    except ChatTemplateError as e:
        raise ApiError(400, e.args[0], param="messages", code="chat_template_error") from None


def _orphan_tools_dropped(messages: list[Message]) -> list[Message]:
    """After trimming, a ``tool`` turn whose assistant call was dropped would confuse any model."""
    out: list[Message] = []
    for m in messages:
        if m.role == "tool" and not any(x.role == "assistant" and x.tool_calls for x in out):
            continue
        out.append(m)
    return out


class StreamRelay:
    """A streamed-through answer: relays the pieces, then releases the engine slot and settles, exactly once.

    ``aclose`` does the release whether or not the pieces were ever iterated (a client can leave
    between the response starting and its first byte), and a stream cut before its usage arrived is
    billed with the gateway's own prompt count and one completion token per chunk received.
    """

    def __init__(self, pipeline: Pipeline, p: Prepared, variant: str, adm: Admission, first: StreamPiece,
                 it: AsyncIterator[StreamPiece], attempts: int, first_error: str | None, started: float):
        self._pl, self._p, self._variant, self._adm = pipeline, p, variant, adm
        self._first, self._it, self._attempts, self._first_error, self._started = first, it, attempts, first_error, started
        self.tally = StreamTally()
        self._outcome: str | None = None  # "ok" or "cut"; None: the client left (says nothing about the variant)
        self._closed = False

    def __aiter__(self) -> AsyncIterator[StreamPiece]:
        return self._pieces()

    async def _pieces(self) -> AsyncIterator[StreamPiece]:
        pl, p, variant = self._pl, self._p, self._variant
        try:
            piece: StreamPiece | None = self._first
            at = pl._deadline_at(p)
            while piece is not None:
                self.tally.add(piece)
                yield piece
                try:
                    # the deadline bounds a stream as it bounds a buffered answer (and its reserved cost)
                    async with asyncio.timeout_at(at):
                        piece = await anext(self._it, None)
                except TimeoutError:
                    raise EngineFailure("timeout", f"{variant}: the stream ran past the request deadline") from None
            self._outcome = "ok"
        except EngineFailure as e:
            self._outcome = "cut"
            pl.metrics.attempts.labels(variant, e.kind).inc()
            pl.metrics.requests.labels(p.route.name, variant, "stream_error").inc()
            pl.events.record("stream_cut", route=p.route.name, tenant=p.tenant.name, variant=variant, reason=e.message)
            raise
        finally:
            await self.aclose()
        pl.metrics.attempts.labels(variant, "ok").inc()
        pl.metrics.requests.labels(p.route.name, variant, "200").inc()
        pl.metrics.successes.labels(p.route.name, variant).inc()
        pl.metrics.latency.labels(p.route.name).observe(time.perf_counter() - p.started)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        pl, p, t = self._pl, self._p, self.tally
        await _close(self._it)  # a client that went away must not leave the upstream stream open
        self._adm.release()
        prompt, completion = t.prompt, t.completion
        if not (prompt or completion) and t.chunks:
            prompt, completion = p.prompt_tokens, t.chunks
        # a stream holds its variant from the first request to the last piece: that is its engine time
        cost = pl._meter(p, self._variant, prompt, completion, time.perf_counter() - self._started)
        await pl._settle(p, cost, prompt + completion)
        if self._outcome is not None:
            pl._observe_stream(p, self._variant, self._attempts, self._first_error,
                               t.completed() if self._outcome == "ok" else None, cost)
