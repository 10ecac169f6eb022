"""Compare pretraining methods on a phantom cohort under one budget: random init, plain MoCo, DrasCLR, VoCo and
volume fusion (MIS-FM).

For every method the same encoder class (DrasCLREncoder; PlainEncoder for the MoCo ablation) is pretrained with
``drasclr pretrain --method ...`` (a subprocess, the real CLI) for at most ``--budget-steps`` steps and
``--minutes`` minutes, then scored by

1. linear probe: logistic regression on frozen patch embeddings of the labelled patch cache (macro-F1 over
   normal/CLE/PSE/PLE patches, subjects split train/test; ``drasclr.pretrain.probe.linear_probe``);
2. outcome: patient embedding = mean patch embedding over the probe locations; ``drasclr.research.outcome.fit`` (what
   ``drasclr outcome fit`` runs) cross-validates a Cox model; the pooled out-of-fold C-index is reported for the
   embedding alone and with LAA-950;
3. dense subtypes: the encoder initialises ``SubtypeSegmenter``; fine-tuned with 100 % and 10 % of the labels
   (``train_segmenter`` and ``label_mask``, what ``drasclr finetune cohort [--label-fraction 0.1]`` runs), then
   dense inference on held-out cases (``drasclr.dense.predict``, as ``drasclr analyze``) scored with
   ``drasclr.research.evaluate.evaluate_case`` (macro Dice over CLE/PSE/PLE, as ``drasclr evaluate``). Cases are read
   and
   registered once and shared by all methods (in-process), which is what makes this fit a small budget.

    python bench/compare_pretraining.py --train /work/data/train --test /work/data/test2 \\
        --patch-cache /work/data/pretrain/cache --out /work/data/compare --minutes 2.5 --budget-steps 400 \\
        --finetune-steps 200 --finetune-batch 4 --finetune-cases 8 --n-test 2 --stride 32 --threads 1 --seed 0

Prints a markdown table and writes ``OUT/results.json``. Outputs go to ``--out`` only (inputs are read-only).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "DrasCLRSlicer"))

from drasclr.analysis.stats import write_csv  # noqa: E402
from drasclr.dense import predict  # noqa: E402
from drasclr.dense.cohort import find_cases, label_mask, load_case, stratified_split  # noqa: E402
from drasclr.dense.locate import locator_for  # noqa: E402
from drasclr.dense.segmenter import SubtypeSegmenter  # noqa: E402
from drasclr.dense.train import fixed_patches, prepare_case, train_segmenter  # noqa: E402
from drasclr.model import DrasCLREncoder, load_model  # noqa: E402
from drasclr.pretrain.data import PatchCache, build_patch_cache, default_scheme, encode_cache, is_cache  # noqa: E402
from drasclr.pretrain.data import find_cases as find_ct_cases  # noqa: E402
from drasclr.pretrain.probe import linear_probe, split_subjects  # noqa: E402
from drasclr.research.evaluate import evaluate_case  # noqa: E402

METHODS = ("random", "moco", "drasclr", "voco", "volfusion")
log = logging.getLogger("compare")


def pretrain_cmd(method: str, a, out: Path) -> list[str]:
    """The ``drasclr pretrain`` command line of one method (same steps/minutes budget for all)."""
    base = [sys.executable, "-m", "drasclr", "pretrain"]
    common = ["-o", str(out), "--max-steps", str(a.budget_steps), "--max-minutes", str(a.minutes), "--workers", "0",
              "--threads", str(a.threads), "--seed", str(a.seed), "--save-every", "1000000", "--log-every", "10",
              "--device", "cpu", "--moco-momentum", "0.99"]
    if method in ("drasclr", "moco"):
        extra = ["--queue-size", "256", "--batch-size", str(a.batch_drasclr)]
        if method == "moco":
            extra += ["--no-location", "--beta", "0"]
        return base + [str(a.patch_cache)] + common + extra
    vols = ["--cache", str(a.volume_cache or Path(a.out) / "volumes")]
    if method == "voco":
        return base + [str(a.train), "--method", "voco"] + common + vols + [
            "--batch-size", str(a.batch_voco), "--voco-grid", str(a.voco_grid), "--voco-crops", "4"]
    return base + [str(a.train), "--method", "volfusion"] + common + vols + [
        "--batch-size", str(a.batch_fusion), "--fusion-crop", str(a.fusion_crop)]


def encoder_for(method: str, a, runs: Path) -> tuple[torch.nn.Module, dict]:
    """Pretrain (unless random) and load the encoder. Returns (encoder, info)."""
    if method == "random":
        torch.manual_seed(a.seed)
        return DrasCLREncoder(), {"pretrain_seconds": 0.0, "steps": 0}
    out = runs / method
    model = out / "model.safetensors"
    info: dict = {}
    if not model.is_file():
        cmd = pretrain_cmd(method, a, out)
        info["command"] = " ".join(cmd[1:]).replace(str(sys.executable), "python")
        t0 = time.perf_counter()
        env = dict(os.environ, PYTHONPATH=str(ROOT / "DrasCLRSlicer"))
        with open(runs / f"{method}.log", "w") as logf:
            subprocess.run(cmd, check=True, env=env, stdout=logf, stderr=subprocess.STDOUT)
        info["pretrain_seconds"] = round(time.perf_counter() - t0, 1)
    enc, card = load_model(model)
    info.update(steps=card.get("steps"), method=card.get("method"), architecture=card["architecture"],
                final_metrics=card.get("metrics"))
    return enc, info


def laa950(cases: list[Path]) -> dict[str, float]:
    from drasclr.core.io import read_ct, read_image

    res = {}
    for c in cases:
        ct, reg = read_ct(c / "ct.nii.gz").array, read_image(c / "regions.nii.gz").array > 0
        res[c.name] = float((ct[reg] < -950).mean() * 100)
    return res


def outcome_cindex(feats: np.ndarray, subjects: list[str], laa: dict, a, folder: Path) -> dict:
    """Write analyze-like feature folders (embedding.npy + stats.csv) and run ``drasclr.research.outcome.fit``."""
    import shutil

    from drasclr.research.outcome import fit

    shutil.rmtree(folder, ignore_errors=True)  # this script's own output of an earlier run
    fdir = folder / "features"
    for i, name in enumerate(subjects):
        d = fdir / name
        d.mkdir(parents=True, exist_ok=True)
        np.save(d / "embedding.npy", feats[i].mean(0).astype(np.float64))
        write_csv([{"region": "whole_lung", "laa950_pct": laa[name]}], d / "stats.csv", ["region", "laa950_pct"])
    m = fit(fdir, a.train, folder / "outcome", kind="cox", k=a.pca, folds=a.folds, seed=a.seed)
    cv = m["cross_validation"]
    return {fs: cv[fs]["c_index_pooled"] for fs in cv}


def prepare_dense(a):
    """Fine-tuning cases (100 % and 10 % labels, validation) and held-out cases, read and registered once."""
    rng = np.random.default_rng(a.seed)
    train_dirs = find_cases(a.train)[: a.finetune_cases]
    loaded = [load_case(c) for c in train_dirs]
    val_idx = set(stratified_split([float((s.array > 1).mean()) for _, s, _ in loaded], 0.25, a.seed))
    full, few, val = [], [], []
    for i, (ct, sub, lungs) in enumerate(loaded):
        locator, _ = locator_for(lungs)
        if i in val_idx:
            val.append(prepare_case(ct, sub, lungs, locator, rng=rng))
            continue
        full.append(prepare_case(ct, sub, lungs, locator, rng=rng))
        few.append(prepare_case(ct, sub, lungs, locator, labelled=label_mask(lungs, rng, None, 0.1), rng=rng))
    held = []
    for c in find_cases(a.test)[: a.n_test]:
        ct, sub, lungs = load_case(c)
        locator, _ = locator_for(lungs)
        held.append((c.name, ct, sub, lungs, locator))
    return {"full": full, "few": few, "val": fixed_patches(val, 64), "held": held,
            "train_cases": [train_dirs[i].name for i in range(len(train_dirs)) if i not in val_idx],
            "val_cases": [train_dirs[i].name for i in sorted(val_idx)]}


def dense_scores(enc, pretrained: bool, dense: dict, a) -> dict:
    res = {}
    for key, cases in (("dice_100", dense["full"]), ("dice_10", dense["few"])):
        torch.manual_seed(a.seed)
        model = SubtypeSegmenter(encoder_arch=enc.architecture)
        model.encoder.load_state_dict(enc.state_dict())
        t0 = time.perf_counter()
        hist = train_segmenter(model, cases, dense["val"], steps=a.finetune_steps, batch_size=a.finetune_batch,
                               lr=1e-3, freeze="all", seed=a.seed, eval_every=max(a.finetune_steps // 4, 1),
                               encoder_lr_scale=a.encoder_lr_scale if pretrained else 1.0)
        per_case = {}
        for name, ct, sub, lungs, locator in dense["held"]:
            pred = predict(ct, lungs, model, "cpu", locator=locator, tta=False, stride=a.stride).subtypes
            per_case[name] = evaluate_case(pred, sub)["macro_dice"]
        vals = [v for v in per_case.values() if not np.isnan(v)]
        res[key] = float(np.mean(vals)) if vals else float("nan")
        res[key + "_cases"] = per_case
        res[key + "_seconds"] = round(time.perf_counter() - t0, 1)
        res[key + "_val"] = hist["best_val"]
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", type=Path, default=Path("/work/data/train"), help="phantom cohort for pretraining")
    ap.add_argument("--test", type=Path, default=Path("/work/data/test2"), help="held-out cohort (dense Dice)")
    ap.add_argument("--patch-cache", type=Path, default=Path("/work/data/pretrain/cache"),
                    help="labelled patch cache of --train (drasclr/moco pretraining, probe, outcome); built from "
                         "--train when absent")
    ap.add_argument("--out", type=Path, default=Path("/work/data/compare"))
    ap.add_argument("--volume-cache", type=Path, default=None,
                    help="volume cache (voco/volfusion; default OUT/volumes)")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--budget-steps", type=int, default=400, help="pretraining steps (cosine schedule length)")
    ap.add_argument("--minutes", type=float, default=2.5, help="pretraining wall-clock budget per method")
    ap.add_argument("--batch-drasclr", type=int, default=16)
    ap.add_argument("--batch-voco", type=int, default=2)
    ap.add_argument("--voco-grid", type=int, default=2)
    ap.add_argument("--batch-fusion", type=int, default=2)
    ap.add_argument("--fusion-crop", type=int, default=64)
    ap.add_argument("--finetune-steps", type=int, default=200)
    ap.add_argument("--finetune-batch", type=int, default=4)
    ap.add_argument("--encoder-lr-scale", type=float, default=0.1,
                    help="encoder learning rate x this when fine-tuning a pretrained encoder (random init: 1)")
    ap.add_argument("--runs", type=Path, default=None,
                    help="pretraining runs folder to reuse (default OUT/runs; a method's model there is not retrained)")
    ap.add_argument("--finetune-cases", type=int, default=8, help="first N cases of --train (25 %% for validation)")
    ap.add_argument("--n-test", type=int, default=2, help="held-out cases scored")
    ap.add_argument("--stride", type=int, default=32, help="dense inference patch stride (analyze: 24 on CPU)")
    ap.add_argument("--probe-stride", type=int, default=4, help="every Nth cache location for probe/outcome")
    ap.add_argument("--pca", type=int, default=4)
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (more than free cores slows down a lot)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-done", action="store_true", help="keep the methods already in OUT/results.json")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(a.threads)
    a.out.mkdir(parents=True, exist_ok=True)
    runs = a.runs or a.out / "runs"
    runs.mkdir(exist_ok=True)
    t_all = time.perf_counter()
    if not is_cache(a.patch_cache):  # built once from --train (atlas locations), then reused by every method
        log.info("building the patch cache %s from %s", a.patch_cache, a.train)
        build_patch_cache(find_ct_cases(a.train), a.patch_cache, default_scheme("auto"))
    cache = PatchCache(a.patch_cache)
    labels = cache.patch_labels()
    locs = np.arange(0, cache.n_locations, a.probe_stride)
    tr, te = split_subjects(cache.n_subjects, 0.3, a.seed)
    laa_p = a.out / "laa950.json"
    if not laa_p.is_file():
        laa_p.write_text(json.dumps(laa950([Path(s).parent for s in cache.index["sources"]])))
    laa = json.loads(laa_p.read_text())
    t0 = time.perf_counter()
    dense = prepare_dense(a)
    log.info("dense cases prepared in %.0f s", time.perf_counter() - t0)
    results = {}
    if a.skip_done and (a.out / "results.json").is_file():
        results = json.loads((a.out / "results.json").read_text())["results"]
    for method in [m for m in a.methods if m not in results]:
        log.info("=== %s", method)
        enc, info = encoder_for(method, a, runs)
        t0 = time.perf_counter()
        feats = encode_cache(enc, cache, batch=32, locations=locs)
        probe = linear_probe(feats, labels[:, locs], tr, te, a.seed)
        info["probe_macro_f1"], info["probe_accuracy"] = probe["macro_f1"], probe["accuracy"]
        info["c_index"] = outcome_cindex(feats, cache.subjects, laa, a, a.out / "outcome" / method)
        info["probe_outcome_seconds"] = round(time.perf_counter() - t0, 1)
        info.update(dense_scores(enc, method != "random", dense, a))
        results[method] = info
        log.info("%s: %s", method, json.dumps(info, default=str))
        (a.out / "results.json").write_text(json.dumps(_payload(a, dense, results, t_all), indent=2, default=str))
    print(table(results))
    print(f"\ntotal {time.perf_counter() - t_all:.0f} s; wrote {a.out / 'results.json'}")
    return 0


def _payload(a, dense, results, t_all) -> dict:
    return {"settings": {k: str(v) for k, v in vars(a).items()}, "finetune_train_cases": dense["train_cases"],
            "finetune_val_cases": dense["val_cases"], "held_out": [h[0] for h in dense["held"]],
            "seconds": round(time.perf_counter() - t_all, 1), "results": results}


def table(results: dict) -> str:
    rows = ["| method | pretrain steps (s) | probe macro-F1 | Dice 100 % | Dice 10 % | C-index emb | C-index emb+LAA "
            "| C-index LAA-950 |", "|---|---|---|---|---|---|---|---|"]
    for m, r in results.items():
        ci = r.get("c_index", {})
        rows.append(f"| {m} | {r.get('steps')} ({r.get('pretrain_seconds', 0)}) | {r['probe_macro_f1']:.3f} | "
                    f"{r['dice_100']:.3f} | {r['dice_10']:.3f} | {ci.get('embedding', float('nan')):.3f} | "
                    f"{ci.get('embedding+laa950', float('nan')):.3f} | {ci.get('laa950', float('nan')):.3f} |")
    return "\n".join(rows)


if __name__ == "__main__":
    raise SystemExit(main())
