"""``/v1/models``: trained models, their lineage, predictions and weights."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse

from ..body import json_body, read_json
from ..db import JobRow, ModelRow, select
from ..export import OPSET, ExportUnavailable, UnsupportedModel, export_onnx
from ..predictor import InputError, preprocessing
from ..schemas import ErrorOut, ModelOut, PredictRequest, PredictResponse, error_responses

router = APIRouter(prefix="/v1/models", tags=["models"])


def model_out(row: ModelRow, job: JobRow | None = None) -> ModelOut:
    lineage = None
    if job is not None:
        lineage = {
            "job_id": job.id,
            "job_name": job.name,
            "dataset": job.request.get("dataset"),
            "preset": job.request.get("preset"),
            "optimizer": job.request.get("optimizer"),
            "epochs": job.epochs,
            "ai": job.request.get("ai"),
            "started": job.started,
            "finished": job.finished,
        }
    return ModelOut(
        id=row.id,
        name=row.name,
        job_id=row.job_id,
        kind=row.kind,
        spec=row.spec,
        metrics=row.metrics,
        classes=row.extras.get("classes"),
        preprocessing=preprocessing(row.kind, row.extras),
        created=row.created,
        lineage=lineage,
    )


NO_MODEL = {404: "No model has this id."}
# OpenAPI links from the list to its first model's operations, for clients and stateful testing
FIRST_MODEL_LINKS = {
    name: {
        "operationRef": f"#/paths/~1v1~1models~1{{model_id}}{suffix}",
        "parameters": {"model_id": "$response.body#/0/id"},
    }
    for name, suffix in (
        ("GetModel", "/get"),
        ("Predict", "~1predict/post"),
        ("Weights", "~1weights/get"),
        ("Onnx", "~1onnx/get"),
    )
}


def _bad_inputs(message: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ["body", "inputs"], "msg": message, "type": "value_error"}])


def _get(db, model_id: str) -> ModelRow:
    row = db.get(ModelRow, model_id)
    if row is None:
        raise HTTPException(404, f"no model {model_id!r}")
    return row


@router.get("", response_model=list[ModelOut], responses={200: {"links": FIRST_MODEL_LINKS}})
async def list_models(request: Request) -> list[ModelOut]:
    """Trained models, newest first."""
    rows = await run_in_threadpool(request.app.state.db.all, select(ModelRow).order_by(ModelRow.created.desc()))
    return [model_out(r) for r in rows]


@router.get("/{model_id}", response_model=ModelOut, responses=error_responses(NO_MODEL))
async def get_model(request: Request, model_id: str) -> ModelOut:
    """A model's spec, test metrics and lineage to the job that trained it."""
    db = request.app.state.db

    def load():
        row = _get(db, model_id)
        return model_out(row, db.get(JobRow, row.job_id))

    return await run_in_threadpool(load)


@router.post(
    "/{model_id}/predict",
    response_model=PredictResponse,
    responses=error_responses(
        {
            **NO_MODEL,
            410: "The model's weights are missing from the data directory.",
            503: "Predictions are unavailable: the server's device is not usable.",
        }
    ),
    openapi_extra=json_body(PredictRequest),
)
async def predict(request: Request, model_id: str) -> PredictResponse:
    """Class probabilities for a batch: rows of numbers (digit pixels in [0, 1], 784 a row; tabular features)
    or, for a text model, raw strings."""
    body = await read_json(request, PredictRequest)  # the hot route: validated from the bytes in one pass
    settings, db, cache = request.app.state.settings, request.app.state.db, request.app.state.predictors
    if getattr(request.app.state, "device_error", None):
        raise HTTPException(503, f"predictions are unavailable: {request.app.state.device_error}")
    if len(body.inputs) > settings.max_predict_batch:
        raise _bad_inputs(f"at most {settings.max_predict_batch} per request, got {len(body.inputs)}")

    def run():
        predictor = cache.cached(model_id) or cache.get(_get(db, model_id))
        return predictor.predict(body.inputs)

    try:
        # a few rows through a small loaded model cost less than the hop to a worker thread
        result = cache.predict_inline(model_id, body.inputs)
        if result is None:  # loading a model, big batches, text, or the model busy: the thread pool waits
            result = await run_in_threadpool(run)
        classes, predictions, probabilities = result
    except InputError as exc:
        raise _bad_inputs(str(exc)) from None
    except FileNotFoundError:  # as /weights answers it (and never naming a server path)
        raise HTTPException(410, f"the weights of model {model_id} are missing from the data directory") from None
    return PredictResponse(model_id=model_id, classes=classes, predictions=predictions, probabilities=probabilities)


WEIGHTS_RESPONSES = {
    200: {
        "description": "The weights, as a safetensors file named `<model id>.safetensors`.",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    },
    **error_responses({**NO_MODEL, 410: "The model's weights are missing from the data directory."}),
}


@router.get("/{model_id}/weights", response_class=FileResponse, responses=WEIGHTS_RESPONSES)
async def weights(request: Request, model_id: str) -> FileResponse:
    """The model's weights as a safetensors file."""
    settings = request.app.state.settings
    row = await run_in_threadpool(_get, request.app.state.db, model_id)
    path = settings.data_dir / row.weights
    if not path.exists():
        raise HTTPException(410, f"the weights of model {model_id} are missing from the data directory")
    return FileResponse(path, media_type="application/octet-stream", filename=f"{model_id}.safetensors")


ONNX_RESPONSES = {
    200: {
        "description": f"The ONNX file (opset {OPSET}), as an attachment named `<model id>.onnx`.",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    },
    404: {"model": ErrorOut, "description": "No model has this id."},
    409: {
        "model": ErrorOut,
        "description": "The model has an op or a layer that ONNX export cannot write; the detail names it. The "
        "request is fine, the stored model is what conflicts with the format: retrying will not help, "
        "`/predict` and `/weights` still serve it.",
    },
    410: {"model": ErrorOut, "description": "The model's weights are missing from the data directory."},
    503: {"model": ErrorOut, "description": 'This server lacks ONNX export (pip install "forgeml[onnx]").'},
}


@router.get("/{model_id}/onnx", response_class=FileResponse, responses=ONNX_RESPONSES)
async def onnx(request: Request, model_id: str) -> FileResponse:
    """The model as an ONNX file, to run it anywhere ONNX Runtime runs (the dashboard runs it in the browser).

    The file holds the network from inputs to logits, with a dynamic batch axis: image and tabular models take
    ``input`` (float32 `[batch, features]`), text models ``ids`` (int64 `[batch, sequence]`) and ``padding_mask``
    (bool `[batch, sequence]`, True at padding), with a dynamic sequence axis too; the output is ``logits``
    (float32 `[batch, classes]`). Inputs get the preprocessing that `/predict` applies (the model's
    ``preprocessing``: `(x - mean) / std` for rows of numbers), and a softmax of the logits gives `/predict`'s
    probabilities. Exported on first request, then served from a copy kept beside the weights."""
    settings, db = request.app.state.settings, request.app.state.db

    def export():
        return export_onnx(_get(db, model_id), settings.data_dir)

    try:
        path = await run_in_threadpool(export)
    except FileNotFoundError as exc:
        raise HTTPException(410, str(exc)) from None
    except UnsupportedModel as exc:
        raise HTTPException(409, str(exc)) from None
    except ExportUnavailable as exc:
        raise HTTPException(503, str(exc)) from None
    return FileResponse(
        path,
        media_type="application/octet-stream",
        filename=f"{model_id}.onnx",
        headers={"Cache-Control": "private, max-age=3600"},
    )
