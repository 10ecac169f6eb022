"""Outcome models on patient embeddings plus LAA-950: a penalised Cox model (survival) and a ridge regression
(FEV1 % predicted), with cross-validated comparison against LAA-950 alone.

Features per case come from an ``drasclr analyze`` output folder: ``embedding.npy`` (a 1-D float vector, ``(D,)``)
and the ``whole_lung`` row's ``laa950_pct`` of ``stats.csv``. Outcomes come from a case folder's ``meta.json``
(the phantom writes them under ``outcomes``); key names are configurable, dotted paths reach nested keys.

Feature map (fitted on training cases only): embedding → z-score (per dimension) → PCA (k components) →
z-scored PCA scores; LAA-950 → z-score. Three feature sets are compared: ``laa950``, ``embedding``,
``embedding+laa950`` (the saved model uses the last). The risk score is the Cox linear predictor ``x · β``
(log partial hazard, higher = earlier event). Models are saved as JSON (no pickle).
"""

from __future__ import annotations

import csv
import datetime
import json
import logging
import math
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from ..analysis.stats import by_region, nan_to_none, read_csv
from ..core.errors import InputError
from ..core.outputs import staged_dir

log = logging.getLogger(__name__)

MODEL_FORMAT = "drasclr-outcome-model"
MODEL_FORMAT_VERSION = 1
DEFAULT_KEYS = {"fev1": "outcomes.fev1_pct_pred", "time": "outcomes.survival_years", "event": "outcomes.event"}
FEATURE_SETS = ("laa950", "embedding", "embedding+laa950")
FINAL_SET = "embedding+laa950"


# --- reading --------------------------------------------------------------------------------------------------


@dataclass
class Features:
    """Per-case inputs: ``embedding`` ``(N, D)`` float64, ``laa950`` ``(N,)`` percent."""

    cases: list[str]
    embedding: np.ndarray
    laa950: np.ndarray


def _whole_lung_laa(stats_csv: Path) -> float:
    return float(by_region(read_csv(stats_csv)).get("whole_lung", {}).get("laa950_pct", math.nan))


def load_features(features_dir) -> Features:
    """Read every analyze output folder under ``features_dir`` (or ``features_dir`` itself when it is one)."""
    root = Path(features_dir)
    if not root.is_dir():
        raise InputError(f"features folder not found: {root}")
    if (root / "embedding.npy").exists() or (root / "stats.csv").exists():
        folders = [root]
    else:
        folders = [p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")
                   and ((p / "embedding.npy").exists() or (p / "stats.csv").exists())]
    if not folders:
        raise InputError(f"no analyze output folders (embedding.npy + stats.csv) in {root}")
    no_emb = [p.name for p in folders if not (p / "embedding.npy").exists()]
    if no_emb:
        raise InputError(f"{len(no_emb)} case(s) without embedding.npy (run analyze with a model and --embedding): "
                         f"{', '.join(no_emb[:10])}")
    no_stats = [p.name for p in folders if not (p / "stats.csv").exists()]
    if no_stats:
        raise InputError(f"{len(no_stats)} case(s) without stats.csv: {', '.join(no_stats[:10])}")
    embs, laas = [], []
    for p in folders:
        try:
            e = np.load(p / "embedding.npy", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise InputError(f"case {p.name}: cannot read embedding.npy ({str(exc)[:80]})") from None
        e = np.asarray(e, dtype=np.float64).ravel()
        if e.size == 0 or not np.isfinite(e).all():
            raise InputError(f"case {p.name}: embedding.npy is empty or holds NaN/inf")
        embs.append(e)
        laa = _whole_lung_laa(p / "stats.csv")
        if math.isnan(laa):
            raise InputError(f"case {p.name}: stats.csv has no whole_lung laa950_pct")
        laas.append(laa)
    dims = {e.size for e in embs}
    if len(dims) != 1:
        raise InputError(f"embeddings differ in length across cases: {sorted(dims)}")
    return Features([p.name for p in folders], np.stack(embs), np.asarray(laas, dtype=np.float64))


def lookup(meta: dict, key: str):
    """``meta[key]`` with dotted paths (``outcomes.event``); a bare key is also looked for one level down."""
    node = meta
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            node = None
            break
        node = node[part]
    if node is not None:
        return node
    leaf = key.split(".")[-1]
    for v in meta.values():
        if isinstance(v, dict) and leaf in v:
            return v[leaf]
    return None


def load_outcomes(outcomes_dir) -> dict[str, dict]:
    """``{case: meta}`` from ``DIR/<case>/meta.json`` folders or ``DIR/<case>.json`` files."""
    root = Path(outcomes_dir)
    if not root.is_dir():
        raise InputError(f"outcomes folder not found: {root}")
    found = {}
    for p in sorted(root.iterdir()):
        path = p / "meta.json" if p.is_dir() else p if p.suffix == ".json" else None
        if path is None or not path.exists():
            continue
        try:
            found[p.name if p.is_dir() else p.stem] = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"cannot read {p.name}/meta.json: {exc.msg}") from None
    if not found:
        raise InputError(f"no meta.json files in {root}")
    return found


