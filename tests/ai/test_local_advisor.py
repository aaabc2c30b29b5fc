"""The offline advisor (``forgeml.ai.local``): synthetic data, the analysis rule engine, the knowledge base
and the architecture variants, all without network or API keys."""

import ast
import json
import math
import re
import tomllib
from pathlib import Path

import numpy as np
import pytest

from forgeml.ai.local import AnalysisResult, LocalAdvisor, SyntheticResult, load_knowledge
from forgeml.specs import (
    DIAGNOSES,
    ArchitectureCandidate,
    ModelAnalysisResponse,
    ModelSpec,
    Recommendation,
    ResearchInsight,
    TrainingMetrics,
)

LOCAL_DIR = Path(__file__).resolve().parents[2] / "src" / "forgeml" / "ai" / "local"
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


# =============================================================================== helpers
def _blobs(rng, sizes=(60, 30, 10), dim=4, spread=1.0):
    """Well separated Gaussian classes with non-integer values."""
    xs, ys = [], []
    for c, n in enumerate(sizes):
        xs.append(rng.normal(loc=4.0 * c, scale=spread, size=(n, dim)) + 0.123)
        ys.append(np.full(n, c))
    return np.vstack(xs), np.concatenate(ys)


def _point_segment_distance(p, a, b):
    ab = b - a
    denom = float(ab @ ab)
    t = 0.0 if denom == 0 else float(np.clip((p - a) @ ab / denom, 0.0, 1.0))
    return float(np.linalg.norm(p - (a + t * ab))), t


def _actions(result):
    return {r.action.action: r.action for r in result.recommendations}


def _metrics(**curves):
    return TrainingMetrics(**{k: [None if v is None else float(v) for v in vals] for k, vals in curves.items()})


E20 = np.arange(1, 21, dtype=np.float64)


def healthy_curves(noise=0.0, rng=None):
    t = 2.3 * np.exp(-0.2 * E20) + 0.1
    v = 2.3 * np.exp(-0.2 * E20) + 0.15
    if noise:
        t = t * (1 + noise * rng.standard_normal(len(t)))
        v = v * (1 + noise * rng.standard_normal(len(v)))
    return {"train_loss": t, "val_loss": v}


def overfitting_curves(val_slope=0.05):
    t = 2.0 * np.exp(-0.25 * E20)
    v = 2.0 * np.exp(-0.25 * E20) + 0.3 + val_slope * np.maximum(E20 - 8, 0)
    return {"train_loss": t, "val_loss": v}


def plateau_curves():
    base = np.maximum(2.3 * np.exp(-0.6 * E20), 0.2)
    wiggle = 0.0005 * np.sin(E20)
    return {"train_loss": base + 0.2 + wiggle, "val_loss": base + 0.25 - wiggle}


def underfitting_curves():
    t = 2.3 - 0.3 * (1 - np.exp(-E20))
    return {
        "train_loss": t,
        "val_loss": t + 0.02,
        "train_accuracy": 0.25 + 0.1 * (1 - np.exp(-E20)),
        "val_accuracy": 0.24 + 0.1 * (1 - np.exp(-E20)),
    }


def noisy_curves():
    zigzag = np.where(E20 % 2 == 0, 1.0, -1.0)
    return {"train_loss": np.exp(-0.05 * E20) + 0.15 * zigzag, "val_loss": 1.05 * np.exp(-0.05 * E20) - 0.15 * zigzag}


# ========================================================================= the interface
def test_advisor_identity_and_result_types():
    advisor = LocalAdvisor(seed=0)
    assert advisor.name == "local"
    assert advisor.model == "offline-advisor"
    x, y = _blobs(np.random.default_rng(0))
    assert isinstance(advisor.synthetic_data("classifier", x, y, 5), SyntheticResult)
    result = advisor.analyze("an MLP", _metrics(**healthy_curves()))
    assert isinstance(result, AnalysisResult)
    assert result.diagnosis in DIAGNOSES
    # What the orchestrator builds from it must validate as the public response.
    response = ModelAnalysisResponse(
        provider="local",
        model="offline-advisor",
        offline=True,
        diagnosis=result.diagnosis,
        evidence=result.evidence,
        recommendations=result.recommendations,
    )
    assert response.diagnosis == "healthy"


def test_local_package_imports_no_tensor_stack():
    """forgeml.ai must not import the tensor stack: only the standard library, numpy, and forgeml.specs."""
    allowed_roots = {
        "numpy",
        "__future__",
        "json",
        "math",
        "re",
        "dataclasses",
        "functools",
        "importlib",
        "collections",
    }
    files = sorted(LOCAL_DIR.glob("*.py"))
    assert files
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert alias.name.split(".")[0] in allowed_roots, f"{path.name} imports {alias.name}"
            elif isinstance(node, ast.ImportFrom):
                if node.level == 0:
                    assert node.module.split(".")[0] in allowed_roots, f"{path.name} imports from {node.module}"
                elif node.level == 3:
                    assert node.module == "specs", f"{path.name} imports from forgeml.{node.module}"
                else:
                    assert node.level == 1, f"{path.name} has a relative import outside forgeml.ai.local"


