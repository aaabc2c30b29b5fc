"""``forgeml.utils``: the ``torch.utils`` names PyTorch programs import.

``forgeml.utils.data`` is :mod:`forgeml.data` itself (the same module object),
so ``from forgeml.utils.data import DataLoader, Dataset`` and
``import forgeml.utils.data as data`` work as they do with ``torch``.
"""

from __future__ import annotations

import sys

from .. import data

sys.modules[__name__ + ".data"] = data  # ``import forgeml.utils.data`` finds forgeml.data

__all__ = ["data"]