@dataclass
class Cohort:
    """Matched features and outcomes. ``time``/``event``/``fev1``: ``(N,)`` or None when not asked for."""

    features: Features
    time: np.ndarray | None
    event: np.ndarray | None
    fev1: np.ndarray | None


def load_cohort(features_dir, outcomes_dir, kind: str = "both", keys: dict | None = None) -> Cohort:
    """Features matched to outcomes by case folder name; InputError on no match or missing outcome values."""
    keys = {**DEFAULT_KEYS, **(keys or {})}
    feats = load_features(features_dir)
    metas = load_outcomes(outcomes_dir)
    keep = [i for i, c in enumerate(feats.cases) if c in metas]
    if not keep:
        raise InputError(f"no case of {features_dir} matches a meta.json in {outcomes_dir} "
                         f"(features: {', '.join(feats.cases[:5])}; outcomes: {', '.join(list(metas)[:5])})")
    dropped = [c for c in feats.cases if c not in metas]
    if dropped:
        log.warning("%d case(s) without outcomes left out: %s", len(dropped), ", ".join(dropped[:10]))
    feats = Features([feats.cases[i] for i in keep], feats.embedding[keep], feats.laa950[keep])
    need = {"cox": ("time", "event"), "fev1": ("fev1",), "both": ("time", "event", "fev1")}[kind]
    values: dict[str, np.ndarray | None] = {"time": None, "event": None, "fev1": None}
    for what in need:
        col, missing = [], []
        for c in feats.cases:
            v = lookup(metas[c], keys[what])
            if v is None:
                missing.append(c)
                continue
            try:
                col.append(float(v))
            except (TypeError, ValueError):
                raise InputError(f"case {c}: {keys[what]} = {v!r} is not a number") from None
        if missing:
            raise InputError(f"{len(missing)} case(s) have no '{keys[what]}' in meta.json: {', '.join(missing[:10])}")
        values[what] = np.asarray(col, dtype=np.float64)
    if values["time"] is not None and (values["time"] <= 0).any():
        raise InputError(f"survival times ({keys['time']}) must be positive")
    if values["event"] is not None:
        if not np.isin(values["event"], (0, 1)).all():
            raise InputError(f"event indicator ({keys['event']}) must be 0 (censored) or 1 (event)")
        if values["event"].sum() < 2:
            raise InputError("fewer than 2 events in the cohort: a Cox model cannot be fitted")
    if len(feats.cases) < 6:
        raise InputError(f"only {len(feats.cases)} matched case(s); at least 6 are needed to fit and cross-validate")
    return Cohort(feats, values["time"], values["event"], values["fev1"])


# --- feature map --------------------------------------------------------------------------------------------


