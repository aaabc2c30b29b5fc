"""Steps shared by the portable update kernels (``_adam_kernel``, ``_rmsprop_kernel``, ...): in place, ``xp`` ufuncs."""

from __future__ import annotations

__all__ = ["l2_grad", "lerp_moment"]


def l2_grad(xp, p, g, s2, wd, neg):
    """The effective gradient and whether it is still to be negated (maximize).

    With L2 decay (``wd``) it is ``±g + wd·θ``, written into ``s2`` (the sign
    already applied); otherwise ``g`` as given, its sign still pending.
    """
    if wd:
        xp.multiply(p, wd, out=s2)
        (xp.subtract if neg else xp.add)(s2, g, out=s2)
        return s2, False
    return g, neg


def lerp_moment(xp, m, g, s, neg, w):
    """``m ← m + w·(±g - m)`` in place (``-g`` when ``neg``), through the scratch ``s``."""
    if neg:  # (-g) - m = -(g + m): maximize costs no extra pass
        xp.add(g, m, out=s)
        xp.multiply(s, -w, out=s)
    else:
        xp.subtract(g, m, out=s)
        xp.multiply(s, w, out=s)
    xp.add(m, s, out=m)