# ======================================================================== synthetic data
def test_smote_samples_are_finite_in_range_and_labelled():
    x, y = _blobs(np.random.default_rng(1))
    result = LocalAdvisor(seed=3).synthetic_data("classifier", x, y, 200)
    assert len(result.samples) == 200
    feats = np.array([s.features for s in result.samples])
    labels = np.array([s.label for s in result.samples])
    assert feats.shape == (200, x.shape[1])
    assert np.isfinite(feats).all()
    assert set(labels.tolist()) <= {0, 1, 2}
    assert all(type(s.label) is int for s in result.samples)
    assert (feats >= x.min(axis=0) - 1e-12).all() and (feats <= x.max(axis=0) + 1e-12).all()
    for c in range(3):  # class-conditional: each class stays inside its own observed box
        own = x[y == c]
        mine = feats[labels == c]
        assert (mine >= own.min(axis=0) - 1e-12).all() and (mine <= own.max(axis=0) + 1e-12).all()
    assert any("SMOTE" in note for note in result.notes)


def test_class_proportions_follow_the_sample():
    x, y = _blobs(np.random.default_rng(2), sizes=(60, 30, 10))
    result = LocalAdvisor(seed=0).synthetic_data("classifier", x, y, 100)
    counts = {c: sum(s.label == c for s in result.samples) for c in (0, 1, 2)}
    assert counts == {0: 60, 1: 30, 2: 10}
    odd = LocalAdvisor(seed=0).synthetic_data("classifier", x, y, 7)
    odd_counts = {c: sum(s.label == c for s in odd.samples) for c in (0, 1, 2)}
    assert sum(odd_counts.values()) == 7
    assert odd_counts[0] >= odd_counts[1] >= odd_counts[2]
    assert abs(odd_counts[0] - 4.2) <= 1 and abs(odd_counts[1] - 2.1) <= 1


def test_synthetic_data_is_deterministic_under_a_seed():
    x, y = _blobs(np.random.default_rng(3), sizes=(700, 600), dim=6)
    a = LocalAdvisor(seed=11).synthetic_data("classifier", x, y, 900)  # > 512 distinct bases: the chunked path
    b = LocalAdvisor(seed=11).synthetic_data("classifier", x, y, 900)
    c = LocalAdvisor(seed=12).synthetic_data("classifier", x, y, 900)
    assert [s.model_dump() for s in a.samples] == [s.model_dump() for s in b.samples]
    assert [s.model_dump() for s in a.samples] != [s.model_dump() for s in c.samples]


def test_smote_points_lie_on_segments_between_same_class_nearest_neighbours():
    rng = np.random.default_rng(4)
    x, y = _blobs(rng, sizes=(25, 15), dim=3)
    x[:, 1] *= 50.0  # mixed scales: neighbours are found on standardised features
    result = LocalAdvisor(seed=5).synthetic_data("classifier", x, y, 150, k_neighbors=1, noise=0.0)
    for s in result.samples:
        p = np.asarray(s.features)
        own = x[y == s.label]
        z = (own - own.mean(axis=0)) / own.std(axis=0)
        best = (math.inf, None, None)
        for i in range(len(own)):
            for j in range(len(own)):
                if i != j:
                    d, _ = _point_segment_distance(p, own[i], own[j])
                    if d < best[0]:
                        best = (d, i, j)
        d, i, j = best
        assert d < 1e-9 * max(1.0, float(np.abs(own).max())), f"sample {p} is off every same-class segment"
        # with k_neighbors=1 the partner is the base row's nearest neighbour (or the base is the partner's)
        dist = np.linalg.norm(z[:, None, :] - z[None, :, :], axis=-1)
        np.fill_diagonal(dist, np.inf)
        assert int(np.argmin(dist[i])) == j or int(np.argmin(dist[j])) == i


def test_smote_noise_is_small_and_scaled_per_feature():
    rng = np.random.default_rng(6)
    x = np.column_stack([rng.normal(0, 1, 200), rng.normal(0, 100, 200)]) + 0.5
    y = np.zeros(200, dtype=int)
    exact = LocalAdvisor(seed=1).synthetic_data("classifier", x, y, 300, noise=0.0)
    noisy = LocalAdvisor(seed=1).synthetic_data("classifier", x, y, 300, noise=0.05)
    diff = np.array([s.features for s in noisy.samples]) - np.array([s.features for s in exact.samples])
    assert np.abs(diff).max() > 0
    ratio = diff.std(axis=0) / x.std(axis=0)
    assert np.all(ratio < 0.08) and np.all(ratio > 0.02)


