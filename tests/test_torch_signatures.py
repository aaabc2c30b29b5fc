"""ForgeML's public callables against PyTorch's of the same name: parameter names, order and defaults.

For each callable ForgeML shares by name with PyTorch (``nn`` classes, ``nn.functional``, ``nn.init``,
optimizers, LR schedulers, ``data`` classes, top-level functions, ``Tensor`` methods) whose PyTorch signature
``inspect.signature`` can read, every PyTorch parameter must exist in ForgeML with the same default, at the
same position when PyTorch takes it positionally; a ForgeML-only parameter must not take a positional slot
PyTorch uses. Parameter names that start with ``_`` are private on both sides and skipped. What differs on purpose is in
``ALLOWED`` below, each with its reason; a new difference, or an entry that no longer matches one, fails.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import forgeml as fm
import forgeml.data
import forgeml.nn.functional
import forgeml.nn.init
import forgeml.nn.rnn
import forgeml.optim
import forgeml.optim.lr_scheduler

torch = pytest.importorskip("torch")  # imports torch.nn.functional, torch.nn.init, torch.optim, torch.utils.data

_P = inspect.Parameter
_POSITIONAL = (_P.POSITIONAL_ONLY, _P.POSITIONAL_OR_KEYWORD)
_VARIADIC = (_P.VAR_POSITIONAL, _P.VAR_KEYWORD)

# PyTorch's deprecated ``size_average``/``reduce`` pair (its docs: "Deprecated (see reduction)") is not accepted,
# so the parameters after it sit one or two places earlier: ``reduction`` (and ``ignore_index``) are passed by
# keyword, and have PyTorch's defaults.
_LEGACY = {"missing size_average", "missing reduce", "position reduction"}
_LEGACY_WITH_IGNORE_INDEX = {"missing size_average", "missing reduce", "position ignore_index"}

ALLOWED: dict[str, set[str]] = {
    # --- nn classes
    **{f"nn.{name}": _LEGACY for name in ("BCELoss", "BCEWithLogitsLoss", "L1Loss", "MSELoss", "SmoothL1Loss")},
    **{f"nn.{name}": _LEGACY_WITH_IGNORE_INDEX for name in ("CrossEntropyLoss", "NLLLoss")},
    # activation="relu" (a string PyTorch also accepts) computes what PyTorch's default F.relu computes
    "nn.TransformerEncoderLayer": {"default activation"},
    "nn.TransformerDecoderLayer": {"default activation"},
    "nn.Transformer": {"default activation"},
    # --- nn.functional
    **{
        f"F.{name}": _LEGACY
        for name in (
            "binary_cross_entropy",
            "binary_cross_entropy_with_logits",
            "l1_loss",
            "mse_loss",
            "smooth_l1_loss",
        )
    },
    **{f"F.{name}": _LEGACY_WITH_IGNORE_INDEX for name in ("cross_entropy", "nll_loss")},
    # --- methods of the base classes
    # hook ordering (prepend), keyword-argument hooks (with_kwargs) and always_call are not implemented
    "Module.register_forward_hook": {"missing prepend", "missing with_kwargs", "missing always_call"},
    "Module.register_forward_pre_hook": {"missing prepend", "missing with_kwargs"},
    "Module.register_full_backward_hook": {"missing prepend"},
    "Module.register_full_backward_pre_hook": {"missing prepend"},
    # --- top level
    # forgeml.save/load write and read safetensors (a path and string metadata), not pickles of any object
    "top.save": {
        "missing f",
        "missing pickle_module",
        "missing pickle_protocol",
        "extra path",
        "extra metadata",
    },
    "top.load": {"missing f", "missing pickle_module", "missing mmap", "extra path"},
    # out= (and dtype, which follows it in torch.norm) are keyword-only: no one passes them by position
    "top.norm": {"keyword-only out", "keyword-only dtype"},
    "Tensor.norm": {"keyword-only dtype"},
}


def _signature(obj):
    """``obj``'s signature (a class: its constructor's), or None when it cannot be read or says nothing."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    if all(p.kind in _VARIADIC for p in sig.parameters.values()) and sig.parameters:
        return None  # (*args, **kwargs): a dispatcher whose real signature is elsewhere
    return sig


