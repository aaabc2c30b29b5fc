"""Shared helpers for the optimizer tests: the same parameters and gradients in ForgeML and in PyTorch."""

import numpy as np

import forgeml as fm

# A 0-d parameter, a small matrix, one large enough to span several cache blocks (float64 blocks hold 16384
# elements) with a partial last block, and a Fortran-ordered one (the whole-array path).
SHAPES = [(), (5, 3), (130, 140), (7, 4)]
STEPS = 20


def make_values(seed=0):
    rng = np.random.default_rng(seed)
    values = [rng.standard_normal(s) for s in SHAPES]
    values[3] = np.asfortranarray(values[3])
    return values


def make_grads(seed=1, steps=STEPS):
    """Per step, one gradient per parameter (None: that parameter gets no gradient that step).

    Scales change from step to step so AMSGrad's maximum matters; parameter 1 gets a non-contiguous
    (transposed) gradient on odd steps; parameter 0 has no gradient every third step.
    """
    rng = np.random.default_rng(seed)
    out = []
    for t in range(steps):
        scale = rng.uniform(0.05, 3.0)
        grads = [rng.standard_normal(s) * scale for s in SHAPES]
        if t % 2:
            grads[1] = np.ascontiguousarray(grads[1].T).T
        if t % 3 == 2:
            grads[0] = None
        out.append(grads)
    return out


def fm_params(values):
    return [fm.nn.Parameter(np.array(v, copy=True, order="K")) for v in values]


def torch_params(torch, values):
    return [torch.tensor(np.array(v), requires_grad=True) for v in values]


def set_grads_fm(params, grads):
    for p, g in zip(params, grads):
        p.grad = None if g is None else fm.Tensor(np.array(g, copy=True, order="K"))


def set_grads_torch(torch, params, grads):
    for p, g in zip(params, grads):
        p.grad = None if g is None else torch.tensor(np.array(g))


def groups_of(params, groups):
    """``groups`` None: the flat list; else a list of (indices, options) pairs turned into param-group dicts."""
    if groups is None:
        return list(params)
    return [{"params": [params[i] for i in idx], **opts} for idx, opts in groups]


def snapshot(params):
    return [np.array(p.detach().numpy(), copy=True) for p in params]
