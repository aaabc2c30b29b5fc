"""``inference_mode``: grad mode off, and a flag that says so (``torch.inference_mode``).

In ForgeML inference mode is ``no_grad`` plus :func:`is_inference_mode_enabled`:
results of ops inside have ``requires_grad=False``. ``inference_mode(False)``
turns it off and grad mode on, as in PyTorch.
"""

from __future__ import annotations

import functools
import inspect
import threading

from . import grad_mode

__all__ = ["inference_mode", "is_inference_mode_enabled"]


class _InferenceState(threading.local):
    enabled = False


_state = _InferenceState()


def is_inference_mode_enabled() -> bool:
    """True inside ``inference_mode()`` (in this thread)."""
    return _state.enabled


class inference_mode:  # noqa: N801 - PyTorch's name
    """Context manager and decorator: run without recording a graph, as ``no_grad`` does.

    ``with forgeml.inference_mode():``, ``@forgeml.inference_mode()`` and bare
    ``@forgeml.inference_mode`` all work; ``mode=False`` disables it.
    """

    def __new__(cls, mode=True):
        if callable(mode) and not isinstance(mode, bool):  # bare decorator: @inference_mode
            return cls(True)(mode)
        return super().__new__(cls)

    def __init__(self, mode: bool = True) -> None:
        if not isinstance(mode, bool):
            raise TypeError(f"inference_mode expects a bool (or a function to decorate), got {type(mode).__name__}")
        self.mode = mode
        self._saved: list = []

    def __enter__(self) -> None:
        self._saved.append((grad_mode.state.enabled, _state.enabled))
        grad_mode.state.enabled = not self.mode
        _state.enabled = self.mode

    def __exit__(self, *exc) -> None:
        grad_mode.state.enabled, _state.enabled = self._saved.pop()

    def clone(self) -> inference_mode:
        return type(self)(self.mode)

    def __call__(self, func):
        if inspect.isgeneratorfunction(func):

            @functools.wraps(func)
            def generator_wrapper(*args, **kwargs):
                gen = func(*args, **kwargs)
                with self.clone():
                    try:
                        value = next(gen)
                    except StopIteration as stop:
                        return stop.value
                while True:
                    try:
                        sent = yield value
                    except GeneratorExit:
                        gen.close()
                        raise
                    with self.clone():
                        try:
                            value = gen.send(sent)
                        except StopIteration as stop:
                            return stop.value

            return generator_wrapper

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            with self.clone():
                return func(*args, **kwargs)

        return wrapper