def test_gaussian_method_fits_each_class():
    rng = np.random.default_rng(7)
    x = np.vstack(
        [rng.normal([0.0, 10.0], [1.0, 2.0], size=(400, 2)), rng.normal([8.0, -5.0], [0.5, 1.0], size=(400, 2))]
    )
    y = np.array(["cat"] * 400 + ["dog"] * 400)
    result = LocalAdvisor(seed=2).synthetic_data("classifier", x, y, 2000, method="gaussian")
    feats = np.array([s.features for s in result.samples])
    labels = np.array([s.label for s in result.samples])
    assert set(labels) == {"cat", "dog"}
    for name in ("cat", "dog"):
        own, real = feats[labels == name], x[y == name]
        assert len(own) == 1000
        np.testing.assert_allclose(own.mean(axis=0), real.mean(axis=0), atol=0.15 * real.std(axis=0).max())
        ratio = own.std(axis=0) / real.std(axis=0)  # a fitted Gaussian, a little narrower for the clipping
        assert np.all(ratio > 0.8) and np.all(ratio < 1.1)
        assert (own >= real.min(axis=0)).all() and (own <= real.max(axis=0)).all()
    assert any("Gaussian" in note for note in result.notes)


def test_regressor_interpolates_targets_with_the_rows():
    rng = np.random.default_rng(8)
    x = rng.uniform(-3, 3, size=(80, 3))
    target = 2.0 * x[:, 0] - 0.5 * x[:, 2] + 1.0  # linear: interpolation keeps it exactly
    result = LocalAdvisor(seed=0).synthetic_data("regressor", x, target, 120, noise=0.0)
    feats = np.array([s.features for s in result.samples])
    labels = np.array([s.label for s in result.samples], dtype=float)
    np.testing.assert_allclose(labels, 2.0 * feats[:, 0] - 0.5 * feats[:, 2] + 1.0, atol=1e-9)
    assert labels.min() >= target.min() and labels.max() <= target.max()
    gauss = LocalAdvisor(seed=0).synthetic_data("regressor", x, target, 2000, method="gaussian")
    gf = np.array([s.features for s in gauss.samples])
    gl = np.array([s.label for s in gauss.samples], dtype=float)
    assert np.corrcoef(gf[:, 0], gl)[0, 1] > 0.9  # the full covariance keeps the feature-target relation


def test_unlabelled_rows_are_interpolated_without_labels():
    x = np.random.default_rng(9).normal(size=(30, 2))
    result = LocalAdvisor(seed=0).synthetic_data("classifier", x, None, 12)
    assert len(result.samples) == 12 and all(s.label is None for s in result.samples)
    assert any("no labels" in note for note in result.notes)


def test_non_finite_rows_are_dropped_with_a_note():
    x, y = _blobs(np.random.default_rng(10), sizes=(20, 20), dim=2)
    x[3, 0] = np.nan
    x[25, 1] = np.inf
    result = LocalAdvisor(seed=0).synthetic_data("classifier", x, y, 40)
    assert any("dropped 2 of 40 rows" in note for note in result.notes)
    assert np.isfinite(np.array([s.features for s in result.samples])).all()


def test_a_single_row_class_falls_back_to_noise_around_it():
    rng = np.random.default_rng(11)
    x = np.vstack([rng.normal(0, 1, size=(40, 2)) + 0.5, [[5.25, -4.75]]])
    y = np.array([0] * 40 + [1])
    result = LocalAdvisor(seed=0).synthetic_data("classifier", x, y, 82)
    lonely = np.array([s.features for s in result.samples if s.label == 1])
    assert len(lonely) == 2
    assert np.all(np.abs(lonely - [5.25, -4.75]) <= 0.05 * 5 * x.std(axis=0))
    assert any("single row" in note for note in result.notes)


def test_whole_number_columns_stay_whole():
    rng = np.random.default_rng(12)
    x = np.column_stack([rng.normal(size=50) + 0.1, rng.integers(0, 2, size=50), rng.integers(0, 10, size=50)])
    result = LocalAdvisor(seed=0).synthetic_data("classifier", x, rng.integers(0, 2, size=50), 60)
    feats = np.array([s.features for s in result.samples])
    assert set(np.unique(feats[:, 1])) <= {0.0, 1.0}
    np.testing.assert_array_equal(feats[:, 2], np.round(feats[:, 2]))
    assert np.any(feats[:, 0] != np.round(feats[:, 0]))


def test_float_class_labels_come_back_as_ints_and_zero_count_is_empty():
    x, y = _blobs(np.random.default_rng(13), sizes=(10, 10), dim=2)
    result = LocalAdvisor(seed=0).synthetic_data("classifier", x, y.astype(float), 6)
    assert {type(s.label) for s in result.samples} == {int}
    assert LocalAdvisor(seed=0).synthetic_data("classifier", x, y, 0).samples == []


