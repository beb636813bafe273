"""Evaluation runs in SQLite: one row per run, one per case sample, exportable to JSONL.

SQLite because a run store must work with nothing installed and survive a crash mid-run (each case
is committed as it finishes, in WAL mode, so a killed ``quantgate eval`` keeps what it did).
Outputs, verdicts and timings are JSON columns: they are read whole, never queried inside, and
their shape grows with the check library. Generated token ids and their log-probabilities are
stored too (JSON arrays of ints / floats), so a later ``compare`` can re-score or measure greedy
divergence without regenerating.

The store is an object the caller owns and closes; nothing is global.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from quantgate.errors import QuantgateError

__all__ = ["CaseRecord", "RunRecord", "RunStore"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    target TEXT NOT NULL,
    golden TEXT NOT NULL,
    golden_sha256 TEXT NOT NULL,
    meta TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cases (
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    case_id TEXT NOT NULL,
    sample INTEGER NOT NULL,
    passed INTEGER NOT NULL,
    output TEXT NOT NULL,
    verdicts TEXT NOT NULL,
    usage TEXT NOT NULL,
    timings TEXT NOT NULL,
    token_ids TEXT,
    logprobs TEXT,
    PRIMARY KEY (run_id, case_id, sample)
);
"""


@dataclass
class RunRecord:
    id: str
    created_at: str
    target: str  # model dir, variant dir or server URL
    golden: str
    golden_sha256: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class CaseRecord:
    case_id: str
    sample: int
    passed: bool
    output: Any  # text, or an OpenAI-style assistant message
    verdicts: list[dict[str, Any]]
    usage: dict[str, int]
    timings: dict[str, float]
    token_ids: list[int] | None = None
    logprobs: list[float] | None = None


class RunStore:
    """A SQLite file of runs. Use as a context manager or call ``close``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(str(self.path))
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise QuantgateError(f"{self.path}: not a quantgate run store ({exc})") from None

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def create_run(self, target: str, golden: str, golden_sha256: str, meta: dict[str, Any] | None = None) -> RunRecord:
        run = RunRecord(
            id=uuid.uuid4().hex[:12],
            created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            target=target, golden=golden, golden_sha256=golden_sha256, meta=meta or {},
        )
        with self._db:
            self._db.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?)",
                             (run.id, run.created_at, run.target, run.golden, run.golden_sha256, json.dumps(run.meta)))
        return run

    def update_meta(self, run_id: str, meta: dict[str, Any]) -> None:
        with self._db:
            self._db.execute("UPDATE runs SET meta = ? WHERE id = ?", (json.dumps(meta), run_id))

    def add_case(self, run_id: str, case: CaseRecord) -> None:
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO cases VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, case.case_id, case.sample, int(case.passed), json.dumps(case.output),
                 json.dumps(case.verdicts), json.dumps(case.usage), json.dumps(case.timings),
                 json.dumps(case.token_ids) if case.token_ids is not None else None,
                 json.dumps(case.logprobs) if case.logprobs is not None else None),
            )

    def get_run(self, run_id: str) -> RunRecord:
        row = self._db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            known = [r[0] for r in self._db.execute("SELECT id FROM runs ORDER BY created_at DESC LIMIT 5")]
            raise QuantgateError(f"{self.path}: no run {run_id!r} (latest: {', '.join(known) or 'none'})")
        return RunRecord(row[0], row[1], row[2], row[3], row[4], json.loads(row[5]))

    def list_runs(self) -> list[RunRecord]:
        rows = self._db.execute("SELECT * FROM runs ORDER BY created_at, rowid").fetchall()
        return [RunRecord(r[0], r[1], r[2], r[3], r[4], json.loads(r[5])) for r in rows]

    def cases(self, run_id: str) -> Iterator[CaseRecord]:
        cursor = self._db.execute(
            "SELECT case_id, sample, passed, output, verdicts, usage, timings, token_ids, logprobs "
            "FROM cases WHERE run_id = ? ORDER BY rowid", (run_id,))
        for r in cursor:
            yield CaseRecord(r[0], r[1], bool(r[2]), json.loads(r[3]), json.loads(r[4]), json.loads(r[5]),
                             json.loads(r[6]), json.loads(r[7]) if r[7] else None,
                             json.loads(r[8]) if r[8] else None)

    def export_jsonl(self, run_id: str, out: Path) -> int:
        """Write the run header line, then one line per case sample; return the case count."""
        run = self.get_run(run_id)
        count = 0
        with out.open("w") as fh:
            fh.write(json.dumps({"run": asdict(run)}) + "\n")
            for case in self.cases(run_id):
                fh.write(json.dumps(asdict(case)) + "\n")
                count += 1
        return count