def _same_default(a, b) -> bool:
    if a is b:
        return True
    try:
        return type(a) is type(b) and bool(a == b)
    except (TypeError, ValueError, RuntimeError):  # arrays and other values without a plain ==
        return False


def differences(ours: inspect.Signature, theirs: inspect.Signature, method: bool = False) -> list[str]:
    """How ``ours`` departs from PyTorch's ``theirs``, one short string per difference."""
    mine = [p for p in list(ours.parameters.values())[1 if method else 0 :] if not p.name.startswith("_")]
    torch_params = [p for p in list(theirs.parameters.values())[1 if method else 0 :] if not p.name.startswith("_")]
    by_name = {p.name: p for p in mine}
    found = []
    for p in torch_params:
        if p.kind in _VARIADIC:
            continue
        q = by_name.get(p.name)
        if q is None:
            found.append(f"missing {p.name}")
            continue
        if q.kind not in _POSITIONAL and p.kind in _POSITIONAL:
            found.append(f"keyword-only {p.name}")
        if p.default is not _P.empty and q.default is _P.empty:
            found.append(f"required {p.name}")
        elif p.default is not _P.empty and not _same_default(p.default, q.default):
            found.append(f"default {p.name}")
    their_positions = [p.name for p in torch_params if p.kind in _POSITIONAL]
    my_positions = [p.name for p in mine if p.kind in _POSITIONAL]
    for index, name in enumerate(their_positions):
        if name in my_positions and my_positions.index(name) != index:
            found.append(f"position {name}")  # the first one only: the rest usually follow from it
            break
    torch_names = {p.name for p in torch_params}
    for index, q in enumerate(mine):
        if q.name in torch_names or q.kind in _VARIADIC:
            continue
        if q.default is _P.empty or (q.kind in _POSITIONAL and my_positions.index(q.name) < len(their_positions)):
            found.append(f"extra {q.name}")
    return found


def _public(module):
    return [name for name in dir(module) if not name.startswith("_")]


def _classes(ours_module, torch_module, prefix, base=None):
    for name in _public(ours_module):
        ours, theirs = getattr(ours_module, name), getattr(torch_module, name, None)
        if inspect.isclass(ours) and inspect.isclass(theirs) and (base is None or issubclass(ours, base)):
            yield f"{prefix}.{name}", ours, theirs, False


def _functions(ours_module, torch_module, prefix):
    for name in _public(ours_module):
        ours, theirs = getattr(ours_module, name), getattr(torch_module, name, None)
        if (
            callable(ours)
            and callable(theirs)
            and not inspect.isclass(ours)
            and not inspect.isclass(theirs)
            and not inspect.ismodule(ours)
        ):
            yield f"{prefix}.{name}", ours, theirs, False


def _tensor_methods():
    for name in _public(fm.Tensor):
        ours, theirs = getattr(fm.Tensor, name, None), getattr(torch.Tensor, name, None)
        if callable(ours) and callable(theirs) and not inspect.isclass(ours) and not isinstance(ours, property):
            yield f"Tensor.{name}", ours, theirs, True


def _methods(pairs):
    """Public methods of ForgeML base classes against those of PyTorch's (``Module.state_dict``, ``Optimizer.step``)."""
    for prefix, ours_cls, torch_cls in pairs:
        for name in _public(ours_cls):
            ours, theirs = getattr(ours_cls, name, None), getattr(torch_cls, name, None)
            if callable(ours) and callable(theirs) and not inspect.isclass(ours):
                yield f"{prefix}.{name}", ours, theirs, True


GROUPS = {
    # RNN/LSTM/GRU take (*args, **kwargs) on both sides and hand them to RNNBase: compare the bases
    "nn": lambda: [*_classes(fm.nn, torch.nn, "nn"), ("nn.RNNBase", fm.nn.rnn.RNNBase, torch.nn.RNNBase, False)],
    "F": lambda: _functions(fm.nn.functional, torch.nn.functional, "F"),
    "init": lambda: _functions(fm.nn.init, torch.nn.init, "init"),
    "optim": lambda: _classes(fm.optim, torch.optim, "optim", fm.optim.Optimizer),
    "lr_scheduler": lambda: _classes(
        fm.optim.lr_scheduler, torch.optim.lr_scheduler, "lr_scheduler", fm.optim.lr_scheduler.LRScheduler
    ),
    "data": lambda: _classes(fm.data, torch.utils.data, "data"),
    "top": lambda: _functions(fm, torch, "top"),
    "Tensor": _tensor_methods,
    "methods": lambda: _methods(
        [
            ("Module", fm.nn.Module, torch.nn.Module),
            ("Optimizer", fm.optim.Optimizer, torch.optim.Optimizer),
            ("LRScheduler", fm.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.LRScheduler),
        ]
    ),
}
# At least this many callables per group must be compared, so the test cannot pass by finding none.
MINIMUM_COMPARED = {
    "nn": 70,
    "F": 30,
    "init": 8,
    "optim": 9,
    "lr_scheduler": 12,
    "data": 8,
    "top": 8,
    "Tensor": 3,
    "methods": 35,
}


