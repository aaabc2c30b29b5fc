"""Resource limits of training jobs: the static estimate and refusal (forgeml.server.limits, POST /v1/jobs and
resume), and the workers' memory limit at run time (RLIMIT_DATA): a job past it fails with a clear
out-of-memory error while its worker, and the server, carry on."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
import time
import tracemalloc

import numpy as np
import pytest

import forgeml as fm
from forgeml.nn import build
from forgeml.server import limits
from forgeml.server.schemas import PRESETS, JobCreate
from forgeml.server.settings import ServerSettings

from .conftest import TINY_MLP, wait_for_job

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="RLIMIT_DATA counts NumPy's arrays on Linux (>= 4.7); /proc"
)

HUGE_LINEAR = {  # the spec: a 10-million-unit hidden layer (the worker tried to allocate 29 GiB for it)
    "input_shape": [784],
    "layers": [
        {"type": "Linear", "args": {"in_features": 784, "out_features": 10_000_000}},
        {"type": "ReLU"},
        {"type": "Linear", "args": {"in_features": 10_000_000, "out_features": 10}},
    ],
}
HUGE_PARAMETERS = 784 * 10_000_000 + 10_000_000 + 10_000_000 * 10 + 10
CONV = {
    "layers": [
        {"type": "Unflatten", "args": {"dim": 1, "unflattened_size": [1, 28, 28]}},
        {"type": "Conv2d", "args": {"in_channels": 1, "out_channels": 8, "kernel_size": 3, "padding": 1}},
        {"type": "BatchNorm2d", "args": {"num_features": 8}},
        {"type": "ReLU"},
        {"type": "MaxPool2d", "args": {"kernel_size": 2}},
        {"type": "Conv2d", "args": {"in_channels": 8, "out_channels": 16, "kernel_size": 3, "groups": 2}},
        {"type": "GELU"},
        {"type": "AvgPool2d", "args": {"kernel_size": 2}},
        {"type": "Flatten"},
        {"type": "Dropout", "args": {"p": 0.2}},
        {"type": "Linear", "args": {"in_features": 16 * 6 * 6, "out_features": 32, "bias": False}},
        {"type": "BatchNorm1d", "args": {"num_features": 32, "affine": False}},
        {"type": "Tanh"},
        {"type": "Linear", "args": {"in_features": 32, "out_features": 10}},
        {"type": "LogSoftmax", "args": {"dim": -1}},
    ]
}
SEQUENCE = {
    "layers": [
        {"type": "Embedding", "args": {"num_embeddings": 500, "embedding_dim": 16, "padding_idx": 0}},
        {"type": "PositionalEncoding", "args": {"d_model": 16, "max_len": 64, "dropout": 0.1}},
        {"type": "MultiHeadAttention", "args": {"embed_dim": 16, "num_heads": 2, "dropout": 0.1}},
        {"type": "LayerNorm", "args": {"normalized_shape": 16}},
        {"type": "FeedForward", "args": {"embed_dim": 16, "hidden_dim": 24, "activation": "relu"}},
        {"type": "LayerNorm", "args": {"normalized_shape": [16], "bias": False}},
        {"type": "TransformerEncoderLayer", "args": {"d_model": 16, "nhead": 4, "dim_feedforward": 40}},
        {"type": "SequencePool", "args": {"mode": "mean"}},
        {"type": "Linear", "args": {"in_features": 16, "out_features": 2}},
    ]
}


def _body(**fields) -> JobCreate:
    return JobCreate.model_validate(fields)


def _estimate(body: JobCreate, **kwargs) -> limits.JobEstimate:
    shape = [body.max_length] if body.dataset == "spam" else [784]
    train, test = limits.dataset_size(body, None)
    return limits.estimate_job(body, shape, train, test_rows=test, **kwargs)


# -- the static check on POST /v1/jobs --------------------------------------------------------------------
def test_a_ten_million_unit_linear_is_refused_with_its_estimate_and_no_job_row(client):
    response = client.post("/v1/jobs", json={"model": HUGE_LINEAR, "dataset": "mnist"})
    assert response.status_code == 422, response.text
    errors = {e["ctx"]["setting"]: e for e in response.json()["detail"]}
    assert set(errors) == {"FORGEML_MAX_JOB_PARAMETERS", "FORGEML_MAX_JOB_MEMORY_BYTES"}
    parameters = errors["FORGEML_MAX_JOB_PARAMETERS"]
    assert parameters["loc"] == ["body", "model"] and parameters["ctx"]["estimate"] == HUGE_PARAMETERS
    assert parameters["msg"].startswith("the model has 7.95e9 parameters (29.6 GiB of float32 weights")
    assert "over this server's limit of 1e8 parameters; FORGEML_MAX_JOB_PARAMETERS raises it" in parameters["msg"]
    memory = errors["FORGEML_MAX_JOB_MEMORY_BYTES"]
    assert memory["loc"] == ["body", "model"] and memory["ctx"]["estimate"] > 48 * HUGE_PARAMETERS
    assert "with gradients, Adam state and the trainer's copies" in memory["msg"]
    assert "(FORGEML_MAX_JOB_MEMORY_BYTES raises it)" in memory["msg"]
    assert client.get("/v1/jobs").json() == []
    assert client.app.state.jobs._pool is None  # refused before anything was queued: no worker even started


def test_memory_over_the_limit_from_a_large_batch_points_at_batch_size(make_client):
    api = make_client(max_job_memory_bytes="256MiB", max_job_samples=0)
    wide = {"layers": [{"type": "Linear", "args": {"in_features": 784, "out_features": 4096}}, {"type": "ReLU"}]}
    wide["layers"].append({"type": "Linear", "args": {"in_features": 4096, "out_features": 10}})
    response = api.post("/v1/jobs", json={"model": wide, "dataset": "mnist", "batch_size": 4096})
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "batch_size"] and error["ctx"]["limit"] == 256 << 20
    assert "of activations for a batch of 4096" in error["msg"] and "a smaller batch_size needs less" in error["msg"]
    assert "over this server's limit of 256 MiB (FORGEML_MAX_JOB_MEMORY_BYTES raises it" in error["msg"]


def test_too_much_work_points_at_epochs_with_the_samples(make_client):
    api = make_client(max_job_samples=100_000)
    response = api.post("/v1/jobs", json={"preset": "mnist_mlp", "epochs": 20})
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "epochs"] and error["ctx"]["estimate"] == 160_000
    assert "would train on 160,000 samples (20 epochs x 8,000 rows)" in error["msg"]
    assert "FORGEML_MAX_JOB_SAMPLES raises it" in error["msg"]
    ai = _estimate(_body(preset="mnist_ai_enhanced"))  # synthetic data (ratio 0.3) is trained on too
    assert ai.samples == math.ceil(10 * 8000 * 1.3)


def test_a_multi_process_job_needs_its_memory_once_per_process():
    settings = ServerSettings(max_job_memory_bytes="400MiB", worker_memory_limit_bytes=0)
    one = _estimate(_body(preset="mnist_mlp"))
    four = _estimate(_body(preset="mnist_mlp", processes=4))
    assert four.state_copies == one.state_copies + 1  # the gradient buckets
    assert four.job_memory_bytes == 4 * four.memory_bytes > 400 << 20 > one.job_memory_bytes
    assert limits.check_job(one, settings) == []
    (error,) = limits.check_job(four, settings)
    assert "per process" in error.message and "for its 4 processes" in error.message


def test_a_resumed_job_is_checked_against_limits_lowered_since(make_client):
    from forgeml.server.db import JobRow, new_id
    from forgeml.server.routers.jobs import _check_resume_limits

    api = make_client(max_job_samples=20_000)
    db = api.app.state.db
    request = JobCreate(preset="mnist_mlp", epochs=5).model_dump(mode="json")
    fresh = JobRow(id=new_id("job"), name="fresh", state="failed", request=request, epochs=5, epochs_done=0)
    nearly = JobRow(id=new_id("job"), name="nearly", state="interrupted", request=request, epochs=5, epochs_done=3)
    with db.session() as s:
        s.add_all([fresh, nearly])
    response = api.post(f"/v1/jobs/{fresh.id}/resume")
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == ["request", "epochs"] and error["ctx"]["estimate"] == 40_000
    assert error["msg"].startswith(f"resuming job {fresh.id} would train on 40,000 samples (5 epochs x 8,000 rows)")
    assert api.get(f"/v1/jobs/{fresh.id}").json()["state"] == "failed"  # left as it was, not queued
    _check_resume_limits(db, api.app.state.settings, nearly)  # 2 epochs left: 16,000 samples pass


# -- the estimates ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "dataset", "text"),
    [
        (PRESETS["mnist_mlp"]["model"], "mnist", False),
        (CONV, "mnist", False),
        (SEQUENCE, "spam", True),
        (PRESETS["spam_transformer"]["model"], "spam", True),
    ],
    ids=["mlp", "conv", "sequence", "spam-transformer"],
)
def test_parameter_counts_are_those_of_the_built_model(spec, dataset, text):
    body = _body(model=spec, dataset=dataset, max_length=32)
    shape = [32] if text else [784]
    built_spec = body.model.model_copy(deep=True)
    if text:  # the worker sizes a text model's embedding to its vocabulary
        built_spec.layers[0].args["num_embeddings"] = limits.TEXT_VOCABULARY
    built = sum(p.numel() for p in build(built_spec).parameters())
    assert limits.count_parameters(body.model, shape, text=text) == built
    assert _estimate(body).parameters == built


def _measure(body: JobCreate, rows: int) -> tuple[int, int]:
    """(peak bytes of one training step, peak bytes of one evaluation batch of 256), from tracemalloc."""
    from forgeml.data import TensorDataset

    fm.manual_seed(0)
    model = build(body.model)
    optimizer = fm.optim.Adam(model.parameters())
    loss_fn = fm.nn.CrossEntropyLoss()
    rng = np.random.default_rng(0)
    data = TensorDataset(
        fm.tensor(rng.standard_normal((rows, 784)).astype(np.float32)), fm.tensor(rng.integers(0, 10, rows))
    )

    def batch(n: int):  # made in the step, as a DataLoader makes it
        return data.get_batch(np.arange(n))

    def step(n: int) -> None:
        optimizer.zero_grad()  # the gradients go: the step allocates them again
        inputs, targets = batch(n)
        loss_fn(model(inputs), targets).backward()
        optimizer.step()

    step(body.batch_size)  # the optimizer's state exists from here on
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        step(body.batch_size)
        train_peak = tracemalloc.get_traced_memory()[1] - start
        model.eval()
        tracemalloc.reset_peak()
        start = tracemalloc.get_traced_memory()[0]
        with fm.no_grad():
            model(batch(limits.EVAL_BATCH)[0])
        eval_peak = tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()
    return train_peak, eval_peak


@pytest.mark.parametrize(("spec", "batch"), [(TINY_MLP, 512), (PRESETS["mnist_mlp"]["model"], 128), (CONV, 64)])
def test_the_activation_estimate_bounds_a_measured_step_within_a_small_factor(spec, batch):
    body = _body(model=spec, dataset="mnist", batch_size=batch)
    estimate = _estimate(body)
    train_peak, eval_peak = _measure(body, max(batch, limits.EVAL_BATCH))
    train = estimate.details["train_activation_bytes"] + 4 * estimate.parameters  # and the gradients it makes
    evaluation = estimate.details["eval_activation_bytes"]
    assert train_peak <= train <= 4 * train_peak, (train, train_peak)
    assert eval_peak <= evaluation <= 4 * eval_peak, (evaluation, eval_peak)
    assert estimate.activation_bytes == max(train - 4 * estimate.parameters, evaluation)


def test_the_memory_estimate_bounds_a_whole_run():
    """Weights, gradients, Adam's state, the trainer's copies, checkpoints, activations and data: a run's peak."""
    from forgeml.data import DataLoader, TensorDataset
    from forgeml.training import Callback, Trainer

    spec = {"layers": [{"type": "Linear", "args": {"in_features": 784, "out_features": 1024}}, {"type": "ReLU"}]}
    spec["layers"].append({"type": "Linear", "args": {"in_features": 1024, "out_features": 10}})
    body = _body(model=spec, dataset="mnist", batch_size=64, epochs=2)
    rows, test_rows = 256, 64
    estimate = limits.estimate_job(body, [784], rows, test_rows=test_rows)
    checkpoint = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"forgeml-limits-{os.getpid()}.safetensors")

    class Save(Callback):
        def on_epoch_end(self, trainer, metrics) -> None:
            trainer.save_checkpoint(checkpoint)

    tracemalloc.start()
    try:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((rows + test_rows, 784)).astype(np.float32)
        y = rng.integers(0, 10, rows + test_rows)
        train = TensorDataset(fm.tensor(x[:rows]), fm.tensor(y[:rows]))
        test = TensorDataset(fm.tensor(x[rows:]), fm.tensor(y[rows:]))
        model = build(body.model)
        trainer = Trainer(model, fm.optim.Adam(model.parameters()), callbacks=[Save()])
        trainer.fit(DataLoader(train, batch_size=64, shuffle=True), DataLoader(test, batch_size=256), epochs=2)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        if os.path.exists(checkpoint):
            os.unlink(checkpoint)
    assert estimate.state_copies == 12  # Adam: see the module's docstring
    assert peak <= estimate.memory_bytes <= 2 * peak, (estimate.memory_bytes, peak)


