"""Random number generators shaped like PyTorch's.

Every random op in ForgeML (``rand``, ``randn``, ``randint``, ``uniform_``,
``normal_``, dropout, data shuffling) draws from a :class:`Generator`: the one
passed as ``generator=``, or the process-wide :data:`default_generator` that
:func:`manual_seed` reseeds. The bits come from NumPy's PCG64.
"""

from __future__ import annotations

import copy
import secrets

import numpy as np

from .device import as_device

__all__ = ["Generator", "default_generator", "initial_seed", "manual_seed", "seed", "get_rng_state", "set_rng_state"]

_DEFAULT_SEED = 67280421310721


class Generator:
    """A reproducible stream of random numbers (``torch.Generator``)."""

    def __init__(self, device="cpu") -> None:
        self.device = as_device(device)
        self._initial_seed = _DEFAULT_SEED
        self._np = np.random.Generator(np.random.PCG64(_DEFAULT_SEED))

    def manual_seed(self, seed: int) -> Generator:
        """Restart the stream from ``seed``; returns the generator, as PyTorch's does."""
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed must be an integer, got {type(seed).__name__}")
        seed = int(seed) & 0xFFFF_FFFF_FFFF_FFFF  # PyTorch accepts negative seeds; keep them valid here
        self._initial_seed = seed
        self._np = np.random.Generator(np.random.PCG64(seed))
        return self

    def seed(self) -> int:
        """Reseed from the operating system's entropy and return the new seed."""
        value = secrets.randbits(63)
        self.manual_seed(value)
        return value

    def initial_seed(self) -> int:
        return self._initial_seed

    def get_state(self) -> dict:
        """A snapshot of the stream's position, for :meth:`set_state`."""
        return {"seed": self._initial_seed, "bit_generator": copy.deepcopy(self._np.bit_generator.state)}

    def set_state(self, state: dict) -> Generator:
        try:
            bit_state = state["bit_generator"]
            seed_value = state["seed"]
        except (TypeError, KeyError) as exc:
            raise ValueError("invalid generator state: expected the dict returned by get_state()") from exc
        gen = np.random.Generator(np.random.PCG64())
        gen.bit_generator.state = copy.deepcopy(bit_state)
        self._np, self._initial_seed = gen, seed_value
        return self

    @property
    def numpy(self) -> np.random.Generator:
        """The NumPy generator that produces this stream's numbers."""
        return self._np

    def __repr__(self) -> str:
        return f"<forgeml.Generator device={self.device} initial_seed={self._initial_seed}>"


default_generator = Generator()


def manual_seed(seed: int) -> Generator:
    """Seed the default generator, making every random op in ForgeML reproducible."""
    return default_generator.manual_seed(seed)


def seed() -> int:
    return default_generator.seed()


def initial_seed() -> int:
    return default_generator.initial_seed()


def get_rng_state() -> dict:
    return default_generator.get_state()


def set_rng_state(state: dict) -> None:
    default_generator.set_state(state)


def numpy_generator(generator: Generator | None) -> np.random.Generator:
    """The NumPy generator behind ``generator`` (the default one when ``None``)."""
    if generator is None:
        return default_generator._np
    if not isinstance(generator, Generator):
        raise TypeError(f"generator must be a forgeml.Generator, got {type(generator).__name__}")
    return generator._np
