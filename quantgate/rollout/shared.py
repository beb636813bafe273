"""One rollout across several gateway replicas: Redis state, one deciding replica, everyone applies.

With ``state.backend: redis`` the rollout's state, decisions and evidence live in Redis under
``{prefix}:rollout:{route}:*``:

* ``leader``: a lease (``SET NX PX``) renewed by its holder every ``tick_s``; only the holder feeds
  the judge and decides. If it dies, another replica takes the lease when it expires and continues
  from the last snapshot.
* ``outcomes``: every other replica pushes its requests' outcomes here in batches (one ``RPUSH``
  per tick, not per request); the leader drains the list into its judge, so the judge sees all
  replicas' traffic.
* ``state`` / ``decisions``: the controller's snapshot (judge evidence included) and the decision
  log, written by the leader; decisions are written under a check that the lease is still held
  (a Lua script), so a replica that lost its lease mid-tick cannot decide.
* followers read ``state`` every tick and apply its weight and state to their own router, so all
  replicas serve the same split within one tick (``tick_s``, default 0.5 s).

Trade-off: a follower's outcomes reach the judge up to one tick late, and what the leader drained
after its last snapshot is lost if it dies (evidence, never a decision); a sync Redis client on the
event loop costs a round trip per tick, not per request.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import astuple
from typing import Any

from redis.exceptions import RedisError

from quantgate.rollout.judge import Outcome

__all__ = ["LeaseLost", "RedisRolloutStore", "ReplicaSync"]

# Write only while holding the lease: KEYS[1] leader, KEYS[2] state, KEYS[3] decisions; ARGV[1] me,
# ARGV[2] state JSON, ARGV[3] decision JSON ("" for none).
_WRITE_IF_LEADER = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
if ARGV[3] ~= '' then redis.call('LPUSH', KEYS[3], ARGV[3]) end
return 1
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""


class LeaseLost(RuntimeError):
    """This replica tried to decide without holding the lease."""


class RedisRolloutStore:
    """The ``RolloutStore`` interface on Redis; writes are refused unless this replica holds the lease."""

    errors: tuple[type[BaseException], ...] = (LeaseLost, RedisError)

    def __init__(self, client: Any, prefix: str, replica: str | None = None, lease_ms: int = 3000):
        self.redis, self.prefix = client, prefix
        self.replica = replica or uuid.uuid4().hex[:12]
        self.lease_ms = lease_ms
        self._write = client.register_script(_WRITE_IF_LEADER)
        self._renew = client.register_script(_RENEW)

    def _keys(self, route: str) -> tuple[str, str, str, str]:
        base = f"{self.prefix}:rollout:{route}"
        return f"{base}:leader", f"{base}:state", f"{base}:decisions", f"{base}:outcomes"

    def hold_lease(self, route: str) -> bool:
        return bool(self._renew(keys=[self._keys(route)[0]], args=[self.replica, self.lease_ms]))

    def load(self, route: str) -> dict[str, Any] | None:
        raw = self.redis.get(self._keys(route)[1])
        return None if raw is None else json.loads(raw)

    def save(self, route: str, state: dict[str, Any]) -> None:
        leader, key, log, _ = self._keys(route)
        self._write(keys=[leader, key, log], args=[self.replica, json.dumps(state), ""])

    def decide(self, route: str, action: str, from_weight: float, to_weight: float, reason: str,
               evidence: dict[str, Any], state: dict[str, Any]) -> None:
        leader, key, log, _ = self._keys(route)
        decision = {"id": int(time.time() * 1e6), "ts": time.time(), "action": action, "from_weight": from_weight,
                    "to_weight": to_weight, "reason": reason, "evidence": evidence, "replica": self.replica}
        if not self._write(keys=[leader, key, log], args=[self.replica, json.dumps(state), json.dumps(decision)]):
            raise LeaseLost(f"replica {self.replica} no longer holds the lease for route {route!r}")

    def decisions(self, route: str, limit: int = 50) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.redis.lrange(self._keys(route)[2], 0, limit - 1)]

    def push_outcomes(self, route: str, outcomes: list[Outcome]) -> None:
        self._push(self._keys(route)[3], [astuple(o) for o in outcomes])

    def drain_outcomes(self, route: str, limit: int = 10_000) -> list[Outcome]:
        return [Outcome(*x) for x in self._drain(self._keys(route)[3], limit)]

    def push_shadows(self, route: str, shadows: list[tuple[bool, bool]]) -> None:
        """Shadow comparisons (regression flip, agreed) a follower made, for the leader's judge."""
        self._push(self._shadow_key(route), shadows)

    def drain_shadows(self, route: str, limit: int = 10_000) -> list[tuple[bool, bool]]:
        return [(bool(a), bool(b)) for a, b in self._drain(self._shadow_key(route), limit)]

    def _shadow_key(self, route: str) -> str:
        return f"{self.prefix}:rollout:{route}:shadows"

    def _push(self, key: str, items: list[Any]) -> None:
        if items:
            self.redis.rpush(key, *(json.dumps(x) for x in items))

    def _drain(self, key: str, limit: int) -> list[Any]:
        """Take up to ``limit`` items off the front of the list ``key``, atomically."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.lrange(key, 0, limit - 1)
        pipe.ltrim(key, limit, -1)
        raw, _ = pipe.execute()
        return [json.loads(x) for x in raw]

    def close(self) -> None:
        self.redis.close()


class ReplicaSync:
    """Keeps one controller in step with the shared rollout: lease, outcome and shadow shipping, state following."""

    def __init__(self, controller: Any, store: RedisRolloutStore, tick_s: float = 0.5):
        self.controller, self.store, self.tick_s = controller, store, tick_s
        self.route = controller.route
        self._buffer: list[Outcome] = []
        self._shadow_buffer: list[tuple[bool, bool]] = []
        self._task: asyncio.Task[None] | None = None
        self.leader = False
        self._seen_state: str | None = None

    def start(self) -> None:
        """Begin ticking on the running loop (the app's startup); idempotent."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def observe(self, o: Outcome) -> None:
        """The request path's hook: the leader judges at once, a follower buffers for the next tick."""
        self.start()
        if self.leader:
            self.controller.observe(o)
        else:
            self._buffer.append(o)

    def observe_shadow(self, regression_flip: bool, agreed: bool) -> None:
        """A shadow comparison made on this replica: judged here by the leader, shipped by a follower."""
        self.start()
        if self.leader:
            self.controller.observe_shadow(regression_flip, agreed)
        else:
            self._shadow_buffer.append((regression_flip, agreed))

    async def _run(self) -> None:
        while True:
            try:
                self.tick()
            except (RedisError, LeaseLost):
                # Redis away or the lease gone mid-tick: decide nothing, keep serving the last weight, retry.
                self.leader = False
            await asyncio.sleep(self.tick_s)

    def tick(self) -> None:
        c = self.controller
        was_leader, self.leader = self.leader, self.store.hold_lease(self.route)
        if self.leader and not was_leader:
            # take over from the last snapshot another replica wrote, or start a configured rollout
            if not c.reload() and c.state == "pending" and c.spec.start:
                c.start("configured to start with the gateway")
        outcomes, self._buffer = self._buffer, []
        shadows, self._shadow_buffer = self._shadow_buffer, []
        if self.leader:
            for o in outcomes + self.store.drain_outcomes(self.route):
                c.observe(o)
            for flip, agreed in shadows + self.store.drain_shadows(self.route):
                c.observe_shadow(flip, agreed)
            c.evaluate()
            c.persist()
        else:
            self.store.push_outcomes(self.route, outcomes)
            self.store.push_shadows(self.route, shadows)
            raw = self.store.redis.get(self.store._keys(self.route)[1])
            if raw is not None and raw != self._seen_state:
                self._seen_state = raw
                c.reload()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if not self.leader:
            self.store.push_outcomes(self.route, self._buffer)
            self.store.push_shadows(self.route, self._shadow_buffer)
            self._buffer, self._shadow_buffer = [], []
