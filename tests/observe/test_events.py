"""The SQLite event log: batched off-path writes, queries, retention, bounded memory."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from quantgate.observe.events import EventLog
from tests.waiting import wait_until


def test_events_are_committed_in_the_background_and_queried_newest_first(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events.sqlite", flush_s=0.02)
    try:
        log.record("route", route="r", tenant="t", variant="int4", reason="route r: default rung")
        log.record("escalation", route="r", variant="int8", reason="json.parse_error", attempt=2)
        assert wait_until(lambda: len(log.query()) == 2, timeout_s=5)
        newest, oldest = log.query()
        assert newest["kind"] == "escalation" and newest["detail"] == {"attempt": 2}
        assert oldest["variant"] == "int4" and oldest["detail"] == {}
        assert [e["kind"] for e in log.query(kind="route")] == ["route"]
        assert len(log.query(limit=1)) == 1
    finally:
        log.close()


def test_close_writes_what_is_pending(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events.sqlite", flush_s=60)  # the writer would not wake on its own for a minute
    for i in range(50):
        log.record("route", reason=str(i))
    log.close()
    assert len(log.query(limit=1000)) == 50


def test_max_rows_keeps_the_newest(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events.sqlite", flush_s=60, max_rows=10)
    for i in range(25):
        log.record("route", reason=str(i))
    log.close()  # a close always prunes
    assert [e["reason"] for e in log.query(limit=100)] == [str(i) for i in range(24, 14, -1)]


def test_retention_drops_old_rows(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite"
    EventLog(path).close()  # creates the schema
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO events (ts, kind) VALUES (0, 'ancient')")
    log = EventLog(path, retention_days=1, flush_s=60)
    log.record("route")
    log.close()
    assert [e["kind"] for e in log.query()] == ["route"]


def test_pending_events_are_bounded_and_drops_counted(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events.sqlite", flush_s=60, max_pending=100)
    for _ in range(130):
        log.record("route")
    assert log.dropped == 30
    log.close()
    assert len(log.query(limit=1000)) == 100


def test_recording_from_many_threads_loses_nothing(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events.sqlite", flush_s=0.005)

    def burst(n: int) -> None:
        for i in range(500):
            log.record("route", reason=f"{n}-{i}")

    threads = [threading.Thread(target=burst, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    reasons = {e["reason"] for e in log.query(limit=5000)}
    assert len(reasons) == 2000 and log.dropped == 0


def test_without_a_path_nothing_is_kept() -> None:
    log = EventLog(None)
    log.record("route")
    log.close()
    assert log.query() == []