@dataclass
class FeatureMap:
    """Standardise → PCA → standardise, fitted on training cases; all arrays JSON-able lists when saved.

    ``transform(embedding (N, D), laa950 (N,)) -> (N, P)`` with P = k (embedding), 1 (laa950) or k + 1.
    """

    feature_set: str
    emb_mean: np.ndarray | None = None  # (D,)
    emb_scale: np.ndarray | None = None  # (D,)
    pca_mean: np.ndarray | None = None  # (D,)
    pca_components: np.ndarray | None = None  # (k, D)
    score_mean: np.ndarray | None = None  # (k,)
    score_scale: np.ndarray | None = None  # (k,)
    laa_mean: float = 0.0
    laa_scale: float = 1.0

    @property
    def uses_embedding(self) -> bool:
        return "embedding" in self.feature_set

    @property
    def uses_laa(self) -> bool:
        return "laa950" in self.feature_set

    @classmethod
    def fit(cls, feature_set: str, embedding: np.ndarray, laa950: np.ndarray, k: int, seed: int = 0) -> FeatureMap:
        from sklearn.decomposition import PCA

        m = cls(feature_set)
        if m.uses_embedding:
            m.emb_mean = embedding.mean(axis=0)
            m.emb_scale = _safe_scale(embedding.std(axis=0))
            z = (embedding - m.emb_mean) / m.emb_scale
            k = max(1, min(k, z.shape[1], z.shape[0] - 1))
            pca = PCA(n_components=k, random_state=seed).fit(z)
            m.pca_mean, m.pca_components = pca.mean_, pca.components_
            scores = (z - m.pca_mean) @ m.pca_components.T
            m.score_mean, m.score_scale = scores.mean(axis=0), _safe_scale(scores.std(axis=0))
        if m.uses_laa:
            m.laa_mean, m.laa_scale = float(laa950.mean()), float(_safe_scale(np.array([laa950.std()]))[0])
        return m

    def transform(self, embedding: np.ndarray, laa950: np.ndarray) -> np.ndarray:
        cols = []
        if self.uses_embedding:
            if embedding.shape[1] != self.emb_mean.size:
                raise InputError(f"embedding length {embedding.shape[1]} does not match the model's "
                                 f"{self.emb_mean.size}")
            z = (embedding - self.emb_mean) / self.emb_scale
            cols.append(((z - self.pca_mean) @ self.pca_components.T - self.score_mean) / self.score_scale)
        if self.uses_laa:
            cols.append(((laa950 - self.laa_mean) / self.laa_scale)[:, None])
        return np.concatenate(cols, axis=1)

    def names(self) -> list[str]:
        n = [f"pc{i + 1}" for i in range(self.pca_components.shape[0])] if self.uses_embedding else []
        return n + (["laa950"] if self.uses_laa else [])

    def to_json(self) -> dict:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, d: dict) -> FeatureMap:
        arrays = {"emb_mean", "emb_scale", "pca_mean", "pca_components", "score_mean", "score_scale"}
        return cls(**{k: (np.asarray(v, dtype=np.float64) if k in arrays and v is not None else v)
                      for k, v in d.items()})


def _safe_scale(s: np.ndarray) -> np.ndarray:
    return np.where(s > 1e-12, s, 1.0)


# --- models -------------------------------------------------------------------------------------------------


def fit_cox(x: np.ndarray, time: np.ndarray, event: np.ndarray, penalizer: float) -> np.ndarray:
    """Coefficients ``(P,)`` of a ridge-penalised Cox model (lifelines CoxPHFitter)."""
    import pandas as pd
    from lifelines import CoxPHFitter

    df = pd.DataFrame(x, columns=[f"f{i}" for i in range(x.shape[1])])
    df["T"], df["E"] = time, event
    from lifelines.exceptions import ConvergenceError

    cph = CoxPHFitter(penalizer=penalizer)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence chatter on tiny folds; the C-index shows the outcome
            cph.fit(df, duration_col="T", event_col="E")
    except (ConvergenceError, np.linalg.LinAlgError, ValueError, ZeroDivisionError) as exc:
        raise InputError(f"the Cox model did not converge ({' '.join(str(exc).split())[:120]}); try a larger "
                         "--penalizer, fewer --pca components or more cases with events") from None
    coef = cph.params_.to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(coef)):
        raise InputError("the Cox model did not converge (non-finite coefficients); try a larger --penalizer")
    return coef


def fit_ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    from sklearn.linear_model import Ridge

    r = Ridge(alpha=alpha).fit(x, y)
    return np.asarray(r.coef_, dtype=np.float64), float(r.intercept_)


def c_index(time: np.ndarray, risk: np.ndarray, event: np.ndarray) -> float:
    """Harrell's C (higher risk ↔ shorter time); NaN when no pair is comparable."""
    from lifelines.utils import concordance_index

    try:
        return float(concordance_index(time, -risk, event))
    except ZeroDivisionError:
        return math.nan


@dataclass
class OutcomeModel:
    """A fitted feature map plus Cox coefficients and/or a FEV1 ridge regression."""

    feature_map: FeatureMap
    cox_coef: np.ndarray | None = None  # (P,)
    fev1_coef: np.ndarray | None = None  # (P,)
    fev1_intercept: float = 0.0

    def risk(self, embedding: np.ndarray, laa950: np.ndarray) -> np.ndarray:
        """``(N,)`` Cox linear predictor (log partial hazard)."""
        return self.feature_map.transform(embedding, laa950) @ self.cox_coef

    def fev1(self, embedding: np.ndarray, laa950: np.ndarray) -> np.ndarray:
        return self.feature_map.transform(embedding, laa950) @ self.fev1_coef + self.fev1_intercept


