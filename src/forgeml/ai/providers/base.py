"""The contract every remote provider implements: one structured-JSON completion call.

Providers know their wire protocol (through the official SDK) and nothing about
tasks: the orchestrator writes the prompts, validates the JSON against the task's
schema, retries, falls back and counts the cost. A provider maps every SDK
failure to one of the typed errors in :mod:`forgeml.ai.errors`.
"""

from __future__ import annotations

import abc
import asyncio
import importlib
import threading
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, SecretStr

__all__ = ["Message", "ProviderConfig", "RemoteProvider", "StructuredReply", "Usage"]


class ProviderConfig(BaseModel):
    """Settings of one provider. The key is a ``SecretStr``: it never appears in a repr, log or dump."""

    model_config = ConfigDict(extra="forbid")

    name: str
    api_key: SecretStr | None = None
    base_url: str | None = None
    model: str
    enabled: bool = True
    timeout: float = 60.0

    @property
    def configured(self) -> bool:
        return self.enabled and self.api_key is not None and bool(self.api_key.get_secret_value())


@dataclass
class Usage:
    """Token counts of one call, and its cost when the provider reports it (Perplexity does)."""

    input_tokens: int = 0
    output_tokens: int = 0
    reported_cost_usd: float | None = None


@dataclass
class Message:
    role: str  # "user" or "assistant"
    content: str


@dataclass
class StructuredReply:
    """A provider's answer: the parsed JSON object, the text it came from, and what the call cost."""

    data: dict[str, Any]
    raw_text: str
    model: str
    usage: Usage = field(default_factory=Usage)
    extras: dict[str, Any] = field(default_factory=dict)  # e.g. Perplexity's "citations" and "search_results"


_SDK_IMPORT_LOCK = threading.Lock()
_IMPORTED_SDKS: set[str] = set()  # SDK modules whose import has finished (sys.modules also holds half-done ones)


class RemoteProvider(abc.ABC):
    """A provider reached over the network through its official SDK.

    Subclasses set ``name``, ``key_env`` (the variable the key comes from),
    ``default_model`` and ``default_base_url``, and implement :meth:`complete`.
    SDK clients are created with ``max_retries=0``: the orchestrator owns the
    only retry loop.
    """

    name: ClassVar[str]
    key_env: ClassVar[str]
    default_model: ClassVar[str]
    default_base_url: ClassVar[str | None] = None
    sdk_modules: ClassVar[tuple[str, ...]] = ()  # what complete() imports: warm_up() imports it off the event loop

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config

    async def warm_up(self) -> None:
        """Import the SDK (``sdk_modules``) in a thread, once, before the first call: an SDK can take seconds
        to import on a busy machine, which must neither block the event loop nor count against a call's
        timeout. A missing SDK is left to :meth:`complete`, which says how to install it."""
        missing = [m for m in self.sdk_modules if m not in _IMPORTED_SDKS]
        if not missing:
            return

        def load() -> None:
            # One import at a time, and a module counts as loaded only once its import has finished: two tasks
            # warming up at once (a set-up review and a synthetic-data request) would otherwise import a package
            # from two threads, and one could see it half-initialised ("partially initialized module").
            with _SDK_IMPORT_LOCK:
                for module in missing:
                    try:
                        importlib.import_module(module)
                    except ImportError:
                        return
                    _IMPORTED_SDKS.add(module)

        await asyncio.to_thread(load)

    @property
    def model(self) -> str:
        return self.config.model

    @property
    def configured(self) -> bool:
        return self.config.configured

    @abc.abstractmethod
    async def complete(
        self,
        *,
        system: str,
        messages: list[Message],
        schema: type[BaseModel],
        schema_name: str,
        timeout: float,
        max_output_tokens: int = 4096,
    ) -> StructuredReply:
        """Ask for one JSON object matching ``schema``; raise a typed ``ProviderError`` on failure.

        The reply's ``data`` is the parsed JSON object (the orchestrator
        validates it against ``schema``); non-JSON output raises ``BadOutput``
        carrying the raw text.
        """

    async def aclose(self) -> None:  # noqa: B027 - an optional hook: a no-op unless a provider holds connections
        """Release the SDK client's connections."""
