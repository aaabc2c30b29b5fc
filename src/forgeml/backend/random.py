"""Random number generators shaped like PyTorch's, one stream per device.

Every random op in ForgeML (``rand``, ``randn``, ``randint``, ``uniform_``,
``normal_``, dropout, data shuffling) draws from a :class:`Generator`: the one
passed as ``generator=``, or the default generator of the device the result
lives on. :func:`manual_seed` reseeds them all, as ``torch.manual_seed`` does.
On the CPU the bits come from NumPy's PCG64; on a CUDA device from CuPy's
``RandomState`` (cuRAND), created on that device when first used.
"""

from __future__ import annotations

import copy
import secrets

import numpy as np

from .device import CPU, array_module, as_device

__all__ = [
    "Generator",
    "default_generator",
    "default_generator_for",
    "generator_for",
    "get_rng_state",
    "initial_seed",
    "manual_seed",
    "numpy_generator",
    "seed",
    "set_rng_state",
]

_DEFAULT_SEED = 67280421310721


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer, got {type(seed).__name__}")
    return int(seed) & 0xFFFF_FFFF_FFFF_FFFF  # PyTorch accepts negative seeds; keep them valid here


class Generator:
    """A reproducible stream of random numbers on one device (``torch.Generator``).

    The draw methods (``random``, ``standard_normal``, ``uniform``, ``normal``,
    ``integers``, ``permutation``) return arrays on the generator's device.
    """

    def __init__(self, device="cpu") -> None:
        self.device = as_device(device)
        self._initial_seed = _DEFAULT_SEED
        self._np = np.random.Generator(np.random.PCG64(_DEFAULT_SEED)) if self.device.type == "cpu" else None
        self._cuda_state = None  # CuPy RandomState, created on first use
        self._cuda_draws = 0

    def manual_seed(self, seed: int) -> Generator:
        """Restart the stream from ``seed``; returns the generator, as PyTorch's does."""
        seed = _check_seed(seed)
        self._initial_seed = seed
        if self.device.type == "cpu":
            self._np = np.random.Generator(np.random.PCG64(seed))
        else:
            self._cuda_state, self._cuda_draws = None, 0
        return self

    def seed(self) -> int:
        """Reseed from the operating system's entropy and return the new seed."""
        value = secrets.randbits(63)
        self.manual_seed(value)
        return value

    def initial_seed(self) -> int:
        return self._initial_seed

    def get_state(self) -> dict:
        """A snapshot of the stream's position, for :meth:`set_state`.

        A CUDA generator's snapshot is its seed and the number of draws made;
        restoring it continues a stream determined by both, so resumed runs are
        reproducible, though not bit-identical to an uninterrupted run.
        """
        if self.device.type == "cpu":
            return {"seed": self._initial_seed, "bit_generator": copy.deepcopy(self._np.bit_generator.state)}
        return {"seed": self._initial_seed, "cuda_draws": self._cuda_draws}

    def set_state(self, state: dict) -> Generator:
        try:
            seed_value = state["seed"]
            if self.device.type == "cpu":
                bit_state = state["bit_generator"]
            else:
                draws = int(state["cuda_draws"])
        except (TypeError, KeyError, ValueError) as exc:
            raise ValueError(
                f"invalid generator state for a {self.device} generator: expected the dict returned by get_state()"
            ) from exc
        if self.device.type == "cpu":
            gen = np.random.Generator(np.random.PCG64())
            gen.bit_generator.state = copy.deepcopy(bit_state)
            self._np, self._initial_seed = gen, seed_value
        else:
            self._initial_seed, self._cuda_draws = seed_value, draws
            self._cuda_state = self._new_cuda_state((seed_value + 0x9E3779B97F4A7C15 * draws) % (2**63))
        return self

    @property
    def numpy(self) -> np.random.Generator:
        """The NumPy generator that produces a CPU generator's stream."""
        if self._np is None:
            raise RuntimeError(f"a {self.device} generator has no NumPy stream")
        return self._np

    # -- draws ---------------------------------------------------------------
    def _new_cuda_state(self, seed: int):
        xp = array_module(self.device)
        with xp.cuda.Device(self.device.index):
            return xp.random.RandomState(seed % (2**63))

    def _cuda(self):
        self._cuda_draws += 1
        if self._cuda_state is None:
            self._cuda_state = self._new_cuda_state(self._initial_seed)
        return self._cuda_state

    def random(self, shape, dtype=np.float64):
        """Uniform samples in [0, 1) of a float ``dtype`` (float32 or float64)."""
        if self._np is not None:
            return self._np.random(shape, dtype=dtype)
        return self._cuda().random_sample(size=shape, dtype=dtype)

    def standard_normal(self, shape, dtype=np.float64):
        """Standard normal samples of a float ``dtype`` (float32 or float64)."""
        if self._np is not None:
            return self._np.standard_normal(shape, dtype=dtype)
        return self._cuda().standard_normal(size=shape, dtype=dtype)

    def uniform(self, low: float, high: float, shape):
        """float64 samples from U(low, high)."""
        if self._np is not None:
            return self._np.uniform(low, high, size=shape)
        return self._cuda().uniform(low, high, size=shape, dtype=np.float64)

    def normal(self, mean: float, std: float, shape):
        """float64 samples from N(mean, std^2)."""
        if self._np is not None:
            return self._np.normal(mean, std, size=shape)
        return self._cuda().normal(mean, std, size=shape, dtype=np.float64)

    def integers(self, low: int, high: int, shape):
        """int64 samples uniform in [low, high)."""
        if self._np is not None:
            return self._np.integers(low, high, size=shape, dtype=np.int64)
        return self._cuda().randint(low, high, size=shape, dtype=np.int64)

    def permutation(self, n: int):
        """A random permutation of ``0 .. n-1`` (int64)."""
        if self._np is not None:
            return self._np.permutation(n)
        return self._cuda().permutation(n).astype(np.int64, copy=False)

    def __repr__(self) -> str:
        return f"<forgeml.Generator device={self.device} initial_seed={self._initial_seed}>"


