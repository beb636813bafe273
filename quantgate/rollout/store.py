"""Durable rollout state: the controller's position and evidence, and every decision with its evidence.

SQLite, one file per gateway (``rollout_state`` in the config; ``None`` keeps it in memory for
tests and one-off runs). Decisions are written before they take effect, in the request's thread,
because a decision lost in a crash would be a rollback the gateway forgets; the evidence snapshot
(counts per arm and weight) is written on every decision and at most every ``snapshot_s`` seconds
otherwise, so a crash loses at most that much evidence and never a decision. Writes are a few
hundred microseconds on a local disk and happen on decisions and snapshots, not per request.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["RolloutStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rollout_state (route TEXT PRIMARY KEY, state TEXT NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS rollout_decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, route TEXT NOT NULL, ts REAL NOT NULL, action TEXT NOT NULL,
    from_weight REAL, to_weight REAL, reason TEXT NOT NULL, evidence TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS rollout_decisions_route ON rollout_decisions (route, id);
"""


class RolloutStore:
    errors: tuple[type[BaseException], ...] = (sqlite3.Error,)  # what a failed write raises

    def __init__(self, path: str | Path | None):
        self.path = None if path is None else Path(path)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # check_same_thread=False: the admin API and the request path run on the event loop thread,
        # tests drive it from others; the lock serialises them.
        self._db = sqlite3.connect(":memory:" if self.path is None else str(self.path), check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock, self._db:
            self._db.executescript(_SCHEMA)

    def load(self, route: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT state FROM rollout_state WHERE route = ?", (route,)).fetchone()
        return None if row is None else json.loads(row[0])

    def save(self, route: str, state: dict[str, Any]) -> None:
        with self._lock, self._db:
            self._db.execute("INSERT INTO rollout_state (route, state, updated) VALUES (?, ?, ?) "
                             "ON CONFLICT(route) DO UPDATE SET state = excluded.state, updated = excluded.updated",
                             (route, json.dumps(state), time.time()))

    def decide(self, route: str, action: str, from_weight: float, to_weight: float, reason: str,
               evidence: dict[str, Any], state: dict[str, Any]) -> None:
        """Record a decision and the state it leads to, in one transaction."""
        with self._lock, self._db:
            self._db.execute("INSERT INTO rollout_decisions (route, ts, action, from_weight, to_weight, reason, evidence) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?)",
                             (route, time.time(), action, from_weight, to_weight, reason, json.dumps(evidence)))
            self._db.execute("INSERT INTO rollout_state (route, state, updated) VALUES (?, ?, ?) "
                             "ON CONFLICT(route) DO UPDATE SET state = excluded.state, updated = excluded.updated",
                             (route, json.dumps(state), time.time()))

    def decisions(self, route: str, limit: int = 50) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT id, ts, action, from_weight, to_weight, reason, evidence FROM rollout_decisions "
                                    "WHERE route = ? ORDER BY id DESC LIMIT ?", (route, limit)).fetchall()
        return [{"id": r[0], "ts": r[1], "action": r[2], "from_weight": r[3], "to_weight": r[4], "reason": r[5],
                 "evidence": json.loads(r[6])} for r in rows]

    def close(self) -> None:
        with self._lock, contextlib.suppress(sqlite3.ProgrammingError):
            self._db.close()
