"""The console's database: every alert once (idempotent on alert_id) and every verdict given.
All SQL is here; pointing the console at another SQL database means replacing this module.

    db = Store(Path("data/console.sqlite"))
    db.add_alert(alert_dict)                      # False when already there (at-least-once duplicates)
    page = db.alerts(severity="critical", status="open", stream="card-1", page=0, size=50)
    db.add_verdict(alert_id, stream_id, "legit", "ana", "note", decided_at)
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

STATUSES = ("open", "fraud", "legit", "unsure")

SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    alert_id TEXT PRIMARY KEY,
    stream_id TEXT NOT NULL,
    severity TEXT NOT NULL,
    score REAL NOT NULL,
    detected_at TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'open',
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_by_time ON alerts (detected_at DESC);
CREATE INDEX IF NOT EXISTS alerts_by_stream ON alerts (stream_id, detected_at DESC);
CREATE TABLE IF NOT EXISTS verdicts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id TEXT NOT NULL,
    stream_id TEXT NOT NULL,
    verdict TEXT NOT NULL,
    analyst TEXT NOT NULL,
    note TEXT NOT NULL,
    decided_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS verdicts_by_stream ON verdicts (stream_id, decided_at DESC);
"""


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # One connection shared by the web handlers and the alerts reader, behind a lock: SQLite
        # serialises writers anyway, and the console's load is a few analysts.
        self._db = sqlite3.connect(str(path), check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        with self._lock, self._db:
            self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def add_alert(self, a: dict[str, Any]) -> bool:
        with self._lock, self._db:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO alerts (alert_id, stream_id, severity, score, detected_at, body) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (a["alert_id"], a["stream_id"], a["severity"], float(a["score"]), a["detected_at"], json.dumps(a)),
            )
            return cur.rowcount == 1

    def alerts(
        self, severity: str | None, status: str | None, stream: str | None, page: int, size: int
    ) -> tuple[list[dict[str, Any]], int]:
        """A page of alerts, newest first, and how many match in all."""
        where, args = [], []
        for col, value in (("severity", severity), ("status", status), ("stream_id", stream)):
            if value:
                where.append(f"{col} = ?")  # noqa: S608 - the column names are ours, the values bound
                args.append(value)
        cond = f" WHERE {' AND '.join(where)}" if where else ""
        with self._lock:
            total = self._db.execute(f"SELECT COUNT(*) FROM alerts{cond}", args).fetchone()[0]  # noqa: S608
            rows = self._db.execute(
                f"SELECT * FROM alerts{cond} ORDER BY detected_at DESC, rowid DESC LIMIT ? OFFSET ?",  # noqa: S608
                [*args, size, page * size],
            ).fetchall()
        return [self._row(r) for r in rows], int(total)

    def alert(self, alert_id: str) -> dict[str, Any] | None:
        with self._lock:
            r = self._db.execute("SELECT * FROM alerts WHERE alert_id = ?", (alert_id,)).fetchone()
        return None if r is None else self._row(r)

    def stream_history(self, stream_id: str, limit: int = 20) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The stream's latest alerts and verdicts."""
        with self._lock:
            alerts = self._db.execute(
                "SELECT * FROM alerts WHERE stream_id = ? ORDER BY detected_at DESC, rowid DESC LIMIT ?",
                (stream_id, limit),
            ).fetchall()
            verdicts = self._db.execute(
                "SELECT * FROM verdicts WHERE stream_id = ? ORDER BY decided_at DESC LIMIT ?", (stream_id, limit)
            ).fetchall()
        return [self._row(r) for r in alerts], [dict(v) for v in verdicts]

    def add_verdict(
        self, alert_id: str, stream_id: str, verdict: str, analyst: str, note: str, decided_at: str
    ) -> None:
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO verdicts (alert_id, stream_id, verdict, analyst, note, decided_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (alert_id, stream_id, verdict, analyst, note, decided_at),
            )
            self._db.execute("UPDATE alerts SET status = ? WHERE alert_id = ?", (verdict, alert_id))

    @staticmethod
    def _row(r: sqlite3.Row) -> dict[str, Any]:
        d: dict[str, Any] = json.loads(r["body"])
        d["status"] = r["status"]
        return d
