"""The ASGI app: OpenAI-compatible endpoints, health, metrics and the admin API, over one ``Pipeline``.

The app owns everything it uses (engines, limit store, metrics registry, event log); two apps in
one process share nothing. Request bodies are read with a size cap before parsing; every error a
client can cause is an OpenAI-style JSON body with a 4xx, and an unexpected fault is a 500 with the
same shape and no traceback. Streams that validate are buffered and replayed as chunks; streams
that do not are relayed chunk by chunk, and a failure after the first byte ends the stream with an
``error`` event and no ``[DONE]``, so no client mistakes a cut stream for a finished one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from quantgate.config import GatewayConfig
from quantgate.errors import QuantgateError
from quantgate.gateway.batcher import LocalBatchingEngine
from quantgate.gateway.engines import Completion, EngineFailure, GatewayEngine, StreamPiece
from quantgate.gateway.hotswap import VariantManager
from quantgate.gateway.limits import LimitStore
from quantgate.gateway.pipeline import Answer, Pipeline, Prepared, route_headers
from quantgate.gateway.protocol import ApiError, ChatRequest, chunk_body, completion_body, error_body, new_id, parse_chat_request
from quantgate.observe.events import EventLog
from quantgate.observe.metrics import GatewayMetrics
from quantgate.observe.tracing import Tracer, otlp_provider
from quantgate.rollout.controller import RolloutController, RolloutError
from quantgate.rollout.shadow import ShadowComparison, ShadowReplayer, token_divergence
from quantgate.rollout.shared import LeaseLost, RedisRolloutStore, ReplicaSync
from quantgate.rollout.store import RolloutStore

__all__ = ["create_app"]

_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def _error(e: ApiError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body is {declared} bytes, over the {limit}-byte limit", code="body_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body is over the {limit}-byte limit", code="body_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


class _ClosingStream(StreamingResponse):
    """A streaming response that runs ``closer`` when it ends however it ends, even before its first byte.

    The relay's own ``finally`` only runs once iteration starts; a client that leaves in between
    would otherwise keep an engine slot and a budget reservation forever.
    """

    def __init__(self, content: AsyncIterator[bytes], closer: Callable[[], Awaitable[None]], **kw: Any):
        super().__init__(content, **kw)
        self._closer = closer

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._closer()


def _sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def create_app(config: GatewayConfig, engines: Mapping[str, GatewayEngine], *, limits: LimitStore | None = None,
               metrics: GatewayMetrics | None = None, events: EventLog | None = None,
               admin_key: str | None = None, tracer_provider: Any | None = None,
               rollout_store: RolloutStore | None = None, clock: Callable[[], float] = time.time,
               engine_factory: Callable[[Any], GatewayEngine] | None = None) -> Starlette:
    """Build the gateway app. ``engines`` maps every variant name to its engine (see ``build_engines``)."""
    config = config.with_hashed_keys()
    missing = [v.name for v in config.variants if v.name not in engines]
    if missing:
        raise ValueError(f"no engine for variant(s) {', '.join(missing)}")
    metrics = metrics or GatewayMetrics()
    events = events or EventLog(config.events.path, config.events.retention_days, config.events.max_rows)
    metrics.track_event_log(lambda: events.dropped)
    admin_key = admin_key if admin_key is not None else os.environ.get(config.server.admin_key_env)
    admin_digest = hashlib.sha256(admin_key.encode()).hexdigest() if admin_key else None
    if tracer_provider is None and config.tracing.otlp_endpoint:
        tracer_provider = otlp_provider(config.tracing.otlp_endpoint, config.tracing.service_name)
    tracer = Tracer(tracer_provider)
    if limits is None:
        from quantgate.gateway.server import build_limits

        limits = build_limits(config)
    pipeline = Pipeline(config, engines, limits, metrics, events, admin_digest=admin_digest,
                        tracer=tracer)
    body_limit = config.server.max_body_bytes
    if engine_factory is None:
        from quantgate.gateway.server import build_engine

        engine_factory = build_engine
    variants = VariantManager(config, pipeline, engine_factory)
    shared = config.state.backend == "redis" and rollout_store is None and bool(config.rollouts)
    store: Any = rollout_store if rollout_store is not None else _redis_store(config) if shared \
        else RolloutStore(config.rollout_state) if config.rollouts else None
    rollouts = {r.route: RolloutController(r, pipeline.router, store, events=events, metrics=metrics, clock=clock,
                                           autostart=not shared)
                for r in config.rollouts} if store is not None else {}
    syncs = {name: ReplicaSync(c, store) for name, c in rollouts.items()} if shared else {}
    shadows: dict[str, ShadowReplayer] = {}
    for name, controller in rollouts.items():
        pipeline.observers[name] = syncs[name].observe if shared else controller.observe
        if controller.spec.shadow is not None:
            shadows[name] = _shadow_replayer(pipeline, controller, metrics,
                                             syncs[name].observe_shadow if shared else controller.observe_shadow)
            pipeline.shadows[name] = shadows[name].offer

    async def chat(request: Request) -> Response:
        with tracer.span("quantgate.request", **{"http.route": "/v1/chat/completions"}):
            return await _chat(request)

    async def _chat(request: Request) -> Response:
        try:
            body = parse_chat_request(await _read_body(request, body_limit))
        except ApiError as e:
            metrics.requests.labels("-", "-", str(e.status)).inc()
            return _error(e)
        try:
            prepared = await pipeline.prepare(body, request.headers)
            if body.stream and not prepared.validates:
                variant, relay = await pipeline.stream(prepared)
                return _ClosingStream(_relay_sse(prepared, variant, relay, metrics), relay.aclose,
                                      media_type="text/event-stream",
                                      headers={**_SSE_HEADERS, **route_headers(prepared, variant,
                                                                               prepared.decision.ladder.index(variant))})
            answer = await pipeline.complete(prepared)
        except ApiError as e:
            return _error(e)
        if body.stream:
            return StreamingResponse(_replay_sse(prepared, answer, metrics), media_type="text/event-stream",
                                     headers={**_SSE_HEADERS, **answer.headers})
        c = answer.completion
        metrics.ttft.labels(prepared.route.name).observe(time.perf_counter() - prepared.started)
        return JSONResponse(completion_body(new_id(), body.model, c.content, c.tool_calls, c.finish_reason,
                                            c.prompt_tokens, c.completion_tokens, c.reasoning), headers=answer.headers)

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [
            {"id": m, "object": "model", "created": 0, "owned_by": "quantgate"} for m in pipeline.router.models]})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        # what serves now (hot swap may have added or removed rungs since start-up) and what is loading
        return JSONResponse({"status": "ready", "variants": list(pipeline.router.ladder),
                             "loading": sorted(variants.loading)})

    async def prometheus(request: Request) -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    def _admin(request: Request) -> None:
        if admin_digest is None:
            raise ApiError(403, f"the admin API is disabled: set {config.server.admin_key_env}",
                           "permission_error", code="admin_disabled")
        if not pipeline.tenants.is_admin(pipeline.tenants.bearer(request.headers.get("authorization"))):
            raise ApiError(401, "admin key required", "authentication_error", code="invalid_admin_key")

    async def admin_variants(request: Request) -> Response:
        try:
            _admin(request)
        except ApiError as e:
            return _error(e)
        return JSONResponse({"ladder": pipeline.router.ladder, "variants": [
            {"name": n, "in_flight": a.in_flight, "queued": a.queued, "concurrency": a.concurrency}
            for n, a in pipeline.admission.items() if n in pipeline.router.ladder]})

    async def admin_variant(request: Request) -> Response:
        name = request.path_params["name"]
        try:
            _admin(request)
            if request.method == "DELETE":
                return JSONResponse(await variants.delete(name))
            try:
                spec = json.loads(await _read_body(request, 65536))
            except ValueError:
                raise ApiError(400, f"variants/{name}: the body is not valid JSON") from None
            return JSONResponse(await variants.put(name, spec))
        except ApiError as e:
            return _error(e)

    async def admin_events(request: Request) -> Response:
        try:
            _admin(request)
            limit = int(request.query_params.get("limit", "100"))
        except ApiError as e:
            return _error(e)
        except ValueError:
            return _error(ApiError(400, "limit must be an integer", param="limit"))
        return JSONResponse({"events": events.query(request.query_params.get("kind"), min(limit, 1000))})

    async def admin_canary(request: Request) -> Response:
        try:
            _admin(request)
            data = json.loads(await _read_body(request, 4096))
            route, weight = data["route"], float(data["weight"])
            pipeline.router.set_canary_weight(route, weight)
        except ApiError as e:
            return _error(e)
        except (ValueError, KeyError, TypeError) as e:
            return _error(ApiError(400, f'body must be {{"route": NAME, "weight": 0..1}} for a route with a canary: {e}'))
        events.record("canary_weight", route=route, reason=f"set to {weight:g} by admin")
        return JSONResponse({"route": route, "weight": pipeline.router.canary_weight(route)})

    def _rollout(route: str | None) -> RolloutController:
        if not rollouts:
            raise ApiError(404, "no rollouts are configured (rollouts: in the config)", code="no_rollout")
        if route is None and len(rollouts) == 1:
            return next(iter(rollouts.values()))
        if route not in rollouts:
            raise ApiError(404, f"no rollout on route {route!r}; rollouts: {', '.join(rollouts)}",
                           param="route", code="no_rollout")
        return rollouts[route]

    async def admin_rollout(request: Request) -> Response:
        try:
            _admin(request)
            if request.method == "GET":
                route = request.query_params.get("route")
                if route is None and len(rollouts) > 1:
                    return JSONResponse({"rollouts": [c.describe() for c in rollouts.values()]})
                return JSONResponse(_rollout(route).describe())
            try:
                data = json.loads(await _read_body(request, 4096))
                action, route = data["action"], data.get("route")
            except (ValueError, KeyError, TypeError):
                raise ApiError(400, 'body must be {"action": "start|pause|resume|abort|promote", "route": NAME}',
                               param="action") from None
            controller = _rollout(route)
            verbs = {"start": controller.start, "pause": controller.pause, "resume": controller.resume,
                     "abort": controller.abort, "promote": controller.promote}
            if action not in verbs:
                raise ApiError(400, f"unknown action {action!r}; one of {', '.join(verbs)}", param="action")
            reason = data.get("reason")
            verbs[action](f"{action} by admin" + (f": {reason}" if isinstance(reason, str) else ""))
        except ApiError as e:
            return _error(e)
        except RolloutError as e:
            return _error(ApiError(409, str(e), code="rollout_state"))
        except LeaseLost:
            return _error(ApiError(409, "another gateway replica decides for this rollout; send the action to it "
                                        "(or retry: the lease moves within seconds when its holder stops)",
                                   code="not_leader"))
        return JSONResponse(controller.describe())

    async def admin_drift(request: Request) -> Response:
        try:
            _admin(request)
        except ApiError as e:
            return _error(e)
        return JSONResponse({"routes": {name: m.describe() for name, m in pipeline.drift.items()}})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        for sync in syncs.values():
            sync.start()
        yield
        for controller in rollouts.values():
            controller.close()
        await variants.aclose()
        for sync in syncs.values():
            await sync.aclose()
        for replayer in shadows.values():
            await replayer.aclose()
        if store is not None and rollout_store is None:
            store.close()
        for engine in pipeline.engines.values():
            await engine.aclose()
        events.close()

    async def not_found(request: Request, exc: Exception) -> Response:
        return JSONResponse(error_body(f"no route for {request.method} {request.url.path}", code="not_found"), 404)

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        return JSONResponse(error_body(f"{request.method} is not allowed on {request.url.path}"), 405)

    async def internal(request: Request, exc: Exception) -> Response:
        return JSONResponse(error_body("internal error in the gateway", "server_error"), 500)

    app = Starlette(
        routes=[Route("/v1/chat/completions", chat, methods=["POST"]), Route("/v1/models", models),
                Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", prometheus),
                Route("/admin/variants", admin_variants), Route("/admin/events", admin_events),
                Route("/admin/canary", admin_canary, methods=["POST"]),
                Route("/admin/rollout", admin_rollout, methods=["GET", "POST"]),
                Route("/admin/drift", admin_drift),
                Route("/admin/variants/{name}", admin_variant, methods=["PUT", "DELETE"])],
        exception_handlers={404: not_found, 405: method_not_allowed, 500: internal},
        lifespan=lifespan,
    )
    app.state.pipeline = pipeline
    app.state.variants = variants
    app.state.metrics = metrics
    app.state.events = events
    app.state.rollouts = rollouts
    app.state.shadows = shadows
    app.state.replica_syncs = syncs
    return app


def _redis_store(config: GatewayConfig) -> RedisRolloutStore:
    import redis

    return RedisRolloutStore(redis.Redis.from_url(config.state.redis_url), config.state.prefix)


def _shadow_replayer(pipeline: Pipeline, controller: RolloutController, metrics: GatewayMetrics,
                     judge: Callable[[bool, bool], None]) -> ShadowReplayer:
    """Replays on the rollout's baseline through its admission (never queueing), with the route's checks.

    ``judge`` takes each comparison: the controller itself, or on shared state the replica sync,
    which ships a follower's comparisons to the leader.
    """
    spec, route = controller.spec, controller.route
    cfg = spec.shadow
    assert cfg is not None
    route_cfg = pipeline.router.route_by_name(route)
    v = route_cfg.validate_
    assertions = pipeline.route_assertions(route_cfg)

    async def replay(request: ChatRequest, max_tokens: int) -> Completion | None:
        adm = pipeline.admission.get(spec.baseline)
        if adm is None or adm.in_flight >= adm.concurrency or adm.queued:
            return None  # users first: no free baseline slot, no shadow call
        await adm.acquire(-1, 0.0)
        try:
            c = await asyncio.wait_for(pipeline.engines[spec.baseline].complete(request, max_tokens), cfg.timeout_s)
        except TimeoutError:
            return None
        finally:
            adm.release()
        cost = pipeline.price(spec.baseline).cost(c.prompt_tokens, c.completion_tokens, c.engine_s)
        metrics.cost.labels(f"{route}:shadow", spec.baseline).inc(cost)
        return c

    def failed(request: ChatRequest, c: Completion) -> bool:
        return bool(pipeline.validator.check(request, c, response_format=v.response_format,
                                             tool_arguments=v.tool_arguments, extra=assertions))

    async def divergence(request: ChatRequest, answer: Completion) -> tuple[float, float] | None:
        cand, base = pipeline.engines.get(spec.candidate), pipeline.engines.get(spec.baseline)
        if not isinstance(cand, LocalBatchingEngine) or not isinstance(base, LocalBatchingEngine) \
                or cand.vocab_size != base.vocab_size or not answer.content:
            return None  # token-level comparison needs both models here, on one vocabulary
        try:
            return token_divergence(await cand.logprobs(request, answer.content),
                                    await base.logprobs(request, answer.content))
        except (EngineFailure, RuntimeError, ValueError, QuantgateError):
            return None

    def report(cmp: ShadowComparison) -> None:
        result = "exact" if cmp.exact else "normalized" if cmp.normalized else "differ"
        metrics.shadow_comparisons.labels(route, result).inc()
        if cmp.token_kl is not None and cmp.token_top1 is not None:
            metrics.shadow_token_kl.labels(route).observe(cmp.token_kl)
            metrics.shadow_token_top1.labels(route).observe(cmp.token_top1)
        if cmp.regression_flip or cmp.improvement_flip:
            metrics.shadow_flips.labels(route, "regression" if cmp.regression_flip else "improvement").inc()
        judge(cmp.regression_flip, cmp.normalized)

    return ShadowReplayer(route, cfg.share, cfg.queue_size, cfg.workers, replay, failed, report,
                          lambda: metrics.shadow_dropped.labels(route).inc(), divergence=divergence)


async def _relay_sse(p: Prepared, variant: str, pieces: AsyncIterable[StreamPiece],
                     metrics: GatewayMetrics) -> AsyncIterator[bytes]:
    cid, created, model = new_id(), int(time.time()), p.request.model
    include_usage = bool(p.request.stream_options and p.request.stream_options.include_usage)
    usage: dict[str, int] | None = None
    first = True
    try:
        async for piece in pieces:
            if first:
                metrics.ttft.labels(p.route.name).observe(time.perf_counter() - p.started)
                yield _sse(chunk_body(cid, model, created, {"role": "assistant", "content": ""}))
                first = False
            if piece.prompt_tokens is not None or piece.completion_tokens is not None:
                pt, ct = piece.prompt_tokens or 0, piece.completion_tokens or 0
                usage = {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}
            delta: dict[str, Any] = {}
            if piece.reasoning:
                delta["reasoning_content"] = piece.reasoning
            if piece.content:
                delta["content"] = piece.content
            if piece.tool_calls:
                delta["tool_calls"] = piece.tool_calls
            if delta or piece.finish_reason:
                yield _sse(chunk_body(cid, model, created, delta, piece.finish_reason))
    except EngineFailure as e:
        yield _sse(error_body(e.message, "server_error", code="upstream_stream_cut"))
        return
    if include_usage and usage is not None:
        yield _sse(chunk_body(cid, model, created, {}, usage=usage, with_choice=False))
    yield b"data: [DONE]\n\n"


async def _replay_sse(p: Prepared, answer: Answer, metrics: GatewayMetrics) -> AsyncIterator[bytes]:
    c = answer.completion
    cid, created, model = new_id(), int(time.time()), p.request.model
    metrics.ttft.labels(p.route.name).observe(time.perf_counter() - p.started)
    yield _sse(chunk_body(cid, model, created, {"role": "assistant", "content": ""}))
    if c.reasoning:
        yield _sse(chunk_body(cid, model, created, {"reasoning_content": c.reasoning}))
    if c.content:
        yield _sse(chunk_body(cid, model, created, {"content": c.content}))
    for i, tc in enumerate(c.tool_calls or []):
        yield _sse(chunk_body(cid, model, created, {"tool_calls": [{"index": i, **tc}]}))
    yield _sse(chunk_body(cid, model, created, {}, c.finish_reason))
    if p.request.stream_options and p.request.stream_options.include_usage:
        usage = {"prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
                 "total_tokens": c.prompt_tokens + c.completion_tokens}
        yield _sse(chunk_body(cid, model, created, {}, usage=usage, with_choice=False))
    yield b"data: [DONE]\n\n"