@pytest.mark.parametrize(
    ("features", "labels", "kwargs", "message"),
    [
        (np.zeros((0, 3)), None, {}, "empty sample"),
        (np.arange(5.0), None, {}, "2-D"),
        (np.ones((4, 2)), np.array([0, 1, 0]), {}, "must match"),
        (np.ones((4, 2)), None, {"method": "vae"}, "method must be one of"),
        (np.ones((4, 2)), None, {"k_neighbors": 0}, "k_neighbors"),
        (np.ones((4, 2)), None, {"noise": -1.0}, "noise"),
        (np.ones((4, 2)), None, {"target_count": -1}, "target_count"),
        (np.full((3, 2), np.nan), None, {}, "no usable rows"),
        ([["a", "b"]], None, {}, "numeric"),
    ],
)
def test_synthetic_input_errors_are_clear(features, labels, kwargs, message):
    count = kwargs.pop("target_count", 5)
    with pytest.raises(ValueError, match=message):
        LocalAdvisor(seed=0).synthetic_data("classifier", features, labels, count, **kwargs)


# ============================================================================== analysis
def test_nan_loss_is_diverging_with_lr_cut_clipping_and_restore():
    m = _metrics(train_loss=[2.3, 1.8, 1.4, 1.2, float("nan"), float("nan")], val_loss=[2.4, 1.9, 1.5, 1.3, None, None])
    result = LocalAdvisor().analyze("MLP, adam lr=0.001", m)
    assert result.diagnosis == "diverging"
    actions = _actions(result)
    assert actions["scale_learning_rate"].factor == pytest.approx(0.1)
    assert actions["enable_grad_clipping"].max_norm == pytest.approx(1.0)
    assert "restore_best_checkpoint" in actions
    assert any("nan" in e.lower() and "epoch 5" in e for e in result.evidence)
    lr_rec = next(r for r in result.recommendations if r.action.action == "scale_learning_rate")
    assert "0.001 -> 0.0001" in lr_rec.rationale
    assert all(0.8 <= r.confidence <= 1.0 for r in result.recommendations)


def test_exploding_loss_without_nan_is_diverging():
    m = _metrics(
        train_loss=[2.3, 1.5, 1.1, 0.9, 0.85, 1.3, 2.8, 9.0],
        grad_norm=[1.0, 0.9, 1.1, 0.8, 1.0, 3.0, 12.0, 80.0],
    )
    result = LocalAdvisor().analyze("", m)
    assert result.diagnosis == "diverging"
    actions = _actions(result)
    assert actions["scale_learning_rate"].factor == pytest.approx(0.1)
    assert actions["enable_grad_clipping"].max_norm == pytest.approx(1.5)  # 1.5 x the healthy median norm
    assert "restore_best_checkpoint" in actions
    assert any("0.85" in e and "epoch 5" in e for e in result.evidence)
    assert any("grad_norm" in e for e in result.evidence)


def test_overfitting_is_detected_with_regularisation_numbers():
    result = LocalAdvisor().analyze(
        "classifier, dropout=0.2, weight_decay=1e-4, lr=0.01", _metrics(**overfitting_curves())
    )
    assert result.diagnosis == "overfitting"
    actions = _actions(result)
    assert actions["set_dropout"].p == pytest.approx(0.4)
    assert actions["set_weight_decay"].value == pytest.approx(5e-4)
    assert actions["set_label_smoothing"].x == pytest.approx(0.1)
    assert {"early_stop", "restore_best_checkpoint"} <= set(actions)
    assert any("val_loss rose" in e and "epoch 9" in e for e in result.evidence)


def test_overfitting_confidence_grows_with_the_evidence():
    mild = LocalAdvisor().analyze("", _metrics(**overfitting_curves(val_slope=0.02)))
    strong = LocalAdvisor().analyze("", _metrics(**overfitting_curves(val_slope=0.08)))
    assert mild.diagnosis == strong.diagnosis == "overfitting"
    assert max(r.confidence for r in strong.recommendations) > max(r.confidence for r in mild.recommendations)


def test_a_widening_gap_with_flat_validation_is_overfitting():
    t = 2.0 * np.exp(-0.3 * E20) + 0.02
    v = np.maximum(2.0 * np.exp(-0.3 * E20) + 0.3, 0.5) + 0.002 * np.sin(E20)
    result = LocalAdvisor().analyze("", _metrics(train_loss=t, val_loss=v))
    assert result.diagnosis == "overfitting"
    assert any("gap widened" in e for e in result.evidence)
    assert "set_weight_decay" in _actions(result)


def test_plateau_is_detected_and_the_learning_rate_lowered():
    result = LocalAdvisor().analyze("lr=0.01", _metrics(**plateau_curves(), learning_rate=[0.01] * 20))
    assert result.diagnosis == "plateau"
    actions = _actions(result)
    assert actions["scale_learning_rate"].factor == pytest.approx(0.5)
    assert actions["switch_scheduler"].name == "ReduceLROnPlateau"
    assert actions["switch_scheduler"].params["factor"] == pytest.approx(0.5)
    assert any("below the 1.0% threshold" in e for e in result.evidence)


