"""forgeml.load of files written by torch.save (zip format), weights-only."""

import io
import os
import pickle
import zipfile
from collections import OrderedDict

import numpy as np
import pytest

import forgeml as fm
from forgeml import nn
from forgeml.io.torch_pickle import UnsafePickleError

torch = pytest.importorskip("torch")


def _save(obj, tmp_path, name="ckpt.pt", **kw):
    path = tmp_path / name
    torch.save(obj, path, **kw)
    return path


def _as_np(t):
    if t.dtype == torch.bfloat16:
        return t.float().numpy()
    return t.detach().numpy()


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16", "int64", "int32", "uint8", "bool"])
def test_dtypes_round_trip(tmp_path, dtype):
    rng = np.random.default_rng(0)
    base = torch.tensor(rng.standard_normal((3, 4)) * 10)
    t = base > 0 if dtype == "bool" else base.abs().to(getattr(torch, dtype))
    loaded = fm.load(_save(t, tmp_path))
    assert isinstance(loaded, fm.Tensor)
    assert loaded.dtype.name == dtype and tuple(loaded.shape) == (3, 4)
    got = loaded.float()._data if dtype == "bfloat16" else loaded._data
    np.testing.assert_array_equal(got, _as_np(t))


def test_state_dict_nested_and_scalars(tmp_path):
    obj = {
        "model": OrderedDict(w=torch.ones(2, 2), b=torch.zeros(2)),
        "epoch": 3,
        "lr": 0.5,
        "name": "run",
        "flags": [True, None, (1, 2)],
        "deep": {"x": {"y": torch.arange(5)}},
        "dtype": torch.float16,
    }
    out = fm.load(_save(obj, tmp_path))
    assert isinstance(out["model"], OrderedDict) and list(out["model"]) == ["w", "b"]
    assert out["epoch"] == 3 and out["lr"] == 0.5 and out["name"] == "run"
    assert out["flags"] == [True, None, (1, 2)]
    np.testing.assert_array_equal(out["deep"]["x"]["y"]._data, np.arange(5))
    assert out["dtype"] is fm.float16


def test_non_contiguous_views_share_storage(tmp_path):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    obj = {"base": base, "t": base.t(), "slice": base[1:3, ::2], "row": base[2]}
    out = fm.load(_save(obj, tmp_path))
    for key, value in obj.items():
        assert tuple(out[key].shape) == tuple(value.shape)
        np.testing.assert_array_equal(out[key]._data, value.numpy())
    assert np.shares_memory(out["base"]._data, out["t"]._data)
    out["base"]._data[2, 0] = -1.0  # a view of one storage, as in PyTorch
    assert out["row"]._data[0] == -1.0 and out["t"]._data[0, 2] == -1.0
    assert (out["t"] @ out["base"]).shape == (6, 6)


def test_parameter_and_requires_grad(tmp_path):
    obj = {"p": torch.nn.Parameter(torch.ones(3)), "g": torch.zeros(2, requires_grad=True)}
    out = fm.load(_save(obj, tmp_path))
    assert isinstance(out["p"], nn.Parameter) and out["p"].requires_grad
    assert out["g"].requires_grad and not isinstance(out["g"], nn.Parameter)


def test_model_state_dict_gives_same_outputs(tmp_path):
    torch.manual_seed(0)
    theirs = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.ReLU(), torch.nn.Linear(8, 3)
    ).eval()
    ours = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.ReLU(), nn.Linear(8, 3)).eval()
    ours.load_state_dict(fm.load(_save(theirs.state_dict(), tmp_path)))
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    np.testing.assert_allclose(ours(fm.tensor(x))._data, theirs(torch.tensor(x)).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_big_endian_archive(tmp_path):
    t = torch.arange(6, dtype=torch.float32).reshape(2, 3) / 3
    src = _save(t, tmp_path)
    dst = tmp_path / "big.pt"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for entry in zin.namelist():
            data = zin.read(entry)
            if entry.endswith("/byteorder"):
                data = b"big"
            elif "/data/" in entry:
                data = np.frombuffer(data, "<f4").astype(">f4").tobytes()
            zout.writestr(entry, data)
    np.testing.assert_array_equal(fm.load(dst)._data, t.numpy())


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _zip_with_pickle(path, payload: bytes):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", payload)
        z.writestr("archive/byteorder", "little")


def test_malicious_pickle_is_refused_unrun(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    _zip_with_pickle(path, pickle.dumps({"w": _Evil(marker)}, protocol=2))
    with pytest.raises(UnsafePickleError, match=r"refusing to load (posix|os|nt)\.system"):
        fm.load(path)
    assert not marker.exists()
    # and a torch.save file whose pickle names something else
    evil = tmp_path / "evil2.pt"
    buf = io.BytesIO()
    torch.save({"w": torch.ones(1)}, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zin, zipfile.ZipFile(evil, "w") as zout:
        for entry in zin.namelist():
            data = zin.read(entry)
            if entry.endswith("data.pkl"):
                data = pickle.dumps(_Evil(marker), protocol=2)
            zout.writestr(entry, data)
    with pytest.raises(UnsafePickleError):
        fm.load(evil)
    assert not marker.exists()


def test_build_on_anything_but_ordered_dict_is_refused(tmp_path):
    path = tmp_path / "build.pt"
    # GLOBAL torch.float32, then BUILD it with {"numpy": 1}: must not touch forgeml.float32
    _zip_with_pickle(path, b"\x80\x02ctorch\nfloat32\n}X\x05\x00\x00\x00numpyK\x01sb.")
    with pytest.raises(UnsafePickleError, match="refusing to set the state"):
        fm.load(path)
    assert fm.float32.numpy == np.float32


def test_legacy_format_gets_a_clear_error(tmp_path):
    path = _save({"w": torch.ones(2)}, tmp_path, "old.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(ValueError, match=r"legacy .*safetensors"):
        fm.load(path)
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(ValueError, match="plain Python pickle"):
        fm.load(plain)


def test_truncated_storage_is_an_error(tmp_path):
    src = _save(torch.ones(10), tmp_path)
    dst = tmp_path / "short.pt"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for entry in zin.namelist():
            data = zin.read(entry)
            zout.writestr(entry, data[:8] if "/data/" in entry else data)
    with pytest.raises(pickle.UnpicklingError, match="holds 8 bytes"):
        fm.load(dst)
