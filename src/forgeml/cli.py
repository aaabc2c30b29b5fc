"""The ``forgeml`` command.

forgeml serve [--host H] [--port P] [--data-dir DIR] [--device auto|cpu|cuda|cuda:N] [--max-processes N]
                                        the platform: REST API and dashboard
forgeml ai status                       each AI provider's configuration and health (never a key)
forgeml ai research "<question>"        research insights with citations
forgeml ai analyze metrics.json [--context CONTEXT]
                                        diagnose a training run from its per-epoch metrics (and context)
forgeml launch -n N [--timeout S] [--threads T] [-m] script.py [args ...]
                                        run a script on N processes of this machine (mpiexec underneath)
forgeml export MODEL_ID [--format onnx] [--output PATH] [--data-dir DIR]
                                        a stored model as an ONNX file (what GET /v1/models/ID/onnx serves)
forgeml tune --preset NAME --epochs-per-trial E --budget B [--seed S] [--json PATH]
                                        hyper-parameter search (Optuna) over a preset's model and data
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

__all__ = ["main"]


def _orchestrator():
    from .ai import AIServiceOrchestrator

    return AIServiceOrchestrator()


def _print(obj) -> None:
    if hasattr(obj, "model_dump_json"):
        print(obj.model_dump_json(indent=2))
    else:
        print(json.dumps(obj, indent=2, default=str))


async def _with(fn):
    orchestrator = _orchestrator()
    try:
        return await fn(orchestrator)
    finally:
        await orchestrator.aclose()


def _ai_status(args) -> int:
    orchestrator = _orchestrator()
    try:
        _print(orchestrator.status())
    finally:
        asyncio.run(orchestrator.aclose())
    return 0


def _ai_research(args) -> int:
    response = asyncio.run(
        _with(
            lambda o: o.get_latest_research_insights(
                args.domain, args.recency, question=args.question, diagnosis=args.diagnosis
            )
        )
    )
    _print(response)
    return 0


_UNREADABLE = object()


def _read_json(source: str | Path, subject: str):
    """JSON from a file (a Path) or a literal string; on failure, says why on stderr and returns _UNREADABLE."""
    try:
        return json.loads(source.read_text() if isinstance(source, Path) else source)
    except FileNotFoundError:
        print(f"forgeml: no such file: {source}", file=sys.stderr)
    except json.JSONDecodeError as exc:
        print(f"forgeml: {subject} not valid JSON ({exc})", file=sys.stderr)
    return _UNREADABLE


def _ai_analyze(args) -> int:
    metrics = _read_json(Path(args.metrics), f"{args.metrics} is")
    if metrics is _UNREADABLE:
        return 2
    if isinstance(metrics, list):  # a list of per-epoch records
        from .specs import TrainingMetrics

        metrics = TrainingMetrics.from_history(metrics)
    context = None
    if args.context is not None:
        text = args.context.strip()
        context = _read_json(text if text.startswith("{") else Path(text), "the context is")
        if context is _UNREADABLE:
            return 2
        from .specs import TrainingContext

        try:
            context = TrainingContext.model_validate(context)
        except ValueError as exc:  # pydantic's ValidationError names the fields
            print(f"forgeml: the context is not a training context: {exc}", file=sys.stderr)
            return 2
    response = asyncio.run(_with(lambda o: o.analyze_model_reasoning(args.description, metrics, context=context)))
    _print(response)
    return 0


def _serve(args) -> int:
    from .server.app import serve
    from .server.settings import ServerSettings

    try:
        settings = ServerSettings.from_env(
            host=args.host,
            port=args.port,
            data_dir=args.data_dir,
            workers=args.workers,
            device=args.device,
            max_processes=args.max_processes,
        )
    except ValueError as exc:
        print(f"forgeml: invalid server settings: {exc}", file=sys.stderr)
        return 2
    serve(settings)
    return 0


def _export(args) -> int:
    """The server's own export (``forgeml.server.export``), from its database and data directory."""
    import shutil

    from .server.settings import ServerSettings

    try:
        settings = ServerSettings.from_env(data_dir=args.data_dir)
    except ValueError as exc:
        print(f"forgeml export: invalid settings: {exc}", file=sys.stderr)
        return 2
    if settings.database_url is None and not (settings.data_dir / "forgeml.sqlite").exists():
        print(
            f"forgeml export: no ForgeML database in {settings.data_dir.resolve()}: pass the server's --data-dir "
            "(or set FORGEML_DATA_DIR, or FORGEML_DATABASE_URL)",
            file=sys.stderr,
        )
        return 2
    from .server.db import Database, ModelRow
    from .server.export import ExportError, export_onnx

    db = Database(settings.db_url)
    try:
        row = db.get(ModelRow, args.model_id)
        if row is None:
            print(f"forgeml export: no model {args.model_id!r} in {settings.data_dir.resolve()}", file=sys.stderr)
            return 1
        try:
            path = export_onnx(row, settings.data_dir)
        except (ExportError, FileNotFoundError) as exc:
            print(f"forgeml export: {exc}", file=sys.stderr)
            return 1
    finally:
        db.dispose()
    output = Path(args.output) if args.output else Path(f"{args.model_id}.onnx")
    if output.is_dir():
        output = output / f"{args.model_id}.onnx"
    output.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, output)
    print(f"{output} ({output.stat().st_size:,} bytes, {args.format})")
    return 0


