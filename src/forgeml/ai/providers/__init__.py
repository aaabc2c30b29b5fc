"""Remote AI providers behind one contract (:class:`RemoteProvider`); each SDK is imported only when used.

``forgeml.ai.models.build_provider(name, config)`` makes one by name; the
defaults (model, base URL, key variable, prices) live in ``forgeml.ai.models``.
"""

from .base import Message, ProviderConfig, RemoteProvider, StructuredReply, Usage

__all__ = ["Message", "ProviderConfig", "RemoteProvider", "StructuredReply", "Usage"]