def test_plateau_after_lr_decay_suggests_a_restart_not_a_smaller_rate():
    lr = (1e-3 * 0.7**E20).tolist()
    result = LocalAdvisor().analyze("", _metrics(**plateau_curves(), learning_rate=lr))
    assert result.diagnosis == "plateau"
    actions = _actions(result)
    assert "scale_learning_rate" not in actions
    assert actions["switch_scheduler"].name == "CosineAnnealingLR"
    assert actions["switch_scheduler"].params["T_max"] >= 10


def test_underfitting_is_detected_and_regularisation_relaxed():
    result = LocalAdvisor().analyze("MLP dropout=0.4 weight_decay=0.01", _metrics(**underfitting_curves()))
    assert result.diagnosis == "underfitting"
    actions = _actions(result)
    assert actions["set_dropout"].p == pytest.approx(0.2)
    assert actions["set_weight_decay"].value == pytest.approx(0.001)
    assert actions["scale_learning_rate"].factor > 1
    assert any("train_accuracy is only" in e for e in result.evidence)


def test_flat_high_loss_without_accuracy_is_underfitting():
    t = 2.3 - 0.3 * (1 - np.exp(-E20))
    result = LocalAdvisor().analyze("", _metrics(train_loss=t, val_loss=t + 0.01))
    assert result.diagnosis == "underfitting"
    assert result.recommendations


def test_noisy_curves_are_detected_and_the_batch_doubled():
    result = LocalAdvisor().analyze("batch_size=32, lr=3e-4", _metrics(**noisy_curves()))
    assert result.diagnosis == "noisy"
    actions = _actions(result)
    assert actions["set_batch_size"].n == 64
    assert actions["scale_learning_rate"].factor == pytest.approx(0.5)
    assert any("changed direction" in e for e in result.evidence)


def test_noisy_curves_detected_under_random_noise():
    rng = np.random.default_rng(14)
    diagnoses = []
    for _ in range(20):
        t = (np.exp(-0.05 * E20) + 0.3) * (1 + 0.2 * rng.standard_normal(20))
        diagnoses.append(LocalAdvisor().analyze("", _metrics(train_loss=t)).diagnosis)
    assert diagnoses.count("noisy") >= 17


def test_healthy_run_is_healthy_and_recommends_nothing():
    result = LocalAdvisor().analyze("", _metrics(**healthy_curves(), val_accuracy=np.linspace(0.5, 0.95, 20)))
    assert result.diagnosis == "healthy"
    assert result.recommendations == []
    assert any("still improving" in e for e in result.evidence)


def test_healthy_runs_with_small_noise_stay_healthy():
    rng = np.random.default_rng(15)
    for _ in range(25):
        assert LocalAdvisor().analyze("", _metrics(**healthy_curves(noise=0.03, rng=rng))).diagnosis == "healthy"


@pytest.mark.parametrize(
    "metrics",
    [
        TrainingMetrics(),
        TrainingMetrics(train_loss=[2.3]),
        TrainingMetrics(train_loss=[2.3, 1.9], val_loss=[2.4, 2.0]),
        TrainingMetrics(train_loss=[2.3, None, 1.9, None]),
        TrainingMetrics(train_loss=[1.0, 1.0, 1.0, 1.0]),
    ],
)
def test_too_short_histories_are_unknown(metrics):
    result = LocalAdvisor().analyze("", metrics)
    assert result.diagnosis == "unknown"
    assert result.recommendations == []
    assert result.evidence


def test_accuracy_only_histories_and_plain_dicts_are_read():
    result = LocalAdvisor().analyze("", {"train_accuracy": [50, 60, 68, 75, 80], "val_accuracy": [48, 58, 66, 73, 78]})
    assert result.diagnosis == "healthy"
    assert any("1 - train_accuracy" in e for e in result.evidence)


@pytest.mark.parametrize(
    "curves", [healthy_curves(), overfitting_curves(), plateau_curves(), underfitting_curves(), noisy_curves()]
)
def test_recommendations_are_typed_sorted_and_bounded(curves):
    result = LocalAdvisor().analyze("dropout=0.1 batch_size=16 lr=0.003", _metrics(**curves))
    confidences = [r.confidence for r in result.recommendations]
    assert confidences == sorted(confidences, reverse=True)
    for rec in result.recommendations:
        assert isinstance(rec, Recommendation)
        assert 0.0 <= rec.confidence <= 1.0 and rec.rationale
        # round-trips through JSON as the REST API would send it
        assert Recommendation.model_validate_json(rec.model_dump_json()) == rec
    assert len({r.action.action for r in result.recommendations}) == len(result.recommendations)