def fit_model(cohort: Cohort, feature_set: str = FINAL_SET, kind: str = "both", k: int = 8,
              penalizer: float = 0.1, alpha: float = 1.0, seed: int = 0, index=None) -> OutcomeModel:
    """Fit the feature map and the requested models on ``cohort`` (restricted to ``index`` when given)."""
    c = cohort
    idx = np.arange(len(c.features.cases)) if index is None else np.asarray(index)
    emb, laa = c.features.embedding[idx], c.features.laa950[idx]
    fmap = FeatureMap.fit(feature_set, emb, laa, k, seed)
    x = fmap.transform(emb, laa)
    model = OutcomeModel(fmap)
    if kind in ("cox", "both"):
        model.cox_coef = fit_cox(x, c.time[idx], c.event[idx], penalizer)
    if kind in ("fev1", "both"):
        model.fev1_coef, model.fev1_intercept = fit_ridge(x, c.fev1[idx], alpha)
    return model


def cross_validate(cohort: Cohort, kind: str = "both", k: int = 8, penalizer: float = 0.1, alpha: float = 1.0,
                   folds: int = 5, seed: int = 0) -> dict:
    """k-fold (shuffled, seeded) C-index per fold (mean ± sd) and over all out-of-fold risks pooled (steadier on
    small cohorts; risks of different folds share one scale because every fold's features are z-scored), and
    out-of-fold R² / MAE for FEV1, for each feature set."""
    from sklearn.metrics import mean_absolute_error, r2_score
    from sklearn.model_selection import KFold

    n = len(cohort.features.cases)
    splits = list(KFold(n_splits=min(folds, n), shuffle=True, random_state=seed).split(np.zeros(n)))
    emb, laa = cohort.features.embedding, cohort.features.laa950
    out = {}
    for fs in FEATURE_SETS:
        res: dict = {}
        cidx, oof, oof_risk = [], np.full(n, np.nan), np.full(n, np.nan)
        for train, test in splits:
            m = fit_model(cohort, fs, kind, k, penalizer, alpha, seed, index=train)
            if m.cox_coef is not None:
                oof_risk[test] = m.risk(emb[test], laa[test])
                cidx.append(c_index(cohort.time[test], oof_risk[test], cohort.event[test]))
            if m.fev1_coef is not None:
                oof[test] = m.fev1(emb[test], laa[test])
        if kind in ("cox", "both"):
            valid = [v for v in cidx if not math.isnan(v)]
            res["c_index_mean"] = float(np.mean(valid)) if valid else math.nan
            res["c_index_sd"] = float(np.std(valid)) if valid else math.nan
            res["c_index_folds"] = cidx
            res["c_index_pooled"] = c_index(cohort.time, oof_risk, cohort.event)  # all out-of-fold risks
        if kind in ("fev1", "both"):
            res["fev1_r2"] = float(r2_score(cohort.fev1, oof))
            res["fev1_mae"] = float(mean_absolute_error(cohort.fev1, oof))
        out[fs] = res
    return out


# --- saving -------------------------------------------------------------------------------------------------


def model_to_json(model: OutcomeModel, extra: dict | None = None) -> dict:
    return {
        "format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION, "drasclr_version": __version__,
        **(extra or {}),
        "feature_map": model.feature_map.to_json(),
        "feature_names": model.feature_map.names(),
        "cox": None if model.cox_coef is None else {"coefficients": model.cox_coef.tolist(),
                                                    "risk_score": "linear predictor x . coefficients"},
        "fev1": None if model.fev1_coef is None else {"coefficients": model.fev1_coef.tolist(),
                                                      "intercept": model.fev1_intercept},
    }


def model_from_json(d: dict) -> OutcomeModel:
    if d.get("format") != MODEL_FORMAT:
        raise InputError(f"not an outcome model (format {d.get('format')!r}, expected {MODEL_FORMAT!r})")
    if int(d.get("format_version", 0)) > MODEL_FORMAT_VERSION:
        raise InputError(f"outcome model format version {d['format_version']} is newer than this drasclr")
    m = OutcomeModel(FeatureMap.from_json(d["feature_map"]))
    if d.get("cox"):
        m.cox_coef = np.asarray(d["cox"]["coefficients"], dtype=np.float64)
    if d.get("fev1"):
        m.fev1_coef = np.asarray(d["fev1"]["coefficients"], dtype=np.float64)
        m.fev1_intercept = float(d["fev1"]["intercept"])
    return m


