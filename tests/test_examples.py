"""The runnable examples work end to end."""

import importlib.util
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_regression_learns(capsys):
    final = _load("demo_regression").main(epochs=300)
    assert final < 0.05  # the variance of the target is about 0.52
    printed = capsys.readouterr().out
    first = float(printed.splitlines()[0].split()[-1])
    assert first > 10 * final