def test_the_presets_and_a_typical_job_pass_comfortably():
    small_machine = ServerSettings(worker_memory_limit_bytes="2GiB")  # a job may need 1.33 GiB by its estimate
    assert small_machine.max_job_memory_bytes == (2 << 30) * 2 // 3
    for name in PRESETS:
        estimate = _estimate(_body(preset=name))
        assert limits.check_job(estimate, ServerSettings()) == [], name
        assert limits.check_job(estimate, small_machine) == [], name
        assert estimate.job_memory_bytes < (1 << 30) / 2, (name, limits.format_bytes(estimate.memory_bytes))
    typical = _estimate(_body(model=TINY_MLP, dataset="mnist", epochs=50, batch_size=256, processes=2))
    assert limits.check_job(typical, small_machine) == []


def test_limits_are_settings_read_from_the_environment():
    settings = ServerSettings.from_env(
        {
            "FORGEML_MAX_JOB_PARAMETERS": "1e6",
            "FORGEML_MAX_JOB_MEMORY_BYTES": "3GiB",
            "FORGEML_MAX_JOB_SAMPLES": "none",
            "FORGEML_WORKER_MEMORY_LIMIT_BYTES": "4GB",
        }
    )
    assert settings.max_job_parameters == 1_000_000 and settings.max_job_memory_bytes == 3 << 30
    assert settings.max_job_samples is None and settings.worker_memory_limit_bytes == 4_000_000_000
    derived = ServerSettings.from_env({"FORGEML_WORKER_MEMORY_LIMIT_BYTES": "6442450944"})
    assert derived.max_job_memory_bytes == 4 << 30  # two thirds of the worker's limit, when not given
    unlimited = ServerSettings.from_env({"FORGEML_WORKER_MEMORY_LIMIT_BYTES": "0", "FORGEML_MAX_JOB_PARAMETERS": "0"})
    assert unlimited.worker_memory_limit_bytes is None and unlimited.max_job_parameters is None
    assert unlimited.max_job_memory_bytes == limits.machine_memory_bytes() // 2
    defaults = ServerSettings()
    assert defaults.worker_memory_limit_bytes == limits.default_worker_memory_limit()
    assert 0.7 < defaults.worker_memory_limit_bytes / limits.machine_memory_bytes() <= 0.75
    assert defaults.max_job_parameters == 100_000_000 and defaults.max_job_samples == 100_000_000
    for bad in ({"FORGEML_WORKER_MEMORY_LIMIT_BYTES": "lots"}, {"FORGEML_MAX_JOB_SAMPLES": "-5"}):
        with pytest.raises(ValueError, match="no limit"):
            ServerSettings.from_env(bad)
    assert [limits.parse_size(v) for v in ("512MiB", "1k", "2 GB", "1.5GiB", 0, "off")] == [
        512 << 20,
        1024,
        2_000_000_000,
        3 << 29,
        None,
        None,
    ]


