"""``/v1/datasets``: CSV uploads, validated and summarised, for training jobs."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError

from ..db import DatasetRow, new_id, select
from ..schemas import DatasetOut, error_responses
from ..storage import disk_full_message, is_disk_full

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

MAX_CLASSES = 1000
UPLOAD_NOT_KEPT = "nothing of the upload was kept: free space, then upload it again"


def summarise(path: Path, target: str, shown_name: str) -> dict:
    """Read the CSV as a classification dataset; ValueError (naming the problem) when it is not one."""
    from forgeml.data.datasets import CSVDataset

    try:
        ds = CSVDataset(path, target=target)
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise ValueError(str(exc).replace(str(path), shown_name)) from None
    if len(ds) < 2:
        raise ValueError(f"{shown_name}: needs at least 2 rows, has {len(ds)}")
    y = np.asarray(ds.targets)
    if ds.classes is not None:
        classes = [str(c) for c in ds.classes]
    elif np.issubdtype(y.dtype, np.integer) and y.min() >= 0:
        classes = [str(c) for c in range(int(y.max()) + 1)]
    else:
        raise ValueError(
            f"{shown_name}: the target column {ds.target_name!r} must hold class labels (text, or integers from 0), "
            "not continuous values"
        )
    if len(classes) > MAX_CLASSES:
        raise ValueError(f"{shown_name}: {len(classes)} classes is more than the {MAX_CLASSES} supported")
    x = np.asarray(ds.data, dtype=np.float64)
    bad = ~np.isfinite(x)
    if bad.any():
        row, column = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{shown_name}: column {ds.feature_names[column]!r} has a missing or non-finite value in data row "
            f"{row + 1} ({int(bad.sum())} such values in all); fill or drop them before uploading"
        )
    counts = np.bincount(y.astype(np.int64), minlength=len(classes))
    return {
        "rows": len(ds),
        "features": x.shape[1],
        "feature_names": ds.feature_names,
        "target": ds.target_name,
        "num_classes": len(classes),
        "classes": classes,
        "class_counts": {c: int(n) for c, n in zip(classes, counts, strict=True)},
        "feature_stats": [
            {
                "name": name,
                "mean": float(x[:, j].mean()),
                "std": float(x[:, j].std()),
                "min": float(x[:, j].min()),
                "max": float(x[:, j].max()),
            }
            for j, name in enumerate(ds.feature_names[:50])
        ],
    }


def dataset_out(row: DatasetRow) -> DatasetOut:
    return DatasetOut(id=row.id, name=row.name, target=row.target, summary=row.summary, created=row.created)


@router.post(
    "",
    status_code=201,
    response_model=DatasetOut,
    responses={
        201: {
            "links": {
                "GetDataset": {
                    "operationRef": "#/paths/~1v1~1datasets~1{dataset_id}/get",
                    "parameters": {"dataset_id": "$response.body#/id"},
                }
            }
        },
        **error_responses(
            {
                413: "The file is over the upload limit (FORGEML_MAX_UPLOAD_BYTES).",
                415: "The file is not named .csv or .txt.",
                507: "Insufficient Storage: the data directory's disk is full ('no space left on device while "
                "storing ...'); nothing of the upload was kept. Free space, then upload it again.",
            }
        ),
        422: {
            # FastAPI's own list of errors (the component every other route's 422 refers to)
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}},
            "description": "A form field is missing or wrong, or the file is not a classification CSV (an error "
            "at ['body', 'file'] that says what is wrong with it).",
        },
    },
)
async def upload_dataset(
    request: Request,
    file: UploadFile = File(..., description="a CSV file with a header row"),
    target: str = Form(..., min_length=1, max_length=200, description="the column to predict"),
    name: str | None = Form(None, max_length=200),
) -> DatasetOut:
    """Upload a CSV for classification; answers with its summary (rows, features, classes, statistics)."""
    settings, db = request.app.state.settings, request.app.state.db
    shown = Path(file.filename or "upload.csv").name
    if not shown.lower().endswith((".csv", ".txt")):
        raise HTTPException(415, f"{shown}: upload a .csv file")
    folder = settings.data_dir / "datasets"
    dataset_id = new_id("ds")
    tmp = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".upload-", suffix=".csv")
        size = 0
        with os.fdopen(fd, "wb") as out:
            while chunk := await file.read(1 << 20):
                size += len(chunk)
                if size > settings.max_upload_bytes:
                    raise HTTPException(413, f"{shown} exceeds the upload limit of {settings.max_upload_bytes} bytes")
                out.write(chunk)
        try:
            summary = await run_in_threadpool(summarise, Path(tmp), target, shown)
        except ValueError as exc:  # the same list of errors as every 422, pointing at the file
            raise RequestValidationError([{"loc": ["body", "file"], "msg": str(exc), "type": "value_error"}]) from None
        final = folder / f"{dataset_id}.csv"
        os.replace(tmp, final)
    except OSError as exc:  # the data directory's disk is full: 507, and nothing of the upload is kept
        if not is_disk_full(exc):
            raise
        raise HTTPException(507, disk_full_message(f"storing {shown}", UPLOAD_NOT_KEPT)) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    row = DatasetRow(
        id=dataset_id,
        name=(name or shown)[:200],
        path=str(final.relative_to(settings.data_dir)),
        target=target,
        summary=summary,
    )

    def insert():
        with db.session() as s:
            s.add(row)

    try:
        await run_in_threadpool(insert)
    except Exception as exc:  # no file without its row
        final.unlink(missing_ok=True)
        if not is_disk_full(exc):  # SQLite on the same full disk
            raise
        raise HTTPException(507, disk_full_message(f"storing {shown}", UPLOAD_NOT_KEPT)) from None
    return dataset_out(row)


@router.get(
    "",
    response_model=list[DatasetOut],
    responses={
        200: {
            "links": {
                "GetDataset": {
                    "operationRef": "#/paths/~1v1~1datasets~1{dataset_id}/get",
                    "parameters": {"dataset_id": "$response.body#/0/id"},
                }
            }
        }
    },
)
async def list_datasets(request: Request) -> list[DatasetOut]:
    """Uploaded datasets, newest first (the built-in 'mnist' and 'spam' are always available)."""
    rows = await run_in_threadpool(request.app.state.db.all, select(DatasetRow).order_by(DatasetRow.created.desc()))
    return [dataset_out(r) for r in rows]


@router.get("/{dataset_id}", response_model=DatasetOut, responses=error_responses({404: "No dataset has this id."}))
async def get_dataset(request: Request, dataset_id: str) -> DatasetOut:
    row = await run_in_threadpool(request.app.state.db.get, DatasetRow, dataset_id)
    if row is None:
        raise HTTPException(404, f"no dataset {dataset_id!r}")
    return dataset_out(row)