def _launch(args) -> int:
    from .distributed.launch import launch

    try:
        return launch(
            args.script, args.args, args.nprocs, timeout=args.timeout, threads=args.threads, module=args.module
        )
    except (FileNotFoundError, ValueError) as exc:
        print(f"forgeml launch: {exc}", file=sys.stderr)
        return 2


def _preset_data(preset: dict):
    """A preset's training and validation data, as a server job builds them, and a ``build_model`` for
    :func:`forgeml.training.tuning.tune` (its dropout layers take the trial's ``dropout``)."""
    from .server import worker
    from .training.tuning import spec_builder

    edit = None
    if preset["dataset"] == "mnist":
        train, val, _ = worker._mnist()
    elif preset["dataset"] == "spam":
        train, val, extras = worker._spam(128)

        def edit(spec):  # the vocabulary decides the embedding table's size, as in a server job
            for layer in spec.layers:
                if layer.type in ("Embedding", "EmbeddingLayer"):
                    layer.args["num_embeddings"] = len(extras["vocab"])
                    break
    else:
        raise ValueError(f"the preset's dataset {preset['dataset']!r} is not one tune can build")
    return train, val, spec_builder(preset["model"], edit)


def _tune(args) -> int:
    """``forgeml tune``: the search, a leaderboard, the best parameters, and optionally a JSON file."""
    from .server.schemas import PRESETS

    if args.preset not in PRESETS:
        print(f"forgeml tune: unknown preset {args.preset!r}; choose one of: {', '.join(PRESETS)}", file=sys.stderr)
        return 2
    if args.epochs_per_trial < 1:
        print(f"forgeml tune: --epochs-per-trial must be >= 1, got {args.epochs_per_trial}", file=sys.stderr)
        return 2
    if args.budget < args.epochs_per_trial:
        print(
            f"forgeml tune: --budget ({args.budget}) must be at least --epochs-per-trial ({args.epochs_per_trial}): "
            "the budget counts the epochs of all trials together",
            file=sys.stderr,
        )
        return 2
    try:
        from .training.tuning import import_optuna, tune

        import_optuna()
    except ImportError as exc:
        print(f"forgeml tune: {exc}", file=sys.stderr)
        return 2
    train, val, build_model = _preset_data(PRESETS[args.preset])
    log = (lambda line: print(line, file=sys.stderr)) if args.verbose else None
    result = tune(
        build_model,
        train,
        val,
        epochs_per_trial=args.epochs_per_trial,
        epoch_budget=args.budget,
        seed=args.seed,
        device=args.device,
        pruner=args.pruner,
        log=log,
    )
    print(f"{args.preset}: {len(result.trials)} trials, {result.epochs_used} epochs in {result.seconds:.1f}s")
    print(f"{'rank':>4}  {'trial':>5}  {'state':<8}  {result.metric:>12}  {'epochs':>6}  {'seconds':>7}  params")
    for rank, trial in enumerate(result.leaderboard(), 1):
        params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial["params"].items())
        state = "diverged" if trial.get("diverged") else trial["state"]
        print(
            f"{rank:>4}  {trial['number']:>5}  {state:<8}  {trial['value']:>12.4f}  {trial['epochs']:>6}  "
            f"{trial['seconds']:>7.1f}  {params}"
        )
    print(f"best: trial {result.best_trial}, {result.metric} {result.best_value:.4f}")
    print(json.dumps(result.best_params, indent=2))
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"preset": args.preset, **result.to_dict()}, indent=2))
        print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="forgeml", description="ForgeML: train models with AI services as teachers.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve", help="run the platform: REST API and dashboard (default http://127.0.0.1:5000)"
    )
    serve.add_argument("--host", default=None, help="address to bind (default 127.0.0.1, or FORGEML_HOST)")
    serve.add_argument("--port", type=int, default=None, help="port (default 5000, or FORGEML_PORT)")
    serve.add_argument(
        "--data-dir", default=None, help="database and artifacts (default ./forgeml-data, or FORGEML_DATA_DIR)"
    )
    serve.add_argument(
        "--workers", type=int, default=None, help="training jobs at once (default 2, or FORGEML_WORKERS)"
    )
    serve.add_argument(
        "--device",
        default=None,
        help="where training jobs and predictions run: auto (a GPU when one is there, else the CPU), cpu, cuda or "
        "cuda:N (default auto, or FORGEML_DEVICE); a device this machine lacks stops the server at start",
    )
    serve.add_argument(
        "--max-processes",
        type=int,
        default=None,
        help='the most MPI processes one job may train on (its "processes"; default the cores, at most 4, or '
        "FORGEML_MAX_PROCESSES)",
    )
    serve.set_defaults(run=_serve)
    ai = commands.add_parser("ai", help="the AI services").add_subparsers(dest="ai_command", required=True)
    ai.add_parser("status", help="each provider's configuration and health").set_defaults(run=_ai_status)
    research = ai.add_parser("research", help="research insights with citations")
    research.add_argument("question", nargs="?", default=None)
    research.add_argument("--domain", default="general", help="computer_vision, nlp, tabular, general ...")
    research.add_argument("--recency", default="month", help="day, week, month or year")
    research.add_argument("--diagnosis", default=None, help="e.g. overfitting, plateau")
    research.set_defaults(run=_ai_research)
    analyze = ai.add_parser("analyze", help="diagnose a run from a metrics JSON file")
    analyze.add_argument("metrics", help="JSON: per-epoch lists (train_loss, val_loss, ...) or a list of epoch records")
    analyze.add_argument("--description", default="a neural network", help="the model, in words")
    analyze.add_argument(
        "--context",
        default=None,
        help="the run's training context (optimizer, weight decay, input and layer statistics, changes tried): "
        "a JSON object, inline or in a file",
    )
    analyze.set_defaults(run=_ai_analyze)
    launch = commands.add_parser(
        "launch",
        help="run a script on N processes of this machine, for forgeml.distributed (mpiexec underneath)",
        description="Run `mpiexec -n N python script.py args` and return its exit code. The ranks get "
        "OMP_NUM_THREADS and OPENBLAS_NUM_THREADS = cores // N unless they are set. On several machines, "
        "call mpiexec or srun yourself.",
    )
    launch.add_argument("-n", "--nprocs", type=int, required=True, metavar="N", help="the number of processes")
    launch.add_argument(
        "--timeout", type=float, default=None, metavar="SECONDS", help="stop the whole job after this long (exit 124)"
    )
    launch.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="T",
        help="CPU threads per process (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS; default cores // N, unless set)",
    )
    launch.add_argument("-m", "--module", action="store_true", help="run script as a module, as python -m")
    launch.add_argument("script", help="the Python script (or, with -m, the module) to run")
    launch.add_argument("args", nargs=argparse.REMAINDER, help="the script's arguments")
    launch.set_defaults(run=_launch)
    export = commands.add_parser(
        "export",
        help="write a stored model as an ONNX file (what GET /v1/models/ID/onnx serves)",
        description="Export a model that the platform trained, from the server's database and data directory, "
        "as GET /v1/models/ID/onnx does (the same file: it is cached beside the weights). The network goes from "
        "inputs to logits with a dynamic batch axis; its inputs get /predict's preprocessing, recorded in the "
        "file's metadata.",
    )
    export.add_argument("model_id", metavar="MODEL_ID", help="the model's id (mdl_...)")
    export.add_argument("--format", choices=["onnx"], default="onnx", help="the file format (default onnx)")
    export.add_argument("--output", "-o", default=None, help="the file (or folder) to write; default ./MODEL_ID.onnx")
    export.add_argument(
        "--data-dir", default=None, help="the server's data directory (default ./forgeml-data, or FORGEML_DATA_DIR)"
    )
    export.set_defaults(run=_export)
    tune = commands.add_parser(
        "tune",
        help="search a preset's hyper-parameters (learning rate, weight decay, optimizer, dropout, batch size)",
        description="Hyper-parameter search with Optuna (TPE, seeded; median pruning) over one of the platform's "
        "presets: its model and data, as a training job builds them (AI options are not used). The budget counts "
        'the epochs of all trials together. Needs the tune extra: pip install "forgeml[tune]".',
    )
    tune.add_argument("--preset", required=True, help="mnist_mlp, mnist_ai_enhanced or spam_transformer")
    tune.add_argument("--epochs-per-trial", type=int, required=True, metavar="E", help="epochs each trial trains")
    tune.add_argument("--budget", type=int, required=True, metavar="B", help="epochs across all trials")
    tune.add_argument("--seed", type=int, default=0, help="seeds the sampler and each trial (default 0)")
    tune.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: the CPU)")
    tune.add_argument("--pruner", choices=["median", "none"], default="median", help="(default median)")
    tune.add_argument("--json", default=None, metavar="PATH", help="write the result (without weights) as JSON")
    tune.add_argument("--verbose", "-v", action="store_true", help="log each epoch and trial to stderr")
    tune.set_defaults(run=_tune)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
