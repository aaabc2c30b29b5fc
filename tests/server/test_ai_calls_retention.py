"""The ``ai_calls`` table stays bounded (the newest N rows, none older than a TTL), and ``/metrics`` totals of
the AI calls training jobs made stay whole: pruned rows are rolled up into ``ai_call_totals`` first."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from forgeml.ai.settings import AISettings
from forgeml.server.db import AICallRow, AICallTotalRow, Database, JobRow, select
from forgeml.server.observability import job_ai_totals, prune_ai_calls
from forgeml.server.settings import ServerSettings

from .conftest import offline_app, require_system_program
from .pg import PostgresCluster, find_bin_dir

PROVIDERS = ("anthropic", "openai", "local")
OUTCOMES = ("ok", "error: RateLimited", "error: ProviderTimeout")


def _add_calls(db: Database, n: int, *, start: float, step: float = 1.0, job_id: str | None = None) -> str:
    """``n`` ai_calls rows of one job, ``step`` seconds apart from ``start``, over several providers and
    outcomes, with tokens and cost."""
    job_id = job_id or f"job_{uuid.uuid4().hex[:12]}"
    with db.session() as s:
        if s.get(JobRow, job_id) is None:
            s.add(JobRow(id=job_id, name="t", request={}, epochs=1))
    with db.session() as s:
        for i in range(n):
            s.add(
                AICallRow(
                    job_id=job_id,
                    provider=PROVIDERS[i % 3],
                    task="analysis" if i % 2 else "research",
                    outcome=OUTCOMES[i % 3],
                    input_tokens=10 + i,
                    output_tokens=i % 7,
                    cost_usd=0.001 * (i % 5),
                    created=start + i * step,
                )
            )
    return job_id


def _normal(totals):
    """``job_ai_totals`` as comparable dicts (cost rounded: sums in another order differ in the last bits)."""
    calls, usage = totals
    return (
        {(p, t, o): n for p, t, o, n in calls},
        {p: (i, o, round(c, 9)) for p, i, o, c in usage},
    )


def _count(db: Database) -> int:
    return len(db.all(select(AICallRow)))


@pytest.fixture(scope="module")
def pg_cluster():
    """A PostgreSQL server for this module's tests (skipped naming the install command when it is missing,
    failed under .ci/run)."""
    require_system_program(find_bin_dir() is not None, "PostgreSQL (initdb, pg_ctl, postgres)", "postgresql")
    with PostgresCluster() as cluster:
        yield cluster


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'forgeml.sqlite'}"
    else:
        cluster = request.getfixturevalue("pg_cluster")
        url = cluster.create_database(f"t_{uuid.uuid4().hex[:16]}")
    database = Database(url)
    yield database
    database.dispose()


def test_prune_keeps_the_newest_rows_and_the_totals(db):
    now = time.time()
    _add_calls(db, 50, start=now - 100)
    before = _normal(job_ai_totals(db))
    assert sum(before[0].values()) == 50

    assert prune_ai_calls(db, max_rows=20, max_age=3600, batch=7) == 30  # several batches
    kept = db.all(select(AICallRow).order_by(AICallRow.id))
    assert len(kept) == 20 and [r.input_tokens for r in kept] == list(range(40, 60))  # the newest 20
    assert _normal(job_ai_totals(db)) == before
    rolled = db.all(select(AICallTotalRow))
    assert sum(r.calls for r in rolled) == 30 and sum(r.input_tokens for r in rolled) == sum(range(10, 40))

    # a second prune adds to the roll-up rows already there (an upsert), and a prune with nothing to do is a no-op
    _add_calls(db, 10, start=now)
    grown = _normal(job_ai_totals(db))
    assert sum(grown[0].values()) == 60
    assert prune_ai_calls(db, max_rows=20, max_age=3600) == 10
    assert prune_ai_calls(db, max_rows=20, max_age=3600) == 0
    assert _count(db) == 20 and _normal(job_ai_totals(db)) == grown


def test_prune_deletes_rows_older_than_the_ttl_however_few(db):
    now = time.time()
    _add_calls(db, 12, start=now - 12 * 3600, step=3600)  # one an hour, the newest an hour old
    before = _normal(job_ai_totals(db))
    assert prune_ai_calls(db, max_rows=1000, max_age=5.5 * 3600, now=now) == 7
    assert all(r.created >= now - 5.5 * 3600 for r in db.all(select(AICallRow)))
    assert _count(db) == 5 and _normal(job_ai_totals(db)) == before


def test_concurrent_prunes_never_count_a_row_twice(db):
    """Several pruners (server sweeps of several processes sharing the database) at once, while rows are added."""
    now = time.time()
    job = _add_calls(db, 300, start=now - 300)
    errors = []

    def prune():
        try:
            for _ in range(5):
                prune_ai_calls(db, max_rows=10, max_age=3600, batch=13)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def add():
        try:
            for k in range(5):
                _add_calls(db, 20, start=now + k * 20, job_id=job)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=prune) for _ in range(4)] + [threading.Thread(target=add)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    prune_ai_calls(db, max_rows=10, max_age=3600)
    calls, usage = _normal(job_ai_totals(db))
    assert sum(calls.values()) == 400 and _count(db) == 10
    assert sum(i for i, _, _ in usage.values()) == sum(10 + i for i in range(300)) + 5 * sum(10 + i for i in range(20))


def test_prune_refuses_nonsense_limits(db):
    with pytest.raises(ValueError, match="max_rows"):
        prune_ai_calls(db, max_rows=0, max_age=10)
    with pytest.raises(ValueError, match="max_age"):
        prune_ai_calls(db, max_rows=10, max_age=0)


def test_the_caps_are_settings_from_the_environment():
    settings = ServerSettings.from_env({"FORGEML_AI_CALLS_MAX_ROWS": "500", "FORGEML_AI_CALLS_MAX_AGE": "86400"})
    assert settings.ai_calls_max_rows == 500 and settings.ai_calls_max_age == 86400.0
    defaults = ServerSettings.from_env({})
    assert defaults.ai_calls_max_rows == 100_000 and defaults.ai_calls_max_age == 90 * 86400
    with pytest.raises(ValueError, match="ai_calls_max_rows"):
        ServerSettings.from_env({"FORGEML_AI_CALLS_MAX_ROWS": "0"})

    ai = AISettings.from_env(
        {
            "FORGEML_AI_CACHE_MAX_ENTRIES": "50",
            "FORGEML_AI_CACHE_MAX_AGE": "3600",
            "FORGEML_AI_AUDIT_MAX_ROWS": "70",
            "FORGEML_AI_AUDIT_MAX_AGE": "7200",
        }
    )
    assert (ai.cache_max_entries, ai.cache_max_age, ai.audit_max_rows, ai.audit_max_age) == (50, 3600, 70, 7200)
    with pytest.raises(ValueError, match="FORGEML_AI_AUDIT_MAX_ROWS"):
        AISettings.from_env({"FORGEML_AI_AUDIT_MAX_ROWS": "many"})


def test_the_orchestrators_cache_takes_its_caps_from_the_settings(tmp_path):
    from forgeml.ai import AIServiceOrchestrator

    env = {"FORGEML_AI_CACHE_MAX_ENTRIES": "3", "FORGEML_AI_AUDIT_MAX_ROWS": "4", "FORGEML_AI_AUDIT_MAX_AGE": "60"}
    orch = AIServiceOrchestrator(AISettings.from_env(env, cache_dir=tmp_path))
    try:
        cache = orch.cache
        assert (cache.max_entries, cache.audit_max_rows, cache.audit_max_age) == (3, 4, 60.0)
        assert cache.max_age == AISettings.model_fields["cache_max_age"].default
    finally:
        cache.close()


def test_metrics_totals_survive_the_servers_prune(tmp_path):
    """The server prunes at start (and every so often): /metrics counts the same calls before and after."""
    data = tmp_path / "data"
    data.mkdir()
    db = Database(f"sqlite:///{data / 'forgeml.sqlite'}")
    _add_calls(db, 40, start=time.time() - 40)

    def job_series(text):
        series = {}
        for line in text.splitlines():
            if line.startswith("forgeml_job_ai_"):
                name, value = line.rsplit(" ", 1)
                series[name] = float(value)
        return series

    try:
        with offline_app(data, ai_calls_max_rows=1_000_000) as client:
            before = job_series(client.get("/metrics").text)
        assert before['forgeml_job_ai_calls_total{outcome="error: RateLimited",provider="openai",task="analysis"}'] > 0
        assert _count(db) == 40
        with offline_app(data, ai_calls_max_rows=5) as client:
            deadline = time.monotonic() + 10
            while _count(db) > 5 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _count(db) == 5
            after = job_series(client.get("/metrics").text)
    finally:
        db.dispose()
    assert after.keys() == before.keys()
    assert after == pytest.approx(before)