def compare_group(group: str):
    """(number compared, number PyTorch cannot introspect, {key: unexpected differences}, allow-list keys used)."""
    compared = skipped = 0
    unexpected, used = {}, set()
    for key, ours, theirs, method in GROUPS[group]():
        their_sig = _signature(theirs)
        if their_sig is None:
            skipped += 1
            continue
        compared += 1
        our_sig = _signature(ours)
        if our_sig is None:
            unexpected[key] = ["ForgeML's signature cannot be read"]
            continue
        allowed = ALLOWED.get(key, set())
        found = differences(our_sig, their_sig, method)
        if key in ALLOWED:
            used.add(key)
            stale = allowed - set(found)
            if stale:
                unexpected[key] = [f"allow-list entry no longer needed: {sorted(stale)}"]
        extra = [d for d in found if d not in allowed]
        if extra:
            unexpected.setdefault(key, []).extend(extra)
    return compared, skipped, unexpected, used


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_signatures_match_pytorch(group):
    compared, skipped, unexpected, _ = compare_group(group)
    report = "\n".join(f"  {key}: {', '.join(diffs)}" for key, diffs in sorted(unexpected.items()))
    assert not unexpected, f"{group}: signatures that differ from PyTorch's (fix, or allow with a reason):\n{report}"
    assert compared >= MINIMUM_COMPARED[group], f"{group}: only {compared} compared ({skipped} not introspectable)"


def test_every_allow_list_entry_names_a_compared_callable():
    used = set()
    for group in GROUPS:
        used |= compare_group(group)[3]
    assert set(ALLOWED) <= used, f"ALLOWED names callables that are not compared: {sorted(set(ALLOWED) - used)}"


def test_the_comparison_catches_each_kind_of_difference():
    def theirs(input, p=2.0, dim=None, keepdim=False):
        pass

    def renamed(input, q=2.0, dim=None, keepdim=False):
        pass

    def other_default(input, p=1.0, dim=None, keepdim=False):
        pass

    def reordered(input, dim=None, p=2.0, keepdim=False):
        pass

    def keyword_only(input, p=2.0, dim=None, *, keepdim=False):
        pass

    def extra_in_front(input, scale=1.0, p=2.0, dim=None, keepdim=False):
        pass

    def fine(input, p=2.0, dim=None, keepdim=False, extra=None, **kw):
        pass

    sig = inspect.signature
    assert differences(sig(renamed), sig(theirs)) == ["missing p", "extra q"]
    assert differences(sig(other_default), sig(theirs)) == ["default p"]
    assert differences(sig(reordered), sig(theirs)) == ["position p"]
    assert differences(sig(keyword_only), sig(theirs)) == ["keyword-only keepdim"]
    assert "extra scale" in differences(sig(extra_in_front), sig(theirs))
    assert differences(sig(fine), sig(theirs)) == []


# ------------------------------------------------- parameters added to match PyTorch: they do what torch's do
def _np(t):
    return t.detach().numpy()


