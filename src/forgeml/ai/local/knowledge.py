"""The offline advisor's research: a curated knowledge base of training techniques and their papers.

``knowledge.json`` (package data beside this file) lists well-established
techniques, each with a summary, the situation it fits, the diagnoses
(``forgeml.specs.DIAGNOSES``) and task domains it applies to, keywords, an
optional typed action, and its paper citations. :func:`search` ranks them by
domain match, diagnosis match and keyword overlap with the question.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from ...specs import DIAGNOSES, ResearchInsight

__all__ = ["DOMAINS", "Technique", "load_knowledge", "normalize_domain", "search"]

DOMAINS = ("general", "computer_vision", "nlp", "tabular", "time_series", "audio")
_DOMAIN_ALIASES = {
    "computer_vision": (
        "computer vision",
        "vision",
        "cv",
        "image",
        "images",
        "imaging",
        "image classification",
        "object detection",
        "segmentation",
        "photo",
        "photos",
        "visual",
        "cnn",
        "mnist",
        "cifar",
        "imagenet",
    ),
    "nlp": (
        "nlp",
        "text",
        "language",
        "natural language",
        "natural language processing",
        "language modeling",
        "language modelling",
        "llm",
        "translation",
        "sentiment",
        "text classification",
        "token",
        "tokens",
    ),
    "tabular": ("tabular", "structured", "table", "tables", "csv", "spreadsheet", "relational", "features"),
    "time_series": ("time series", "timeseries", "forecasting", "forecast", "temporal", "sensor", "signal"),
    "audio": ("audio", "speech", "sound", "acoustic", "asr", "music"),
    "general": (
        "general",
        "any",
        "all",
        "ml",
        "machine learning",
        "deep learning",
        "neural network",
        "neural networks",
    ),
}
_STOPWORDS = frozenset(
    "a an and are as at be by can do does for from how i in is it its my of on or should so that the their this to "
    "what when which why with without you your me we our model models training train trained use using get help".split()
)

# score weights: a domain match, a general-purpose entry, a domain mismatch, a diagnosis match, keyword hits
# (and small bonuses: the diagnosis is the entry's main one, the entry is specific to the domain)
_W_DOMAIN, _W_GENERAL, _W_MISMATCH, _W_DIAGNOSIS, _W_STRONG, _W_WEAK = 3.0, 1.5, -2.0, 4.0, 2.0, 0.5
_W_PRIMARY, _W_SPECIFIC = 1.0, 1.0


def _stem(token: str) -> str:
    for suffix in ("ization", "isation", "ing", "ies", "es", "s"):
        if token.endswith(suffix) and len(token) - len(suffix) >= 3:
            return token[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return token


def _tokens(text: str) -> set[str]:
    return {_stem(t) for t in re.findall(r"[a-z0-9]+", text.lower()) if t not in _STOPWORDS}


def normalize_domain(domain: str | None) -> str | None:
    """One of ``DOMAINS`` for a free-form domain name ("vision", "Image classification", "NLP"); None if unknown."""
    if not domain:
        return "general"
    text = re.sub(r"[-_/]+", " ", domain.strip().lower())
    text = re.sub(r"\s+", " ", text)
    for name, aliases in _DOMAIN_ALIASES.items():
        if text == name.replace("_", " ") or text in aliases:
            return name
    words = set(text.split())
    for name, aliases in _DOMAIN_ALIASES.items():
        if name == "general":
            continue
        if any((alias in text) if " " in alias else (alias in words) for alias in aliases):
            return name
    return None


@dataclass(frozen=True)
class Technique:
    id: str
    insight: ResearchInsight
    diagnoses: tuple[str, ...]
    domains: tuple[str, ...]
    strong: frozenset[str]  # tokens of the name, id and keywords
    weak: frozenset[str]  # tokens of the summary and situation


@lru_cache(maxsize=1)
def load_knowledge() -> tuple[Technique, ...]:
    """Every technique of ``knowledge.json``, validated (citations, actions, diagnoses, domains)."""
    raw = json.loads(resources.files(__package__).joinpath("knowledge.json").read_text(encoding="utf-8"))
    out = []
    for entry in raw["techniques"]:
        unknown = set(entry["diagnoses"]) - set(DIAGNOSES)
        if unknown:
            raise ValueError(f"knowledge.json: {entry['id']} names unknown diagnoses {sorted(unknown)}")
        bad_domains = set(entry["domains"]) - set(DOMAINS)
        if bad_domains:
            raise ValueError(f"knowledge.json: {entry['id']} names unknown domains {sorted(bad_domains)}")
        insight = ResearchInsight(
            technique=entry["technique"],
            summary=entry["summary"],
            applies_when=entry["applies_when"],
            action=entry.get("action"),
            citations=entry["citations"],
        )
        if not insight.citations:
            raise ValueError(f"knowledge.json: {entry['id']} has no citation")
        strong = _tokens(" ".join([entry["id"].replace("_", " "), entry["technique"], *entry["keywords"]]))
        out.append(
            Technique(
                id=entry["id"],
                insight=insight,
                diagnoses=tuple(entry["diagnoses"]),
                domains=tuple(entry["domains"]),
                strong=frozenset(strong),
                weak=frozenset(_tokens(entry["summary"] + " " + entry["applies_when"]) - strong),
            )
        )
    return tuple(out)


def _score(t: Technique, domain: str | None, diagnosis: str | None, query: set[str]) -> float:
    score = 0.0
    if domain is not None and domain != "general":
        if domain in t.domains:
            score += _W_DOMAIN
        elif "general" in t.domains:
            score += _W_GENERAL
        else:
            score += _W_MISMATCH
    elif "general" in t.domains:
        score += _W_GENERAL
    if diagnosis is not None and diagnosis in t.diagnoses:
        score += _W_DIAGNOSIS + (_W_PRIMARY if t.diagnoses[0] == diagnosis else 0.0)
    if domain not in (None, "general") and domain in t.domains:
        score += _W_SPECIFIC / len(t.domains)  # a technique made for this domain beats a general one
    score += _W_STRONG * len(query & t.strong) + _W_WEAK * len(query & t.weak)
    return score


def search(domain: str, question: str | None = None, diagnosis: str | None = None, k: int = 5) -> list[ResearchInsight]:
    """The ``k`` techniques that best fit the domain, the diagnosis and the question, best first."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if diagnosis is not None:
        diagnosis = diagnosis.strip().lower()
        if diagnosis not in DIAGNOSES:
            raise ValueError(f"diagnosis must be one of {', '.join(DIAGNOSES)}, got {diagnosis!r}")
    canonical = normalize_domain(domain)
    query = _tokens(question or "")
    if canonical is None:  # an unfamiliar domain still says something: match its words as keywords
        query |= _tokens(domain)
    scored = [(_score(t, canonical, diagnosis, query), i, t) for i, t in enumerate(load_knowledge())]
    scored.sort(key=lambda s: (-s[0], s[1]))
    chosen = [t for score, _, t in scored if score > 0][:k]
    if len(chosen) < k:  # top up with neutral entries, never with ones for another domain
        chosen += [t for score, _, t in scored if score == 0][: k - len(chosen)]
    return [t.insight.model_copy(deep=True) for t in chosen]