# ============================================================================== research
REQUIRED_TECHNIQUES = [
    "adamw", "cosine", "one-cycle", "label smoothing", "mixup", "cutmix", "dropout", "batch normalization",
    "layer normalization", "gradient norm clipping", "early stopping", "data augmentation", "distillation",
    "weight decay", "adam optimizer", "warmup", "stochastic depth", "residual", "he (kaiming)", "xavier",
    "stochastic weight averaging", "moving average of weights", "focal loss", "class-balanced", "lookahead",
    "gradient accumulation", "mixed-precision", "transformer", "rmsnorm", "gelu", "smote",
]  # fmt: skip


def test_knowledge_base_is_large_and_every_entry_is_cited():
    kb = load_knowledge()
    assert len(kb) >= 30
    names = [t.insight.technique.lower() for t in kb]
    for wanted in REQUIRED_TECHNIQUES:
        assert any(wanted in n for n in names), f"no technique about {wanted!r}"
    arxiv = re.compile(r"^\d{4}\.\d{4,5}$")
    for t in kb:
        assert t.insight.citations, t.id
        assert t.domains and set(t.diagnoses) <= set(DIAGNOSES)
        for c in t.insight.citations:
            assert c.title and isinstance(c.year, int) and 1950 <= c.year <= 2030, (t.id, c)
            assert c.arxiv_id or c.url, (t.id, c)
            if c.arxiv_id:
                assert arxiv.match(c.arxiv_id), (t.id, c.arxiv_id)
                yy, mm = int(c.arxiv_id[:2]), int(c.arxiv_id[2:4])
                assert 7 <= yy <= 30 and 1 <= mm <= 12
            if c.url:
                assert c.url.startswith("https://"), (t.id, c.url)


def test_knowledge_base_citations_are_the_real_papers():
    by_arxiv = {c.arxiv_id: c for t in load_knowledge() for c in t.insight.citations if c.arxiv_id}
    assert by_arxiv["1711.05101"].title == "Decoupled Weight Decay Regularization"
    assert by_arxiv["1412.6980"].title == "Adam: A Method for Stochastic Optimization"
    assert by_arxiv["1502.03167"].title.startswith("Batch Normalization")
    assert by_arxiv["1710.09412"].title.startswith("mixup")
    assert by_arxiv["1503.02531"].title == "Distilling the Knowledge in a Neural Network"
    assert by_arxiv["1512.03385"].title == "Deep Residual Learning for Image Recognition"
    assert by_arxiv["1706.03762"].title == "Attention Is All You Need"


def test_knowledge_json_ships_as_package_data():
    assert (LOCAL_DIR / "knowledge.json").is_file()
    raw = json.loads((LOCAL_DIR / "knowledge.json").read_text())
    assert len(raw["techniques"]) == len(load_knowledge())
    package_data = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["package-data"]
    assert "knowledge.json" in package_data["forgeml.ai.local"]


def test_research_matches_domain_and_diagnosis():
    kb = {t.insight.technique: t for t in load_knowledge()}
    insights = LocalAdvisor().research("computer_vision", diagnosis="overfitting", k=6)
    assert len(insights) == 6
    for insight in insights:
        assert isinstance(insight, ResearchInsight) and insight.citations
        entry = kb[insight.technique]
        assert "overfitting" in entry.diagnoses
        assert "computer_vision" in entry.domains or "general" in entry.domains


def test_research_never_offers_another_domains_technique():
    kb = {t.insight.technique: t for t in load_knowledge()}
    insights = LocalAdvisor().research("tabular", diagnosis="overfitting", k=12)
    assert insights
    for insight in insights:
        domains = kb[insight.technique].domains
        assert "tabular" in domains or "general" in domains, insight.technique
    assert "CutMix" not in [i.technique for i in insights]
    # techniques made for the domain come before general-purpose ones
    assert LocalAdvisor().research("tabular", diagnosis="underfitting", k=1)[0].technique.startswith("Gradient-boosted")


def test_research_uses_the_question_keywords():
    top = LocalAdvisor().research("general", question="How do I speed up training with fp16 half precision?", k=3)
    assert top[0].technique.startswith("Mixed-precision")
    imbalance = LocalAdvisor().research("tabular", question="class imbalance: the minority class is ignored", k=3)
    assert {i.technique for i in imbalance} == {"Class-balanced loss weighting", "SMOTE oversampling", "Focal loss"}
    diverging = LocalAdvisor().research(
        "nlp", question="loss becomes NaN, exploding gradients", diagnosis="diverging", k=3
    )
    assert any("clipping" in i.technique.lower() for i in diverging)
    clipping = next(i for i in diverging if "clipping" in i.technique.lower())
    assert clipping.action is not None and clipping.action.action == "enable_grad_clipping"


