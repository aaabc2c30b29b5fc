"""AI services as teachers: provider clients, the offline advisor and ``AIServiceOrchestrator``.

This layer works on plain lists and NumPy arrays; it never imports the tensor stack.
It needs the ``ai`` extra: ``pip install "forgeml[ai]"``.
"""

try:
    import pydantic
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        'forgeml.ai needs pydantic and the provider SDKs; install them with: pip install "forgeml[ai]"'
    ) from exc

from .errors import AIError, BudgetExceeded, ProviderError
from .local import LocalAdvisor
from .orchestrator import (
    AIServiceOrchestrator,
    AIStatus,
    AuditRecord,
    ProviderStatus,
    describe_attempts,
    merge_analyses,
)
from .settings import TASKS, AISettings

__all__ = [
    "TASKS",
    "AIError",
    "AIServiceOrchestrator",
    "AISettings",
    "AIStatus",
    "AuditRecord",
    "BudgetExceeded",
    "LocalAdvisor",
    "ProviderError",
    "ProviderStatus",
    "describe_attempts",
    "merge_analyses",
]
