"""Hot swap: add, replace or remove a variant while the gateway serves.

``PUT /admin/variants/{name}`` with a variant spec (the same keys as a ``variants:`` entry of the
config, ``name`` taken from the path) replaces the variant's engine, or adds a new rung at
``position`` on the ladder (0 = lowest precision; default: the top). ``DELETE`` removes a rung no
route, rule or rollout refers to.

How no request fails: a new engine is built off the event loop (a local model loads in a worker
thread, so serving goes on) and only then swapped in, one dict assignment, so a request sees
either the old engine or the new one. The old engine is not closed until ``grace_s`` later (the
admission deadline: no request admitted before the swap can still be running by then). A removed
rung leaves the router first (no new decision names it) and keeps its engine, queue and price for
the same grace period, so a request prepared just before, or one escalating to it, still completes.
Trade-off: a variant being replaced is served by both engines for a moment, and memory holds both
models until the old one is closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from pydantic import TypeAdapter, ValidationError

from quantgate.config import GatewayConfig, Variant
from quantgate.errors import QuantgateError
from quantgate.gateway.admission import Admission
from quantgate.gateway.engines import GatewayEngine
from quantgate.gateway.protocol import ApiError

__all__ = ["VariantManager"]

_VARIANT = TypeAdapter(Variant)


class VariantManager:
    def __init__(self, config: GatewayConfig, pipeline: Any, build: Callable[[Any], GatewayEngine],
                 grace_s: float | None = None):
        self.config, self.pipeline, self.build = config, pipeline, build
        self.loading: set[str] = set()  # variants whose engine is being built (shown by /readyz)
        self.grace_s = config.admission.deadline_s + 1.0 if grace_s is None else grace_s
        self._retiring: dict[asyncio.Task[None], GatewayEngine] = {}
        self._lock = asyncio.Lock()  # one change at a time: two PUTs of one name must not interleave

    def parse(self, name: str, spec: Any) -> Any:
        if not isinstance(spec, dict):
            raise ApiError(400, f"variants/{name}: the body must be a JSON object (a variant spec)")
        try:
            variant = _VARIANT.validate_python({**{k: v for k, v in spec.items() if k != "position"}, "name": name})
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'][1:]) or '(body)'}: "
                                 f"{'unknown key' if err['type'] == 'extra_forbidden' else err['msg']}" for err in e.errors())
            raise ApiError(400, f"variants/{name}: {problems}", param="body") from None
        threads = getattr(variant, "threads", None)
        if threads:
            import torch

            if threads != torch.get_num_threads():
                raise ApiError(400, f"variants/{name}: threads {threads}: the process's torch pool has "
                               f"{torch.get_num_threads()} threads, shared by every local variant; a variant "
                               "cannot change it while the gateway serves", param="threads")
        return variant

    async def put(self, name: str, spec: Any) -> dict[str, Any]:
        variant = self.parse(name, spec)
        position = spec.get("position")
        if position is not None and not isinstance(position, int):
            raise ApiError(400, f"variants/{name}: position must be an integer rung index", param="position")
        async with self._lock:
            # Loading a local model takes seconds of CPU: a worker thread keeps the loop serving.
            self.loading.add(name)
            try:
                engine = await asyncio.to_thread(self.build, variant)
            except (QuantgateError, OSError) as e:  # a missing or unloadable model: the old engine stays
                raise ApiError(400, f"variants/{name}: cannot load: {e}", param="path", code="variant_load_failed") from None
            finally:
                self.loading.discard(name)
            p = self.pipeline
            old = p.engines.get(name)
            p.engines[name] = engine  # the swap: one assignment, seen whole by every later request
            p._prices[name] = variant.price
            if name in p.admission:
                p.admission[name].concurrency = variant.max_concurrency
            else:
                adm = p.admission[name] = Admission(name, variant.max_concurrency, self.config.admission.queue_size,
                                                    self.config.admission.retry_after_s)
                p.metrics.track_queue(name, lambda a=adm: a.in_flight, lambda a=adm: a.queued)
            if old is None or name not in p.router.ladder:
                p.router.add_variant(name, variant.price, position)
            p.events.record("variant", variant=name, reason="replaced" if old is not None else "added")
            if old is not None:
                self._retire(old, name, drop=False)
        return {"variant": name, "action": "replaced" if old is not None else "added", "ladder": p.router.ladder}

    async def delete(self, name: str) -> dict[str, Any]:
        p = self.pipeline
        async with self._lock:
            if name not in p.router.ladder:
                raise ApiError(404, f"variant {name!r} is not on the ladder; variants: {', '.join(p.router.ladder)}",
                               code="variant_not_found")
            users = self._references(name)
            if users:
                raise ApiError(409, f"variant {name!r} is still used by {', '.join(users)}; change those first",
                               code="variant_in_use")
            p.router.remove_variant(name)
            p.events.record("variant", variant=name, reason="removed")
            self._retire(p.engines[name], name, drop=True)
        return {"variant": name, "action": "removed", "ladder": p.router.ladder}

    def _references(self, name: str) -> list[str]:
        users = []
        for r in self.config.routes:
            if name in (r.floor, r.default) or name in (r.variants or []) or any(x.floor == name for x in r.rules):
                users.append(f"route {r.name!r}")
            if r.canary is not None and r.canary.variant == name:
                users.append(f"route {r.name!r} canary")
            if self.pipeline.router.default_for(r) == name and f"route {r.name!r}" not in users:
                users.append(f"route {r.name!r} (default)")
        users += [f"rollout on {ro.route!r}" for ro in self.config.rollouts if name in (ro.baseline, ro.candidate)]
        if len(self.pipeline.router.ladder) == 1:
            users.append("the ladder (its only rung)")
        return users

    def _retire(self, engine: GatewayEngine, name: str, drop: bool) -> None:
        async def later() -> None:
            await asyncio.sleep(self.grace_s)
            p = self.pipeline
            if drop and name not in p.router.ladder:  # not re-added meanwhile
                p.engines.pop(name, None)
                p.admission.pop(name, None)
                p._prices.pop(name, None)
            await engine.aclose()

        task = asyncio.get_running_loop().create_task(later())
        self._retiring[task] = engine
        task.add_done_callback(lambda t: self._retiring.pop(t, None))

    async def aclose(self) -> None:
        """Close engines still waiting out their grace period (gateway shutdown)."""
        for task, engine in list(self._retiring.items()):
            task.cancel()
            await engine.aclose()
        self._retiring.clear()