def test_research_domain_aliases_and_typed_actions():
    a = LocalAdvisor().research("Image classification", diagnosis="overfitting", k=5)
    b = LocalAdvisor().research("computer_vision", diagnosis="overfitting", k=5)
    assert [i.technique for i in a] == [i.technique for i in b]
    smoothing = LocalAdvisor().research("nlp", question="label smoothing", diagnosis="overfitting", k=3)
    found = next(i for i in smoothing if i.technique == "Label smoothing")
    assert found.action.action == "set_label_smoothing" and found.action.x == pytest.approx(0.1)


def test_research_input_errors():
    with pytest.raises(ValueError, match="diagnosis must be one of"):
        LocalAdvisor().research("nlp", diagnosis="sad")
    with pytest.raises(ValueError, match="k must be"):
        LocalAdvisor().research("nlp", k=0)


# ========================================================================= architectures
def _mlp(dropout=0.2):
    layers = [
        {"type": "Linear", "args": {"in_features": 20, "out_features": 64}},
        {"type": "ReLU"},
        {"type": "Dropout", "args": {"p": dropout}},
        {"type": "Linear", "args": {"in_features": 64, "out_features": 32}},
        {"type": "ReLU"},
        {"type": "Linear", "args": {"in_features": 32, "out_features": 3}},
    ]
    return ModelSpec(name="mlp", layers=layers)


def _assert_valid_and_distinct(candidates, input_size, num_classes, current=None):
    keys = set()
    if current is not None:
        keys.add(json.dumps([layer.model_dump() for layer in current.layers], sort_keys=True))
    for c in candidates:
        assert isinstance(c, ArchitectureCandidate) and c.rationale
        c.spec.check_task(input_size, num_classes)
        key = json.dumps([layer.model_dump() for layer in c.spec.layers], sort_keys=True)
        assert key not in keys, "duplicate or unchanged candidate"
        keys.add(key)


def test_default_mlp_variants_are_valid_and_distinct():
    candidates = LocalAdvisor().architectures("", None, 20, 3, k=3)
    assert len(candidates) == 3
    _assert_valid_and_distinct(candidates, 20, 3)
    assert all("default MLP" in c.rationale for c in candidates)


def test_underfitting_asks_for_capacity_first():
    current = _mlp()
    candidates = LocalAdvisor().architectures("the model is underfitting", current, 20, 3, k=3)
    _assert_valid_and_distinct(candidates, 20, 3, current)
    first = candidates[0]
    assert "Wider" in first.rationale and "underfitting" in first.rationale
    widths = [layer.args["out_features"] for layer in first.spec.layers if layer.type == "Linear"]
    assert widths == [128, 64, 3]
    assert any("Deeper" in c.rationale for c in candidates)
    deeper = next(c for c in candidates if c.rationale.startswith("Deeper"))
    assert sum(layer.type == "Linear" for layer in deeper.spec.layers) == 4


def test_overfitting_asks_for_regularisation_first():
    current = _mlp(dropout=0.2)
    candidates = LocalAdvisor().architectures("val loss rising: overfitting", current, 20, 3, k=4)
    _assert_valid_and_distinct(candidates, 20, 3, current)
    first = candidates[0]
    assert [layer.args["p"] for layer in first.spec.layers if layer.type == "Dropout"] == [0.4]
    assert any(c.rationale.startswith("Narrower") for c in candidates)


def test_batchnorm_and_activation_variants():
    current = _mlp()
    candidates = LocalAdvisor().architectures("", current, 20, 3, k=8)
    _assert_valid_and_distinct(candidates, 20, 3, current)
    bn = next(c for c in candidates if c.rationale.startswith("Batchnorm"))
    layers = bn.spec.layers
    for i, layer in enumerate(layers):
        if layer.type == "BatchNorm1d":
            assert layers[i - 1].type == "Linear" and layers[i - 1].args["out_features"] == layer.args["num_features"]
    assert sum(layer.type == "BatchNorm1d" for layer in layers) == 2
    gelu = next(c for c in candidates if c.rationale.startswith("Gelu"))
    assert {layer.type for layer in gelu.spec.layers} >= {"GELU"} and "ReLU" not in {l.type for l in gelu.spec.layers}


def test_cnn_variants_keep_the_task_shapes():
    cnn = ModelSpec(
        layers=[
            {"type": "Conv2d", "args": {"in_channels": 1, "out_channels": 8, "kernel_size": 3, "padding": 1}},
            {"type": "ReLU"},
            {"type": "MaxPool2d", "args": {"kernel_size": 2}},
            {"type": "Flatten"},
            {"type": "Linear", "args": {"in_features": 8 * 14 * 14, "out_features": 10}},
        ]
    )
    candidates = LocalAdvisor().architectures("", cnn, [1, 28, 28], 10, k=10)
    assert len(candidates) >= 6
    _assert_valid_and_distinct(candidates, [1, 28, 28], 10, cnn)
    wider = next(c for c in candidates if c.rationale.startswith("Wider"))
    assert wider.spec.layers[0].args["out_channels"] == 16
    assert wider.spec.layers[4].args["in_features"] == 16 * 14 * 14


