"""Grad mode: whether ops record the graph that ``backward`` walks.

The flag is per thread, as in PyTorch. ``no_grad``, ``enable_grad`` and
``set_grad_enabled`` work as context managers and as decorators; grad mode
never touches a module's train/eval state.
"""

from __future__ import annotations

import functools
import inspect
import threading

__all__ = ["enable_grad", "is_grad_enabled", "no_grad", "set_grad_enabled"]


class _GradState(threading.local):
    enabled = True


state = _GradState()


def is_grad_enabled() -> bool:
    """True when new ops record a graph for autograd."""
    return state.enabled


class _GradModeContext:
    """Shared machinery: a context manager that is also a decorator."""

    _mode: bool

    def __new__(cls, func=None):
        self = super().__new__(cls)
        if func is None:
            return self
        if not callable(func):
            raise TypeError(f"{cls.__name__}() takes no arguments (or a function when used as a bare decorator)")
        return self(func)  # used as ``@no_grad`` without parentheses

    def __enter__(self) -> None:
        self._prev = state.enabled
        state.enabled = self._mode

    def __exit__(self, *exc) -> None:
        state.enabled = self._prev

    def __call__(self, func):
        mode = self._mode
        if inspect.isgeneratorfunction(func):

            @functools.wraps(func)
            def generator_wrapper(*args, **kwargs):
                gen = func(*args, **kwargs)
                prev = state.enabled
                try:
                    state.enabled = mode
                    value = next(gen)
                    while True:
                        state.enabled = prev
                        sent = yield value
                        state.enabled = mode
                        value = gen.send(sent)
                except StopIteration as stop:
                    return stop.value
                finally:
                    state.enabled = prev

            return generator_wrapper

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            prev = state.enabled
            state.enabled = mode
            try:
                return func(*args, **kwargs)
            finally:
                state.enabled = prev

        return wrapper


class no_grad(_GradModeContext):  # noqa: N801 - PyTorch's name
    """Disable graph recording: results of ops inside have ``requires_grad=False``."""

    _mode = False


class enable_grad(_GradModeContext):  # noqa: N801 - PyTorch's name
    """Re-enable graph recording inside a ``no_grad`` region."""

    _mode = True


class set_grad_enabled(_GradModeContext):  # noqa: N801 - PyTorch's name
    """Set grad mode to ``mode``: immediately when called, restored on exit when used with ``with``."""

    def __new__(cls, mode: bool):
        return object.__new__(cls)

    def __init__(self, mode: bool) -> None:
        if not isinstance(mode, bool):
            raise TypeError(f"set_grad_enabled expects a bool, got {type(mode).__name__}")
        self._prev = state.enabled
        self._mode = mode
        state.enabled = mode

    def __enter__(self) -> None:
        pass

    def __exit__(self, *exc) -> None:
        state.enabled = self._prev

    def __call__(self, func):
        state.enabled = self._prev  # as a decorator it applies per call, not from now on
        return super().__call__(func)