# -- the run-time limit ---------------------------------------------------------------------------------------
def _in_subprocess(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120, check=False
    )


@linux_only
def test_the_memory_limit_turns_a_large_allocation_into_memory_error_and_the_process_goes_on():
    """RLIMIT_DATA, not RLIMIT_AS: threads and BLAS still run under a limit a little above what is in use,
    and an array past it is a MemoryError (not the kernel's OOM killer); a multi-process job's ranks share it."""
    done = _in_subprocess(
        """
        import threading, numpy as np
        from forgeml.server import limits
        from forgeml.server.worker import _rank_environment
        used = [int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmData")][0]
        assert limits.apply_memory_limit(used + (256 << 20)) and limits.memory_limit() == used + (256 << 20)
        try:
            np.ones(1 << 28, dtype=np.float32)  # 1 GiB
        except MemoryError as exc:
            print(limits.out_of_memory_message(exc))
        worker = threading.Thread(target=lambda: print(float((np.ones((300, 300)) @ np.ones((300, 300)))[0, 0])))
        worker.start(); worker.join()
        print(_rank_environment("sqlite://", 4, 1)[limits.RANK_LIMIT_VARIABLE] == str((used + (256 << 20)) // 4))
        """
    )
    assert done.returncode == 0, done.stderr
    message, product, rank_share = done.stdout.strip().splitlines()
    assert message.startswith("out of memory: the job needed more than the worker's limit of ")
    assert "(FORGEML_WORKER_MEMORY_LIMIT_BYTES raises it" in message and "Unable to allocate 1.00 GiB" in message
    assert product == "300.0" and rank_share == "True"


