"""Checkpoints: safetensors round trips with PyTorch, nested structures, and corrupt files."""

import json
import struct
from collections import OrderedDict

import numpy as np
import pytest

import forgeml as fm
from forgeml import nn
from forgeml.io import CheckpointError, read_metadata

torch = pytest.importorskip("torch")
st_torch = pytest.importorskip("safetensors.torch")


def _models():
    fm.manual_seed(1)
    ours = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Dropout(0.1), nn.Linear(5, 3))
    theirs = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Dropout(0.1), torch.nn.Linear(5, 3))
    return ours.eval(), theirs.eval()


def test_forgeml_checkpoint_loads_into_torch_and_back(tmp_path):
    ours, theirs = _models()
    path = tmp_path / "model.safetensors"
    fm.save(ours.state_dict(), path)
    theirs.load_state_dict(st_torch.load_file(str(path)))
    x = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    expected = ours(fm.tensor(x)).detach().numpy()
    np.testing.assert_allclose(theirs(torch.tensor(x)).detach().numpy(), expected, rtol=1e-6, atol=1e-6)

    with torch.no_grad():
        for p in theirs.parameters():
            p.mul_(1.5)
    back = tmp_path / "from_torch.safetensors"
    st_torch.save_file(theirs.state_dict(), str(back))
    fresh, _ = _models()
    fresh.load_state_dict(fm.load(back))
    np.testing.assert_allclose(
        fresh(fm.tensor(x)).detach().numpy(), theirs(torch.tensor(x)).detach().numpy(), rtol=1e-6, atol=1e-6
    )


def test_flat_state_dict_round_trip_keeps_order_dtypes_and_values(tmp_path):
    sd = OrderedDict(
        [
            ("b.weight", fm.randn(3, 2)),
            ("a.count", fm.tensor([1, 2, 3])),
            ("c.mask", fm.tensor([True, False])),
            ("d.half", fm.randn(2, dtype=fm.float16)),
            ("e.double", fm.randn(2, 2, dtype=fm.float64).T),  # non-contiguous
        ]
    )
    path = tmp_path / "sd.safetensors"
    fm.save(sd, path)
    loaded = fm.load(path)
    assert list(loaded) == list(sd)
    for k, v in sd.items():
        assert loaded[k].dtype == v.dtype
        np.testing.assert_array_equal(loaded[k].numpy(), v.numpy())


def test_nested_checkpoint_with_metadata(tmp_path):
    ours, _ = _models()
    ckpt = {
        "model": ours.state_dict(),
        "epoch": 7,
        "best": 0.25,
        "optimizer": {
            "state": {0: {"step": 3, "exp_avg": fm.ones(2)}},
            "param_groups": [{"lr": 0.1, "betas": (0.9, 0.99), "params": [0]}],
        },
        "history": [{"loss": 1.0}, {"loss": 0.5}],
        "note": None,
    }
    path = tmp_path / "run.safetensors"
    fm.save(ckpt, path, metadata={"format": "forgeml"})
    back = fm.load(path)
    assert back["epoch"] == 7 and back["best"] == 0.25 and back["note"] is None
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.99)
    assert list(back["optimizer"]["state"]) == [0]  # int keys survive
    assert back["history"] == [{"loss": 1.0}, {"loss": 0.5}]
    np.testing.assert_array_equal(back["optimizer"]["state"][0]["exp_avg"].numpy(), [1.0, 1.0])
    assert list(back["model"]) == list(ours.state_dict())
    assert read_metadata(path)["format"] == "forgeml"
    # the tensors are also plain safetensors entries under dotted names
    assert "optimizer.state.0.exp_avg" in st_torch.load_file(str(path))


def test_save_is_atomic_and_rejects_unsavable_values(tmp_path):
    path = tmp_path / "keep.safetensors"
    fm.save({"w": fm.ones(3)}, path)
    before = path.read_bytes()
    with pytest.raises(TypeError, match="cannot save a object"):
        fm.save({"w": fm.zeros(3), "bad": object()}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.safetensors"]  # no temporary file left behind
    with pytest.raises(ValueError, match="same name"):
        fm.save({"a.b": fm.ones(1), "a": {"b": fm.ones(1)}}, tmp_path / "clash.safetensors")


def _write_valid(tmp_path):
    path = tmp_path / "valid.safetensors"
    fm.save(nn.Linear(8, 4).state_dict(), path)
    return path, path.read_bytes()


@pytest.mark.parametrize("cut", [0, 5, 8, 20, -1, -17])
def test_truncated_files_raise_a_clear_error(tmp_path, cut):
    _, raw = _write_valid(tmp_path)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(raw[:cut])
    with pytest.raises(CheckpointError, match=r"broken\.safetensors.*(truncated|not a safetensors|corrupt)"):
        fm.load(broken)


def test_corrupt_header_and_offsets_raise(tmp_path):
    _, raw = _write_valid(tmp_path)
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + size])
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(raw[:8] + b"{" * size + raw[8 + size :])
    with pytest.raises(CheckpointError, match="corrupt header"):
        fm.load(garbage)
    header["weight"]["data_offsets"][1] += 4
    body = json.dumps(header).encode()
    body += b" " * (-len(body) % 8)
    shifted = tmp_path / "shifted.safetensors"
    shifted.write_bytes(struct.pack("<Q", len(body)) + body + raw[8 + size :])
    with pytest.raises(CheckpointError, match="'weight'"):
        fm.load(shifted)
    header["weight"]["data_offsets"][1] -= 4
    header["weight"]["dtype"] = "BF16"
    body = json.dumps(header).encode()
    body += b" " * (-len(body) % 8)
    bf16 = tmp_path / "bf16.safetensors"
    bf16.write_bytes(struct.pack("<Q", len(body)) + body + raw[8 + size :])
    with pytest.raises(CheckpointError, match="BF16"):
        fm.load(bf16)


def test_corrupt_checkpoint_leaves_the_model_untouched(tmp_path):
    model = nn.Linear(8, 4)
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    _, raw = _write_valid(tmp_path)
    broken = tmp_path / "half.safetensors"
    broken.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError):
        model.load_state_dict(fm.load(broken))
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), before[k])
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        fm.load(tmp_path / "missing.safetensors")
