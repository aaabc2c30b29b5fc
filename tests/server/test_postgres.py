"""The platform on PostgreSQL: ``FORGEML_DATABASE_URL`` selects it, and everything works there as on SQLite.

One throwaway cluster (``tests/server/pg.py``) serves the session; each test gets a database of its own.
PostgreSQL is a test requirement, never skipped: ``.ci/run`` installs it with apt when it is missing.
Each test checks the rows in PostgreSQL itself, with psycopg, besides what the API answers.
"""

from __future__ import annotations

import io
import math
import os
import time
import uuid
from dataclasses import dataclass

import numpy as np
import pytest

from .conftest import (
    OUTPUT,
    TINY_MLP,
    LiveServer,
    child_processes,
    end_processes,
    require_system_program,
    wait_for_job,
)
from .pg import PostgresCluster, find_bin_dir

FAST = {"optimizer": {"name": "adam", "lr": 0.01}, "batch_size": 256}


@dataclass
class PgDatabase:
    """One database of the session's cluster: its SQLAlchemy URL, and psycopg queries on it."""

    cluster: PostgresCluster
    name: str
    url: str

    def rows(self, query: str, *params) -> list[tuple]:
        with self.cluster.connect(self.name) as conn:
            return conn.execute(query, params).fetchall()

    def dump(self) -> str:
        """Every row of every table, as JSON text."""
        from psycopg import sql

        tables = [t for (t,) in self.rows("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]
        lines = []
        with self.cluster.connect(self.name) as conn:
            for table in tables:
                query = sql.SQL("SELECT row_to_json(t)::text FROM {} AS t").format(sql.Identifier(table))
                lines += [f"{table}: {row}" for (row,) in conn.execute(query)]
        return "\n".join(lines)


@pytest.fixture(scope="session")
def postgres():
    """The session's PostgreSQL server. A missing psycopg fails the tests, naming the fix; a missing PostgreSQL
    skips them naming the command that installs it (fails under .ci/run)."""
    require_system_program(find_bin_dir() is not None, "PostgreSQL (initdb, pg_ctl, postgres)", "postgresql")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.fail('psycopg is missing: pip install -e ".[postgres]" (make test installs the dev extras, with it)')
    try:
        cluster = PostgresCluster().start()
    except FileNotFoundError as exc:
        pytest.fail(str(exc))
    yield cluster
    cluster.stop()


@pytest.fixture
def pg_db(postgres) -> PgDatabase:
    """A new, empty database, so that no test sees another's rows."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    return PgDatabase(postgres, name, postgres.create_database(name))


@pytest.fixture
def app_client(pg_db, tmp_path, monkeypatch):
    """``app_client(**env)`` -> an unstarted TestClient of ``create_app()`` configured by the environment:
    ``FORGEML_DATABASE_URL`` naming the test's database, a fresh data directory, one worker, no AI key."""
    from fastapi.testclient import TestClient

    from forgeml.server.app import create_app

    for key in list(os.environ):
        if key.endswith("_API_KEY") or key.startswith("FORGEML_"):
            monkeypatch.delenv(key)

    def make(headers: dict[str, str] | None = None, **env: str) -> TestClient:
        env = {
            "FORGEML_DATABASE_URL": pg_db.url,
            "FORGEML_DATA_DIR": str(tmp_path / "data"),
            "FORGEML_WORKERS": "1",
            **env,
        }
        for key, value in env.items():
            monkeypatch.setenv(key, value)  # the worker processes inherit it
        return TestClient(create_app(), headers=headers)

    return make


def platform_sqlite(data_dir) -> list[str]:
    """The default SQLite database's files in ``data_dir`` (the AI layer's response cache is another file)."""
    return sorted(p.name for p in data_dir.glob("forgeml.sqlite*"))


def test_a_job_trains_and_serves_its_model_with_rows_in_postgres(app_client, pg_db, tmp_path):
    from forgeml.data.datasets import MNIST

    with app_client() as api:
        assert api.app.state.db.engine.dialect.name == "postgresql"
        created = api.post("/v1/jobs", json={"model": TINY_MLP, "dataset": "mnist", "epochs": 2, "name": "pg", **FAST})
        assert created.status_code == 201, created.text
        done = wait_for_job(api, created.json()["id"])
        assert done["state"] == "completed", done
        job_id, model_id = done["id"], done["model_id"]

        detail = api.get(f"/v1/jobs/{job_id}").json()
        assert [h["epoch"] for h in detail["history"]] == [1, 2]
        assert detail["best_val_accuracy"] == max(h["val_accuracy"] for h in detail["history"]) > 0.7

        model = api.get(f"/v1/models/{model_id}")
        assert model.status_code == 200, model.text
        assert model.json()["lineage"]["job_id"] == job_id and model.json()["metrics"]["epochs"] == 2
        assert model_id in [m["id"] for m in api.get("/v1/models").json()]

        test = MNIST("test", flatten=True)
        pixels = (test.data[:32].reshape(32, 784) / 255.0).round(4).tolist()
        predicted = api.post(f"/v1/models/{model_id}/predict", json={"inputs": pixels})
        assert predicted.status_code == 200, predicted.text
        body = predicted.json()
        np.testing.assert_allclose(np.array(body["probabilities"]).sum(axis=1), 1.0, atol=1e-4)
        accuracy = np.mean([p == str(t) for p, t in zip(body["predictions"], test.targets[:32], strict=True)])
        assert accuracy > 0.6
        assert api.get(f"/v1/models/{model_id}/weights").status_code == 200

    # the rows are in PostgreSQL, and no SQLite database was made beside them
    assert pg_db.rows("SELECT state, epochs_done, model_id, name FROM jobs") == [("completed", 2, model_id, "pg")]
    epochs = pg_db.rows(
        "SELECT epoch, (metrics::jsonb ->> 'val_accuracy')::float FROM epochs WHERE job_id = %s ORDER BY id", job_id
    )
    assert [e for e, _ in epochs] == [1, 2] and all(0 < acc <= 1 for _, acc in epochs)
    [(row_id, row_job, kind, weights)] = pg_db.rows("SELECT id, job_id, kind, weights FROM models")
    assert (row_id, row_job, kind) == (model_id, job_id, "image")
    assert (tmp_path / "data" / weights).is_file()
    assert platform_sqlite(tmp_path / "data") == []


def _csv(rows: int = 90) -> bytes:
    rng = np.random.default_rng(0)
    labels = np.array(["setosa", "versicolor", "virginica"])[np.arange(rows) % 3]
    centres = {"setosa": 0.0, "versicolor": 3.0, "virginica": 6.0}
    out = io.StringIO()
    out.write("petal_length,petal_width,sepal_length,species\n")
    for label in labels:
        a, b, c = centres[label] + rng.normal(0, 0.5, 3)
        out.write(f"{a:.3f},{b:.3f},{c:.3f},{label}\n")
    return out.getvalue().encode()


def test_dataset_upload_list_and_training_round_trip(app_client, pg_db, tmp_path):
    with app_client() as api:
        uploaded = api.post(
            "/v1/datasets", files={"file": ("flowers.csv", _csv())}, data={"target": "species", "name": "flowers"}
        )
        assert uploaded.status_code == 201, uploaded.text
        dataset = uploaded.json()
        assert dataset["summary"]["rows"] == 90 and dataset["summary"]["classes"] == [
            "setosa",
            "versicolor",
            "virginica",
        ]
        assert [d["id"] for d in api.get("/v1/datasets").json()] == [dataset["id"]]
        assert api.get(f"/v1/datasets/{dataset['id']}").json() == dataset

        # the worker process reads the dataset's row from PostgreSQL too
        spec = {"input_shape": [3], "layers": [{"type": "Linear", "args": {"in_features": 3, "out_features": 3}}]}
        job = api.post("/v1/jobs", json={"model": spec, "dataset": dataset["id"], "epochs": 1, **FAST})
        assert job.status_code == 201, job.text
        done = wait_for_job(api, job.json()["id"])
        assert done["state"] == "completed", done

    [(name, target, path, summary)] = pg_db.rows("SELECT name, target, path, summary::jsonb FROM datasets")
    assert (name, target) == ("flowers", "species") and (tmp_path / "data" / path).is_file()
    assert summary == dataset["summary"]

    with app_client() as api:  # a restarted server lists the same datasets
        assert api.get("/v1/datasets").json() == [dataset]
    assert platform_sqlite(tmp_path / "data") == []


def test_non_finite_numbers_in_json_columns_round_trip(app_client, pg_db):
    from forgeml.server.db import Database, EpochRow, JobRow, json_safe, select

    nan, inf = float("nan"), float("inf")
    metrics = {"epoch": 1, "train_loss": nan, "val_loss": inf, "grad_norm": -inf, "history": [1.5, nan, (inf, 2)]}
    stored = {"epoch": 1, "train_loss": "NaN", "val_loss": "Infinity", "grad_norm": "-Infinity",
              "history": [1.5, "NaN", ["Infinity", 2]]}  # fmt: skip
    request = {"dataset": "mnist", "model": TINY_MLP, "epochs": 2}
    db = Database(pg_db.url)
    try:
        with db.session() as s:
            s.add(JobRow(id="job_nonfinite", name="diverged", state="failed", request=request, epochs=2))
            s.flush()
            s.add(EpochRow(job_id="job_nonfinite", epoch=1, metrics=json_safe(metrics)))  # cleaned before
            s.add(EpochRow(job_id="job_nonfinite", epoch=2, metrics=metrics))  # not cleaned: still valid JSON
            job = s.get(JobRow, "job_nonfinite")
            job.best_val_accuracy, job.summary = nan, {"final_test": {"loss": inf, "accuracy": 0.1}}
        rows = db.all(select(EpochRow).where(EpochRow.job_id == "job_nonfinite").order_by(EpochRow.id))
        assert [r.metrics for r in rows] == [stored, stored]
        job = db.get(JobRow, "job_nonfinite")
        assert math.isnan(job.best_val_accuracy) and job.summary == {
            "final_test": {"loss": "Infinity", "accuracy": 0.1}
        }
    finally:
        db.dispose()
    # PostgreSQL holds them as valid JSON (jsonb parses it) and a float column keeps NaN
    assert pg_db.rows("SELECT metrics::jsonb ->> 'val_loss' FROM epochs ORDER BY id") == [("Infinity",), ("Infinity",)]
    assert pg_db.rows("SELECT best_val_accuracy = 'NaN'::float FROM jobs") == [(True,)]

    with app_client() as api:
        detail = api.get("/v1/jobs/job_nonfinite")
        assert detail.status_code == 200, detail.text
        assert detail.json()["history"][0]["train_loss"] == "NaN"
        # a CSV with a missing or infinite feature value is refused, naming the column and row
        for value in ("nan", "inf"):
            csv = f"a,b,label\n1,{value},x\n2,3,y\n3,4,x\n4,5,y\n".encode()
            refused = api.post("/v1/datasets", files={"file": ("odd.csv", csv)}, data={"target": "label"})
            assert refused.status_code == 422 and "'b'" in refused.text and "row 1" in refused.text, refused.text
        # a file name longer than the name column is cut to fit
        csv = b"a,b,label\n1,2,x\n2,3,y\n3,4,x\n4,5,y\n"
        long_name = "d" * 220 + ".csv"
        uploaded = api.post("/v1/datasets", files={"file": (long_name, csv)}, data={"target": "label"})
        assert uploaded.status_code == 201, uploaded.text
        assert uploaded.json()["name"] == long_name[:200]
        listed = api.get("/v1/datasets")
        assert listed.status_code == 200 and [d["id"] for d in listed.json()] == [uploaded.json()["id"]]
    assert pg_db.rows("SELECT length(name) FROM datasets") == [(200,)]


def test_a_job_killed_with_its_server_is_interrupted_then_resumed_on_postgres(pg_db, tmp_path):
    epochs = 15
    orphans: dict[int, str] = {}
    server = LiveServer(tmp_path / "data", OUTPUT / "logs" / "postgres-restart.log", FORGEML_DATABASE_URL=pg_db.url)
    try:
        server.start()
        with server.client() as api:
            body = {"model": TINY_MLP, "dataset": "mnist", "epochs": epochs, "name": "killed", **FAST}
            job_id = api.post("/v1/jobs", json=body).json()["id"]
            deadline = time.monotonic() + 120
            while api.get(f"/v1/jobs/{job_id}").json()["epochs_done"] < 2:
                assert time.monotonic() < deadline, "the job did not train two epochs in 120 s"
                time.sleep(0.05)
        orphans = child_processes(server.process.pid)  # its worker and multiprocessing's resource tracker
        server.stop(kill=True)  # SIGKILL: the server cannot mark anything on its way out
        [(state, done_before)] = pg_db.rows("SELECT state, epochs_done FROM jobs")
        assert state == "running" and 2 <= done_before < epochs

        server.start()
        assert pg_db.rows("SELECT state FROM jobs") == [("interrupted",)]
        with server.client() as api:
            stopped = api.get(f"/v1/jobs/{job_id}").json()
            assert stopped["state"] == "interrupted" and 2 <= stopped["epochs_done"] < epochs, stopped
            assert [h["epoch"] for h in stopped["history"]] == list(range(1, stopped["epochs_done"] + 1))
            resumed = api.post(f"/v1/jobs/{job_id}/resume")
            assert resumed.status_code == 200, resumed.text
            done = wait_for_job(api, job_id, timeout=120)
            assert done["state"] == "completed", done
            assert api.get(f"/v1/models/{done['model_id']}").json()["job_id"] == job_id
    finally:
        server.stop()  # SIGTERM: the server ends its worker pool
        left = end_processes(orphans)
    assert not left, f"the killed server's worker processes outlived it: {left}"
    # from the last checkpoint on: every epoch stored once, in order
    epoch_rows = pg_db.rows("SELECT epoch FROM epochs WHERE job_id = %s ORDER BY id", job_id)
    assert [e for (e,) in epoch_rows] == list(range(1, epochs + 1))
    assert pg_db.rows("SELECT state, epochs_done, error FROM jobs") == [("completed", epochs, None)]
    assert pg_db.rows("SELECT count(*) FROM models WHERE job_id = %s", job_id) == [(1,)]
    assert platform_sqlite(tmp_path / "data") == []


def test_a_job_trains_on_through_a_postgres_restart(postgres, pg_db, tmp_path):
    """PostgreSQL stopped mid-job and started again (an administrator's restart): the server answers all along,
    /readyz says the database is down while it is, the job's epoch writes wait for it and the job completes,
    and every epoch acknowledged before the restart is still there."""
    epochs = 6
    server = LiveServer(tmp_path / "data", OUTPUT / "logs" / "postgres-outage.log", FORGEML_DATABASE_URL=pg_db.url)
    try:
        server.start()
        with server.client() as api:
            body = {"model": TINY_MLP, "dataset": "mnist", "epochs": epochs, "name": "outage", "batch_size": 32}
            job_id = api.post("/v1/jobs", json=body).json()["id"]
            deadline = time.monotonic() + 60
            while api.get(f"/v1/jobs/{job_id}").json()["epochs_done"] < 2:
                assert time.monotonic() < deadline, "the job did not train two epochs in 60 s"
                time.sleep(0.02)
            acknowledged = [h["epoch"] for h in api.get(f"/v1/jobs/{job_id}").json()["history"]]
            assert len(acknowledged) < epochs, "the job finished before the restart: make its epochs longer"

            postgres.stop_server()  # pg_ctl stop -m fast: every session is ended
            try:
                down = time.monotonic()
                ready = api.get("/readyz")
                assert ready.status_code == 503, ready.text
                assert ready.json()["checks"]["database"].startswith("error"), ready.json()
                assert api.get("/healthz").status_code == 200
                detail = api.get(f"/v1/jobs/{job_id}")  # a clear 503, not an internal error
                assert detail.status_code == 503 and "database is unavailable" in detail.json()["detail"], detail.text
                time.sleep(max(0.0, 2.0 - (time.monotonic() - down)))  # an epoch ends while it is down
            finally:
                postgres.start_server()

            deadline, ready = time.monotonic() + 15, None
            while time.monotonic() < deadline:
                ready = api.get("/readyz")
                if ready.status_code == 200:
                    break
                time.sleep(0.1)
            assert ready.status_code == 200, f"/readyz did not recover after the restart: {ready.text}"
            done = wait_for_job(api, job_id, timeout=120)
            assert done["state"] == "completed" and done["error"] is None, done
            history = [h["epoch"] for h in api.get(f"/v1/jobs/{job_id}").json()["history"]]
            assert history == list(range(1, epochs + 1)), history
    finally:
        server.stop()
    # in PostgreSQL itself: the epochs acknowledged before the restart, then the others, each once
    stored = [e for (e,) in pg_db.rows("SELECT epoch FROM epochs WHERE job_id = %s ORDER BY id", job_id)]
    assert stored[: len(acknowledged)] == acknowledged and stored == list(range(1, epochs + 1)), stored
    assert pg_db.rows("SELECT state, epochs_done FROM jobs") == [("completed", epochs)]
    log = server.log_path.read_text()
    assert "lost the database connection" in log, "the worker's epoch writes never waited for the database"


def test_no_secret_reaches_the_database(app_client, pg_db):
    from tests.ai.fake_providers import FakeProviderServer, answer, http_error

    keys = {
        "OPENAI_API_KEY": "sk-test-secret-openai-123",
        "ANTHROPIC_API_KEY": "sk-ant-test-secret-456",
        "PERPLEXITY_API_KEY": "pplx-test-secret-789",
        "GEMINI_API_KEY": "gem-test-secret-abc",
        "XAI_API_KEY": "xai-test-secret-def",
    }
    server_key = "forgeml-server-secret-0123456789"
    analysis = {
        "diagnosis": "healthy",
        "evidence": ["validation loss is still falling"],
        "recommendations": [
            {"action": {"action": "scale_learning_rate", "factor": 0.9}, "rationale": "settle", "confidence": 0.5}
        ],
    }
    insights = {"insights": [{"technique": "AdamW", "summary": "decouple decay", "applies_when": "overfitting"}]}
    with FakeProviderServer() as providers:
        # a provider that rejects the key and echoes it, as some do: that error must not be stored verbatim
        providers.set_default("anthropic", http_error(401, f"Incorrect API key provided: {keys['ANTHROPIC_API_KEY']}"))
        providers.set_default("gemini", answer(analysis))
        providers.set_default("perplexity", answer(insights))
        env = {f"FORGEML_{p.upper()}_BASE_URL": providers.base_url(p) for p in ("openai", "anthropic", "perplexity", "gemini", "xai")}  # fmt: skip
        env |= keys | {"FORGEML_API_KEY": server_key, "FORGEML_AI_MAX_RETRIES": "0"}
        with app_client(headers={"Authorization": f"Bearer {server_key}"}, **env) as api:
            assert api.get("/v1/jobs", headers={"Authorization": "Bearer wrong"}).status_code == 401
            ai = {"optimization_guidance_frequency": 1, "research_update_interval": 1, "wait_for_ai": True}
            body = {"model": TINY_MLP, "dataset": "mnist", "epochs": 2, "ai": ai, "name": "guided", **FAST}
            created = api.post("/v1/jobs", json=body)
            assert created.status_code == 201, created.text
            done = wait_for_job(api, created.json()["id"])
            assert done["state"] == "completed", done
            events = api.get(f"/v1/jobs/{done['id']}").json()["events"]
            assert events, "the guided job recorded no AI event"
            analyzed = api.post("/v1/ai/analyze", json={"model_description": "mlp", "performance_metrics": {}})
            assert analyzed.status_code == 200, analyzed.text
        sent = [r.headers for r in providers.requests]
    # the keys were in use: the providers received them from the worker's and the server's clients
    assert any(keys["ANTHROPIC_API_KEY"] in str(h) for h in sent) and any(
        keys["GEMINI_API_KEY"] in str(h) for h in sent
    )
    dump = pg_db.dump()
    assert "guided" in dump and "ai_events" in dump
    # the job's calls are stored for /metrics, with bounded outcomes (no free-text error detail)
    outcomes = {outcome for (outcome,) in pg_db.rows("SELECT DISTINCT outcome FROM ai_calls")}
    assert outcomes and all(o in ("ok", "cache hit", "invalid output") or o.startswith("error: ") for o in outcomes)
    assert all(len(o) < 50 for o in outcomes), outcomes
    for secret in [server_key, *keys.values()]:
        assert secret not in dump, f"{secret} is stored in the database:\n" + "\n".join(
            line for line in dump.splitlines() if secret in line
        )