def _worker_baseline() -> int:
    """The data memory of a process that imported what a worker imports and ran a BLAS product (its threads'
    buffers): what the worker process uses before a job (it varies with the machine's cores)."""
    done = _in_subprocess(
        """
        import numpy as np
        import forgeml.server.jobs, forgeml.server.worker, forgeml.nn, forgeml.training, forgeml.data
        np.ones((512, 512), np.float32) @ np.ones((512, 512), np.float32)
        print([int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmData")][0])
        """
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


@linux_only
def test_a_job_past_the_workers_memory_limit_fails_clearly_and_the_next_job_runs(make_client):
    limit = _worker_baseline() + (384 << 20)
    # the static check is off (max_job_memory_bytes=0): this job gets past it, and meets the worker's limit
    api = make_client(worker_memory_limit_bytes=limit, max_job_memory_bytes=0)
    rows = "\n".join(f"{i % 7},{i % 5},{i % 3},{'a' if i % 2 else 'b'}" for i in range(128))
    dataset = api.post(
        "/v1/datasets",
        files={"file": ("small.csv", f"x,y,z,label\n{rows}\n".encode(), "text/csv")},
        data={"target": "label"},
    ).json()
    wide = {  # few parameters (7 M), but each of its layers' outputs is 102 rows x 1 M values: 408 MB
        "layers": [
            {"type": "Linear", "args": {"in_features": 3, "out_features": 1_000_000}},
            {"type": "ReLU"},
            {"type": "Linear", "args": {"in_features": 1_000_000, "out_features": 2}},
        ]
    }
    job = {"dataset": dataset["id"], "epochs": 1, "batch_size": 128, "optimizer": {"name": "sgd"}}
    created = api.post("/v1/jobs", json={**job, "model": wide})
    assert created.status_code == 201, created.text
    failed = wait_for_job(api, created.json()["id"], timeout=120)
    assert failed["state"] == "failed", failed
    assert failed["error"].startswith(
        f"out of memory: the job needed more than the worker's limit of {limits.format_bytes(limit)} "
        "(FORGEML_WORKER_MEMORY_LIMIT_BYTES raises it; a smaller model or batch_size needs less)"
    ), failed["error"]
    small = {"layers": [{"type": "Linear", "args": {"in_features": 3, "out_features": 8}}, {"type": "ReLU"}]}
    small["layers"].append({"type": "Linear", "args": {"in_features": 8, "out_features": 2}})
    started = time.monotonic()
    after = wait_for_job(api, api.post("/v1/jobs", json={**job, "model": small}).json()["id"], timeout=120)
    assert after["state"] == "completed", after
    assert api.app.state.jobs.restarts == 0 and time.monotonic() - started < 60  # the same worker ran it
    assert api.get("/readyz").json()["status"] == "ready"
