"""ForgeML's offline advisor: the ``local`` provider, which needs no network and no API key.

It does the four AI tasks with real computation instead of a remote model:

- synthetic data: SMOTE-style interpolation between same-class neighbours (or a
  per-class Gaussian), see :mod:`.synthetic`;
- analysis: a rule engine over the metric history, see :mod:`.analysis`;
- research: a curated knowledge base of techniques with their papers
  (``knowledge.json``), see :mod:`.knowledge`;
- architectures: rule-based variants of the current ``ModelSpec``, see
  :mod:`.architectures`.

The methods are synchronous and return plain results; the orchestrator wraps
them in the public responses with ``provider="local"``, ``model="offline-advisor"``
and ``offline=True``. Like the rest of ``forgeml.ai`` this package uses NumPy and
``forgeml.specs`` only, never the tensor stack.
"""

from __future__ import annotations

import numpy as np

from ...specs import ArchitectureCandidate, ModelSpec, ResearchInsight, TrainingContext, TrainingMetrics
from .analysis import AnalysisResult, analyze_metrics
from .architectures import propose_architectures
from .knowledge import load_knowledge, search
from .synthetic import SyntheticResult, generate_synthetic

__all__ = ["AnalysisResult", "LocalAdvisor", "SyntheticResult", "load_knowledge"]


class LocalAdvisor:
    """The built-in offline advisor. ``seed`` makes synthetic data reproducible (one generator per advisor)."""

    name = "local"
    model = "offline-advisor"

    def __init__(self, seed: int | None = None):
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def __repr__(self) -> str:
        return f"LocalAdvisor(seed={self.seed!r})"

    def synthetic_data(
        self,
        model_type: str,
        features: np.ndarray,
        labels: np.ndarray | None,
        target_count: int,
        *,
        method: str = "smote",
        k_neighbors: int = 5,
        noise: float = 0.05,
    ) -> SyntheticResult:
        """``target_count`` new rows generated from the sample ``features`` (and ``labels``)."""
        return generate_synthetic(
            self._rng, model_type, features, labels, target_count, method=method, k_neighbors=k_neighbors, noise=noise
        )

    def analyze(
        self, model_description: str, metrics: TrainingMetrics, context: TrainingContext | dict | None = None
    ) -> AnalysisResult:
        """A diagnosis of the run, the evidence from its curves (and its ``TrainingContext``: optimizer, inputs,
        per-layer statistics, changes tried), and typed recommendations."""
        return analyze_metrics(model_description, metrics, context)

    def research(
        self, domain: str, question: str | None = None, diagnosis: str | None = None, k: int = 5
    ) -> list[ResearchInsight]:
        """The ``k`` knowledge-base techniques that best fit the domain, diagnosis and question, with citations."""
        return search(domain, question=question, diagnosis=diagnosis, k=k)

    def architectures(
        self,
        model_description: str,
        current: ModelSpec | None,
        input_size: int | list[int],
        num_classes: int,
        k: int = 3,
    ) -> list[ArchitectureCandidate]:
        """``k`` distinct variants of ``current`` (or of a default MLP), each valid for the task."""
        return propose_architectures(model_description, current, input_size, num_classes, k)