def test_embedding_max_norm_weight_and_from_pretrained_match_torch():
    table = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32) * 2
    ids = np.array([[0, 2, 2], [5, 1, 0]])
    ours = fm.nn.Embedding(6, 4, max_norm=1.0, norm_type=1.5, _weight=fm.tensor(table.copy()))
    theirs = torch.nn.Embedding(6, 4, max_norm=1.0, norm_type=1.5, _weight=torch.tensor(table.copy()))
    out, want = ours(fm.tensor(ids)), theirs(torch.tensor(ids))
    np.testing.assert_allclose(_np(out), _np(want), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(_np(ours.weight), _np(theirs.weight), rtol=1e-6, atol=1e-6)  # rows renormed in place
    assert repr(ours) == repr(theirs)
    functional = fm.nn.functional.embedding(fm.tensor(ids), fm.tensor(table.copy()), max_norm=1.0)
    expected = torch.nn.functional.embedding(torch.tensor(ids), torch.tensor(table.copy()), max_norm=1.0)
    np.testing.assert_allclose(_np(functional), _np(expected), rtol=1e-6, atol=1e-6)
    for freeze in (True, False):
        ours = fm.nn.Embedding.from_pretrained(fm.tensor(table), freeze=freeze, padding_idx=1)
        theirs = torch.nn.Embedding.from_pretrained(torch.tensor(table), freeze=freeze, padding_idx=1)
        assert ours.weight.requires_grad == theirs.weight.requires_grad
        np.testing.assert_array_equal(_np(ours(fm.tensor(ids))), _np(theirs(torch.tensor(ids))))
    with pytest.raises(NotImplementedError, match="scale_grad_by_freq"):
        fm.nn.Embedding(6, 4, scale_grad_by_freq=True)


@pytest.mark.parametrize("name", ["mse_loss", "l1_loss"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_weighted_regression_losses_match_torch(name, reduction):
    rng = np.random.default_rng(1)
    x, y, w = (rng.standard_normal((3, 4)).astype(np.float32) for _ in range(3))
    w = np.abs(w)
    fx = fm.tensor(x, requires_grad=True)
    tx = torch.tensor(x, requires_grad=True)
    ours = getattr(fm.nn.functional, name)(fx, fm.tensor(y), reduction=reduction, weight=fm.tensor(w))
    theirs = getattr(torch.nn.functional, name)(tx, torch.tensor(y), reduction=reduction, weight=torch.tensor(w))
    np.testing.assert_allclose(_np(ours), _np(theirs), rtol=1e-5, atol=1e-6)
    ours.sum().backward()
    theirs.sum().backward()
    np.testing.assert_allclose(fx.grad.numpy(), tx.grad.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "elu", "silu"])
def test_functional_activations_accept_inplace(name):
    x = np.array([-2.0, -0.5, 0.0, 1.5], dtype=np.float32)
    ours, theirs = fm.tensor(x), torch.tensor(x)
    out = getattr(fm.nn.functional, name)(ours, inplace=True)
    want = getattr(torch.nn.functional, name)(theirs, inplace=True)
    assert out is ours  # written into its input, as in PyTorch
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6)
    leaf = fm.tensor(x, requires_grad=True)  # autograd tracks it: the result is computed out of place
    out = getattr(fm.nn.functional, name)(leaf * 1.0, inplace=True)
    np.testing.assert_allclose(_np(out), want.numpy(), rtol=1e-6)
    out.sum().backward()
    assert leaf.grad is not None


def test_options_accepted_for_pytorch_compatibility():
    with pytest.raises(NotImplementedError, match="add_bias_kv"):
        fm.nn.MultiheadAttention(8, 2, add_bias_kv=True)
    assert fm.nn.MultiheadAttention(8, 2, 0.0, True, False, False, 4, 4).kdim == 4  # PyTorch's positional order
    params = [fm.nn.Parameter(fm.zeros(2))]
    fm.optim.Adam(params, fused=True, capturable=True, foreach=False)
    fm.optim.RMSprop(params, 0.01, 0.99, 1e-8, 0, 0, False, False, None, True)  # positional, maximize=True
    with pytest.raises(NotImplementedError, match="differentiable"):
        fm.optim.SGD(params, differentiable=True)
    x = fm.tensor([[3.0, 4.0], [1.0, 2.0]])
    assert x.norm(dtype=fm.float64).dtype == fm.float64 and fm.norm(x, dtype=fm.float64).dtype == fm.float64
    np.testing.assert_allclose(x.norm(dtype=fm.float64).item(), np.sqrt(30.0))
    assert [t.shape for t in x.split(split_size=1, dim=1)] == [(2, 1), (2, 1)]
    assert [t.shape for t in fm.split(tensor=x, split_size_or_sections=[1, 1])] == [(1, 2), (1, 2)]
    assert not fm.data.DataLoader(list(range(4)), shuffle=None).sampler.__class__.__name__.startswith("Random")