def test_a_spec_that_does_not_fit_the_task_falls_back_to_a_default():
    candidates = LocalAdvisor().architectures("", _mlp(), 30, 5, k=3)
    assert len(candidates) == 3
    _assert_valid_and_distinct(candidates, 30, 5)
    assert all("does not fit the task" in c.rationale for c in candidates)


def test_image_shaped_input_without_a_model_flattens():
    candidates = LocalAdvisor().architectures("", None, [3, 8, 8], 4, k=2)
    _assert_valid_and_distinct(candidates, [3, 8, 8], 4)
    assert all(c.spec.layers[0].type == "Flatten" for c in candidates)


def test_architecture_input_errors():
    with pytest.raises(ValueError, match="k must be"):
        LocalAdvisor().architectures("", None, 10, 2, k=0)
    with pytest.raises(ValueError, match="num_classes"):
        LocalAdvisor().architectures("", None, 10, 0)
    with pytest.raises(ValueError, match="input_size"):
        LocalAdvisor().architectures("", None, [0, 3], 2)


def test_a_classifier_stuck_at_chance_is_told_to_lower_the_learning_rate():
    from forgeml.ai.local import LocalAdvisor
    from forgeml.specs import TrainingMetrics

    stuck = TrainingMetrics(train_loss=[6.4, 2.3, 2.45], val_loss=[2.6, 2.3, 2.5], val_accuracy=[0.12, 0.16, 0.10])
    result = LocalAdvisor(seed=0).analyze("MLP, optimizer=Adam, lr=0.05, num_classes=10", stuck)
    assert result.diagnosis == "diverging" and "guessing among 10 classes" in result.evidence[0]
    lr = [r for r in result.recommendations if r.action.action == "scale_learning_rate"]
    assert lr and lr[0].action.factor == 0.1
    learning = TrainingMetrics(train_loss=[0.5, 0.3, 0.2], val_loss=[0.5, 0.3, 0.2], val_accuracy=[0.90, 0.95, 0.97])
    binary = LocalAdvisor(seed=0).analyze("classifier, num_classes=2, optimizer=Adam, lr=0.001", learning)
    assert binary.diagnosis != "diverging"  # 97% is far above the 50% of chance


def test_adam_with_a_learning_rate_above_its_usual_range_is_told_to_lower_it():
    from forgeml.ai.local import LocalAdvisor
    from forgeml.specs import TrainingMetrics

    metrics = TrainingMetrics(
        train_loss=[0.9, 0.7, 0.6, 0.55], val_loss=[0.9, 0.7, 0.6, 0.55], val_accuracy=[0.7, 0.8, 0.85, 0.87]
    )
    result = LocalAdvisor(seed=0).analyze("MLP, optimizer=Adam, lr=0.005, num_classes=10", metrics)
    lr = [r for r in result.recommendations if r.action.action == "scale_learning_rate"]
    assert lr and lr[0].action.factor == pytest.approx(0.2)
    calm = LocalAdvisor(seed=0).analyze("MLP, optimizer=Adam, lr=0.001, num_classes=10", metrics)
    assert not any(r.action.action == "scale_learning_rate" for r in calm.recommendations)


# =============================================================================== numbers near the float limit
@pytest.mark.filterwarnings("error")  # an overflow inside the advisor is a failure here, not a warning
def test_numbers_near_the_float_limit_neither_overflow_nor_leave_the_range():
    advisor = LocalAdvisor(seed=0)
    x = np.array([[1.2e308, 0.5], [-1.2e308, 1.5], [5.0, 2.5], [1.0e308, 3.5]])
    result = advisor.synthetic_data("classifier", x, [0, 1, 0, 1], 50)
    out = np.array([s.features for s in result.samples])
    assert (
        np.isfinite(out).all() and (out.min(axis=0) >= x.min(axis=0)).all() and (out.max(axis=0) <= x.max(axis=0)).all()
    )
    # the power-of-two scaling is exact: ordinary data gives the same samples, bit for bit, as scaled data
    small = LocalAdvisor(seed=0).synthetic_data("classifier", x / 2.0**1000, [0, 1, 0, 1], 50)
    big = LocalAdvisor(seed=0).synthetic_data("classifier", x / 2.0**1000 * 2.0**20, [0, 1, 0, 1], 50)
    assert [[v * 2.0**20 for v in s.features] for s in small.samples] == [s.features for s in big.samples]

    # A loss beyond float32's range cannot come from a float32 run: read as non-finite, the run as diverging.
    metrics = _metrics(train_loss=[0.9, 0.7, 1.9e154, 0.5], val_loss=[1.0, 0.8, 0.7, -5.5e307])
    result = advisor.analyze("an MLP", metrics)
    assert result.diagnosis == "diverging"
    assert any("beyond float32's range" in line for line in result.evidence), result.evidence
