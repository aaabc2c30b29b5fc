"""``forgeml tune``: hyper-parameter search over a preset, from the command line."""

import json
import sys

import pytest

from forgeml.cli import main


def test_tune_a_preset_prints_a_leaderboard_and_writes_json(tmp_path, capsys):
    out = tmp_path / "result.json"
    argv = ["tune", "--preset", "mnist_mlp", "--epochs-per-trial", "1", "--budget", "2", "--seed", "1"]
    assert main([*argv, "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "mnist_mlp: 2 trials, 2 epochs" in printed
    assert "val_accuracy" in printed and "best: trial" in printed
    result = json.loads(out.read_text())
    assert result["preset"] == "mnist_mlp" and result["epochs_used"] == 2
    assert len(result["trials"]) == 2 and all(t["epochs"] == 1 for t in result["trials"])
    assert set(result["best_params"]) == {"lr", "weight_decay", "optimizer", "dropout", "batch_size"}
    assert result["best_value"] == max(t["value"] for t in result["trials"])
    assert result["best_value"] > 0.5  # one epoch of the digits MLP is far above chance (0.1)
    assert "best_state" not in result and out.stat().st_size < 10_000  # no weights


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--preset", "no_such_preset", "--epochs-per-trial", "1", "--budget", "2"], "unknown preset 'no_such_preset'"),
        (["--preset", "mnist_mlp", "--epochs-per-trial", "3", "--budget", "2"], "--budget (2) must be at least"),
        (["--preset", "mnist_mlp", "--epochs-per-trial", "0", "--budget", "2"], "--epochs-per-trial must be >= 1"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(argv, message, capsys):
    assert main(["tune", *argv]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and "Traceback" not in captured.err


def test_without_optuna_the_message_names_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "optuna", None)
    assert main(["tune", "--preset", "mnist_mlp", "--epochs-per-trial", "1", "--budget", "1"]) == 2
    assert 'pip install "forgeml[tune]"' in capsys.readouterr().err