def fit(features_dir, outcomes_dir, model_dir, kind: str = "both", k: int = 8, penalizer: float = 0.1,
        alpha: float = 1.0, folds: int = 5, seed: int = 0, keys: dict | None = None) -> dict:
    """Cross-validate, fit on all cases, write ``model.json`` + ``metrics.json`` into a new ``model_dir``."""
    model_dir = Path(model_dir)
    if model_dir.exists() and (not model_dir.is_dir() or any(model_dir.iterdir())):
        raise InputError(f"{model_dir} already exists; outcome models are never overwritten, choose a new folder")
    if kind not in ("cox", "fev1", "both"):
        raise InputError(f"kind must be cox, fev1 or both, got {kind!r}")
    keys = {**DEFAULT_KEYS, **(keys or {})}
    cohort = load_cohort(features_dir, outcomes_dir, kind, keys)
    cv = cross_validate(cohort, kind, k, penalizer, alpha, folds, seed)
    model = fit_model(cohort, FINAL_SET, kind, k, penalizer, alpha, seed)
    n = len(cohort.features.cases)
    metrics = {
        "n_cases": n, "n_events": None if cohort.event is None else int(cohort.event.sum()),
        "embedding_dim": int(cohort.features.embedding.shape[1]),
        "settings": {"kind": kind, "pca_components": int(model.feature_map.pca_components.shape[0]),
                     "penalizer": penalizer, "ridge_alpha": alpha, "folds": min(folds, n), "seed": seed,
                     "keys": keys},
        "cross_validation": cv,
    }
    card = {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "feature_set": FINAL_SET, "kind": kind, "training": {k: metrics[k] for k in
                                                                  ("n_cases", "n_events", "embedding_dim")},
            "settings": metrics["settings"], "metrics": nan_to_none(cv)}
    with staged_dir(model_dir) as tmp:
        (tmp / "model.json").write_text(json.dumps(model_to_json(model, card), indent=2))
        (tmp / "metrics.json").write_text(json.dumps(nan_to_none(metrics), indent=2))
    return metrics


def load_outcome_model(model_dir) -> OutcomeModel:
    path = Path(model_dir)
    path = path / "model.json" if path.is_dir() else path
    if not path.exists():
        raise InputError(f"no outcome model at {model_dir} (model.json not found)")
    try:
        return model_from_json(json.loads(path.read_text()))
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputError(f"cannot read outcome model {path}: {exc}") from None


def predict(model_dir, features_dir, out_csv) -> list[dict]:
    """Risk score and predicted FEV1 per case, written to ``out_csv`` atomically."""
    model = load_outcome_model(model_dir)
    feats = load_features(features_dir)
    risk = model.risk(feats.embedding, feats.laa950) if model.cox_coef is not None else None
    fev1 = model.fev1(feats.embedding, feats.laa950) if model.fev1_coef is not None else None
    rows = [{"case": c, "risk_score": "" if risk is None else repr(float(risk[i])),
             "fev1_pct_pred": "" if fev1 is None else repr(float(fev1[i]))} for i, c in enumerate(feats.cases)]
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_csv.with_name(f".{out_csv.name}.tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["case", "risk_score", "fev1_pct_pred"])
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, out_csv)
    return rows


def format_metrics(metrics: dict) -> str:
    cv = metrics["cross_validation"]
    s = metrics["settings"]
    lines = [f"{metrics['n_cases']} cases"
             + (f", {metrics['n_events']} events" if metrics["n_events"] is not None else "")
             + f"; {s['folds']}-fold CV (seed {s['seed']}), PCA k={s['pca_components']}",
             f"{'features':<20}{'C-index (folds)':>18}{'pooled':>8}{'FEV1 R2':>10}{'FEV1 MAE':>10}"]
    for fs, r in cv.items():
        c = "-" if "c_index_mean" not in r else f"{r['c_index_mean']:.3f} ± {r['c_index_sd']:.3f}"
        pooled = f"{r['c_index_pooled']:.3f}" if "c_index_pooled" in r else "-"
        r2 = f"{r['fev1_r2']:.3f}" if "fev1_r2" in r else "-"
        mae = f"{r['fev1_mae']:.2f}" if "fev1_mae" in r else "-"
        lines.append(f"{fs:<20}{c:>18}{pooled:>8}{r2:>10}{mae:>10}")
    return "\n".join(lines)
