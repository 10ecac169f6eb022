"""Linear probe: how well frozen patch embeddings separate emphysema subtypes (patch-level, macro-F1).

Patch labels come from the cache's subtype fractions (``PatchCache.patch_labels``: majority non-normal subtype
when its share of the patch's lung exceeds a threshold, else normal; patches without lung are left out).
Subjects are split into train and test (no subject in both); a logistic regression on standardised
embeddings is fitted on train and scored on test.

    python -m drasclr.pretrain.probe --cache RUN/cache --model RUN/model.safetensors --random DrasCLREncoder
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from ..model import load_model
from ..model.checkpoint import architectures
from .data import PatchCache, encode_cache

CLASS_NAMES = {1: "normal", 2: "cle", 3: "pse", 4: "ple"}


def split_subjects(n: int, test_frac: float = 0.3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    n_test = max(1, int(round(n * test_frac)))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def linear_probe(features: np.ndarray, labels: np.ndarray, train: np.ndarray, test: np.ndarray,
                 seed: int = 0) -> dict:
    """``features`` ``(N, L, D)``, ``labels`` ``(N, L)`` (0 = no lung, skipped) -> metrics on the test subjects."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def flat(idx):
        x, y = features[idx].reshape(-1, features.shape[-1]), labels[idx].reshape(-1)
        keep = y > 0
        return x[keep], y[keep]

    xtr, ytr = flat(train)
    xte, yte = flat(test)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, class_weight="balanced",
                                                             random_state=seed))
    clf.fit(xtr, ytr)
    pred = clf.predict(xte)
    classes = sorted(set(ytr) | set(yte))
    per_class = f1_score(yte, pred, labels=classes, average=None, zero_division=0)
    return {"macro_f1": float(f1_score(yte, pred, labels=classes, average="macro", zero_division=0)),
            "accuracy": float(accuracy_score(yte, pred)),
            "f1_per_class": {CLASS_NAMES.get(int(c), str(c)): round(float(f), 4) for c, f in zip(classes, per_class)},
            "n_train": int(len(ytr)), "n_test": int(len(yte)),
            "test_class_counts": {CLASS_NAMES.get(int(c), str(c)): int((yte == c).sum()) for c in classes}}


def probe_encoder(encoder: torch.nn.Module, cache: PatchCache, threshold: float = 0.05, test_frac: float = 0.3,
                  seed: int = 0, device: str = "cpu") -> dict:
    labels = cache.patch_labels(threshold)
    if labels is None:
        raise ValueError(f"{cache.folder}: no subtype labels in this cache")
    feats = encode_cache(encoder, cache, device=device)
    train, test = split_subjects(cache.n_subjects, test_frac, seed)
    return linear_probe(feats, labels, train, test, seed)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Linear probe of frozen patch embeddings on a labelled patch cache")
    ap.add_argument("--cache", required=True)
    ap.add_argument("--model", action="append", default=[], help="a model file (repeatable)")
    ap.add_argument("--random", action="append", default=[], metavar="ARCH",
                    help="a randomly initialised encoder of this architecture with the channels of the first "
                         "--model (DrasCLREncoder or PlainEncoder; repeatable)")
    ap.add_argument("--threshold", type=float, default=0.05)
    ap.add_argument("--test-frac", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    cache = PatchCache(args.cache)
    results = {}
    config = None
    for path in args.model:
        enc, card = load_model(path)
        config = config or card["config"]
        results[path] = probe_encoder(enc, cache, args.threshold, args.test_frac, args.seed)
        print(path, json.dumps(results[path]), flush=True)
    for arch in args.random:
        torch.manual_seed(args.seed)
        enc = architectures()[arch](**(config or {}))
        results[f"random:{arch}"] = probe_encoder(enc, cache, args.threshold, args.test_frac, args.seed)
        print(f"random:{arch}", json.dumps(results[f"random:{arch}"]), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
