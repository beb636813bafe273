"""A bounded SQLite log of routing decisions, escalations and sheds, written off the request path.

Requests only append to an in-memory deque (no lock, no wake-up); a writer thread wakes every
``flush_s``, commits what has accumulated in one transaction and prunes rows older than the retention
or beyond ``max_rows``, so the file stays bounded and a slow disk never shows in request latency.
A ``queue.Queue`` was used first: every ``put`` notified the writer, which woke, took the GIL from
the event loop and committed a handful of rows (py-spy put a sixth of the gateway's samples there,
GIL waits included; end to end the change saved ~5% CPU per request, docs/benchmarks.md).
The trade-offs: up to ``flush_s`` of events is lost if the process is killed, which an audit trail
of routing reasons can afford, and past ``max_pending`` unwritten events new ones are dropped (and
counted) rather than held in unbounded memory.
"""

from __future__ import annotations

import collections
import contextlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["EventLog"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    route TEXT,
    tenant TEXT,
    variant TEXT,
    reason TEXT,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS events_ts ON events(ts);
"""


class EventLog:
    def __init__(self, path: str | Path | None, retention_days: float = 7.0, max_rows: int = 1_000_000,
                 flush_s: float = 0.2, max_pending: int = 100_000):
        self._path = None if path is None else Path(path)
        self._retention_s = retention_days * 86400
        self._max_rows = max_rows
        self._flush_s = flush_s
        self._max_pending = max_pending
        # deque.append and popleft are atomic under the GIL: the request path takes no lock.
        self._pending: collections.deque[tuple[Any, ...]] = collections.deque()
        self._stop = threading.Event()
        self.dropped = 0
        self._thread: threading.Thread | None = None
        if self._path is not None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            with sqlite3.connect(self._path) as db:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(_SCHEMA)
            self._thread = threading.Thread(target=self._write_loop, name="event-log", daemon=True)
            self._thread.start()

    def record(self, kind: str, *, route: str | None = None, tenant: str | None = None, variant: str | None = None,
               reason: str | None = None, **detail: Any) -> None:
        if self._thread is None:
            return
        if len(self._pending) >= self._max_pending:
            self.dropped += 1
            return
        self._pending.append((time.time(), kind, route, tenant, variant, reason, json.dumps(detail) if detail else None))

    def close(self) -> None:
        """Write what is pending and stop the writer."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join(10)
            self._thread = None

    def query(self, kind: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Most recent events first (committed ones; call after a flush interval in tests)."""
        if self._path is None:
            return []
        with contextlib.closing(sqlite3.connect(self._path)) as db:
            db.row_factory = sqlite3.Row
            sql = "SELECT * FROM events" + (" WHERE kind = ?" if kind else "") + " ORDER BY id DESC LIMIT ?"
            rows = db.execute(sql, (kind, limit) if kind else (limit,)).fetchall()
        return [{**dict(r), "detail": json.loads(r["detail"]) if r["detail"] else {}} for r in rows]

    def _write_loop(self) -> None:
        db = sqlite3.connect(self._path)  # type: ignore[arg-type]
        db.execute("PRAGMA synchronous=NORMAL")
        last_prune = 0.0
        stopping = False
        while not stopping:
            stopping = self._stop.wait(self._flush_s)
            batch = [self._pending.popleft() for _ in range(len(self._pending))]
            if batch:
                db.executemany("INSERT INTO events (ts, kind, route, tenant, variant, reason, detail) "
                               "VALUES (?, ?, ?, ?, ?, ?, ?)", batch)
                db.commit()
            now = time.time()
            if now - last_prune > 60 or stopping:
                db.execute("DELETE FROM events WHERE ts < ?", (now - self._retention_s,))
                db.execute("DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?", (self._max_rows,))
                db.commit()
                last_prune = now
        db.close()
