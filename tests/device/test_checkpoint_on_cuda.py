"""Checkpoints and CUDA: host bytes on disk, ``map_location`` as in ``torch.load``, loading into CUDA models.

On a CPU machine ``cuda_device`` is the checked CuPy stand-in (``tests/checked_cuda.py``), which refuses any
host/device mix-up; with a GPU and ``FORGEML_TEST_REAL_CUDA=1`` the same tests run on CuPy.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

import forgeml as fm
from forgeml import nn
from forgeml.io import read_metadata
from forgeml.optim import Adam

CPU = fm.device("cpu")
CUDA = fm.device("cuda")


def _host(t):
    return t.detach().cpu().numpy()


def _state():
    return OrderedDict(
        [
            ("w", fm.randn(3, 4)),
            ("count", fm.tensor([1, 2, 3])),
            ("mask", fm.tensor([True, False])),
            ("half", fm.randn(2, dtype=fm.float16)),
        ]
    )


def test_cuda_tensors_are_saved_as_host_bytes_and_load_on_the_cpu_by_default(tmp_path, cuda_device):
    cpu_sd = _state()
    cuda_sd = OrderedDict((k, v.to(cuda_device)) for k, v in cpu_sd.items())
    path = tmp_path / "sd.safetensors"
    fm.save(cuda_sd, path)
    assert all(v.device == CUDA for v in cuda_sd.values())  # saving leaves the tensors where they were
    loaded = fm.load(path)
    assert list(loaded) == list(cpu_sd)
    for k, v in cpu_sd.items():
        assert loaded[k].device == CPU and loaded[k].dtype == v.dtype
        np.testing.assert_array_equal(loaded[k].numpy(), v.numpy())
    # the file is the one a CPU save writes, but for the note of where each tensor came from
    cpu_path = tmp_path / "cpu.safetensors"
    fm.save(cpu_sd, cpu_path)
    raw, cpu_raw = path.read_bytes(), cpu_path.read_bytes()
    assert raw[-100:] == cpu_raw[-100:]  # same tensor bytes at the end of both files
    assert '"device":"cuda:0"' in read_metadata(path)["forgeml.structure"]
    assert "device" not in read_metadata(cpu_path)["forgeml.structure"]


def test_safetensors_of_cuda_tensors_load_in_torch(tmp_path, cuda_device):
    st_torch = pytest.importorskip("safetensors.torch")
    sd = _state()
    fm.save({k: v.to(cuda_device) for k, v in sd.items()}, tmp_path / "sd.safetensors")
    theirs = st_torch.load_file(str(tmp_path / "sd.safetensors"))
    for k, v in sd.items():
        np.testing.assert_array_equal(theirs[k].numpy(), v.numpy())


@pytest.mark.parametrize("where", ["cuda", "cuda:0", 0, "device"])
def test_map_location_to_cuda(tmp_path, cuda_device, where):
    sd = _state()
    fm.save(sd, tmp_path / "sd.safetensors")
    loaded = fm.load(tmp_path / "sd.safetensors", map_location=fm.device("cuda") if where == "device" else where)
    for k, v in sd.items():
        assert loaded[k].device == CUDA and loaded[k].dtype == v.dtype
        np.testing.assert_array_equal(_host(loaded[k]), v.numpy())


def test_map_location_cpu_dict_and_function(tmp_path, cuda_device):
    nested = {"gpu": fm.randn(2, 3).to(cuda_device), "host": fm.arange(4), "n": 3}
    path = tmp_path / "mixed.safetensors"
    fm.save(nested, path)

    on_cpu = fm.load(path, map_location="cpu")
    assert on_cpu["gpu"].device == CPU and on_cpu["host"].device == CPU and on_cpu["n"] == 3

    back = fm.load(path, map_location={"cuda:0": "cuda:0"})  # tensors saved from the GPU go back there
    assert back["gpu"].device == CUDA and back["host"].device == CPU
    np.testing.assert_array_equal(_host(back["gpu"]), _host(nested["gpu"]))

    swapped = fm.load(path, map_location={"cpu": "cuda", "cuda": "cpu"})  # keys name saved locations
    assert swapped["gpu"].device == CPU and swapped["host"].device == CUDA

    seen = []

    def place(tensor, location):
        seen.append((location, tensor.device))
        return tensor.to("cuda") if location == "cpu" else None

    by_function = fm.load(path, map_location=place)
    assert sorted(seen) == [("cpu", CPU), ("cuda:0", CPU)]
    assert by_function["host"].device == CUDA and by_function["gpu"].device == CPU


def test_nested_checkpoint_with_optimizer_state_round_trips_between_devices(tmp_path, cuda_device):
    fm.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).to(cuda_device)
    opt = Adam(model.parameters(), lr=0.01)
    x, y = fm.randn(6, 4).to(cuda_device), fm.tensor([0, 1, 2, 0, 1, 2]).to(cuda_device)
    for _ in range(2):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    path = tmp_path / "ckpt.safetensors"
    fm.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 2}, path)

    # into a CPU model and optimizer
    ckpt = fm.load(path)
    cpu_model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    cpu_model.load_state_dict(ckpt["model"])
    cpu_opt = Adam(cpu_model.parameters(), lr=0.01)
    cpu_opt.load_state_dict(ckpt["optimizer"])
    assert ckpt["epoch"] == 2
    for (k, a), b in zip(model.state_dict().items(), cpu_model.state_dict().values()):
        assert b.device == CPU
        np.testing.assert_array_equal(_host(a), b.numpy(), err_msg=k)

    # into a fresh CUDA model, with the tensors loaded straight onto the device
    ckpt = fm.load(path, map_location="cuda")
    assert ckpt["model"]["0.weight"].device == CUDA
    fresh = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).to(cuda_device)
    fresh.load_state_dict(ckpt["model"])
    fresh_opt = Adam(fresh.parameters(), lr=0.01)
    fresh_opt.load_state_dict(ckpt["optimizer"])
    for p in fresh.parameters():
        assert p.device == CUDA
    # both continue on the same trajectory
    for m, o in ((model, opt), (fresh, fresh_opt)):
        o.zero_grad()
        nn.functional.cross_entropy(m(x), y).backward()
        o.step()
    for (k, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        np.testing.assert_allclose(_host(a), _host(b), rtol=1e-6, atol=1e-7, err_msg=k)


def test_a_cpu_checkpoint_loads_into_a_cuda_model_and_parameters_keep_their_type(tmp_path, cuda_device):
    fm.manual_seed(0)
    source = nn.Linear(3, 2)
    fm.save(source.state_dict(), tmp_path / "w.safetensors")
    target = nn.Linear(3, 2).to(cuda_device)
    target.load_state_dict(fm.load(tmp_path / "w.safetensors"))
    assert target.weight.device == CUDA
    np.testing.assert_array_equal(_host(target.weight), source.weight.detach().numpy())

    fm.save({"p": nn.Parameter(fm.ones(2).to(cuda_device))}, tmp_path / "p.safetensors")
    p = fm.load(tmp_path / "p.safetensors", map_location="cuda")["p"]
    assert isinstance(p, nn.Parameter) and p.requires_grad and p.device == CUDA


def test_map_location_errors_are_clear(tmp_path):
    fm.save({"w": fm.ones(2)}, tmp_path / "w.safetensors")
    with pytest.raises(TypeError, match="map_location must be"):
        fm.load(tmp_path / "w.safetensors", map_location=3.5)
    with pytest.raises(ValueError, match="unknown device type"):
        fm.load(tmp_path / "w.safetensors", map_location="tpu")
    if not fm.cuda.is_available():
        with pytest.raises(RuntimeError, match=r"CUDA is not available.*map_location='cpu'"):
            fm.load(tmp_path / "w.safetensors", map_location="cuda")
    assert fm.load(tmp_path / "w.safetensors", map_location=fm.device("cpu"), weights_only=True)["w"].device == CPU


def test_bfloat16_round_trip(tmp_path):
    pytest.importorskip("ml_dtypes")
    t = fm.randn(3).to(fm.bfloat16)
    fm.save({"t": t}, tmp_path / "bf.safetensors")
    back = fm.load(tmp_path / "bf.safetensors")["t"]
    assert back.dtype == fm.bfloat16
    np.testing.assert_array_equal(back.numpy().astype(np.float32), t.numpy().astype(np.float32))
    torch = pytest.importorskip("torch")
    st_torch = pytest.importorskip("safetensors.torch")
    theirs = st_torch.load_file(str(tmp_path / "bf.safetensors"))["t"]
    assert theirs.dtype == torch.bfloat16
    np.testing.assert_array_equal(theirs.float().numpy(), t.numpy().astype(np.float32))
