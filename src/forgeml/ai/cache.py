"""An on-disk cache of AI responses (SQLite), and the persisted audit trail beside it."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path

__all__ = ["ResponseCache", "request_key"]


def request_key(task: str, payload: dict) -> str:
    """A stable key for a request: the task and its canonical JSON."""
    canonical = json.dumps({"task": task, "payload": payload}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class ResponseCache:
    """Responses by request key, each with an expiry; ``path=None`` keeps them in memory only."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path) if path else ":memory:", check_same_thread=False)
        self._lock = threading.Lock()
        if path is not None:
            # callers run on an event loop: a write must not wait for an fsync (WAL with NORMAL syncs at
            # checkpoints only; a crash can lose the last cached answers, never corrupt the file)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        with self._lock, self._db:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, task TEXT, created REAL, expires REAL, value TEXT)"
            )
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL, record TEXT)"
            )

    def get(self, key: str) -> str | None:
        now = time.time()
        with self._lock:
            row = self._db.execute("SELECT value, expires FROM responses WHERE key = ?", (key,)).fetchone()
        if row is None or row[1] < now:
            return None
        return row[0]

    def put(self, key: str, task: str, value: str, ttl: float) -> None:
        now = time.time()
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO responses (key, task, created, expires, value) VALUES (?, ?, ?, ?, ?)",
                (key, task, now, now + ttl, value),
            )

    def add_audit(self, record: dict) -> None:
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO audit (time, record) VALUES (?, ?)", (record.get("time", time.time()), json.dumps(record))
            )

    def audit(self, limit: int = 100) -> list[dict]:
        with self._lock:
            rows = self._db.execute("SELECT record FROM audit ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [json.loads(r[0]) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