default_generator = Generator()
_cuda_generators: dict[int, Generator] = {}


def default_generator_for(device) -> Generator:
    """The default generator of ``device`` (the CPU's is :data:`default_generator`)."""
    dev = as_device(device)
    if dev.type == "cpu":
        return default_generator
    gen = _cuda_generators.get(dev.index)
    if gen is None:
        array_module(dev)  # fails clearly when CUDA is unusable
        gen = _cuda_generators[dev.index] = Generator(dev)
        gen.manual_seed(default_generator.initial_seed())
    return gen


def generator_for(device, generator: Generator | None = None) -> Generator:
    """The generator a random op producing an array on ``device`` draws from (checked against ``device``)."""
    dev = as_device(device)
    if generator is None:
        return default_generator_for(dev)
    if not isinstance(generator, Generator):
        raise TypeError(f"generator must be a forgeml.Generator, got {type(generator).__name__}")
    if generator.device.type != dev.type:
        raise RuntimeError(
            f"Expected a '{dev.type}' device type for generator but found '{generator.device.type}' "
            f"(the result is on {dev}; make the generator with forgeml.Generator(device='{dev}'))"
        )
    return generator


def manual_seed(seed: int) -> Generator:
    """Seed every device's default generator, making every random op in ForgeML reproducible."""
    seed = _check_seed(seed)
    for gen in _cuda_generators.values():
        gen.manual_seed(seed)
    return default_generator.manual_seed(seed)


def seed() -> int:
    value = default_generator.seed()
    for gen in _cuda_generators.values():
        gen.manual_seed(value)
    return value


def initial_seed() -> int:
    return default_generator.initial_seed()


def get_rng_state() -> dict:
    return default_generator.get_state()


def set_rng_state(new_state: dict) -> None:
    default_generator.set_state(new_state)


def numpy_generator(generator: Generator | None) -> np.random.Generator:
    """The NumPy generator behind a CPU ``generator`` (the default one when ``None``), for host-side sampling."""
    gen = generator_for(CPU, generator)
    return gen.numpy


def reset_cuda_generators() -> None:
    """Forget the CUDA default generators (after the CUDA namespace changes, as in tests)."""
    _cuda_generators.clear()
