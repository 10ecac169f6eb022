"""Scoring a predicted subtype map against ground truth: Dice per class, confusion matrix, fraction errors.

Label values follow ``drasclr.core.labels`` (0 outside lung, 1 normal, 2 CLE, 3 PSE, 4 PLE).

Conventions
-----------
- **Dice** of class c: ``2 |P ∩ T| / (|P| + |T|)`` over voxels. When class c is absent from both prediction and
  truth the Dice is undefined: it is reported as NaN (``null`` in JSON, empty in CSV) and left out of every mean.
- **Macro Dice** (the headline number) is the mean of the defined Dice values of CLE, PSE and PLE. The *pooled*
  macro Dice computes each class's Dice from the confusion matrix summed over all cases (large cases weigh more);
  the *case-mean* macro Dice averages the per-case macro Dice values.
- **Confusion matrix**: ``confusion[t, p]`` = number of voxels with truth class ``t`` and predicted class ``p``
  (5 × 5, classes 0..4, rows = truth).
- **Fraction errors**: for each region of the *truth* regions (each lobe or zone present, ``left_lung``,
  ``right_lung``, ``whole_lung``) and each subtype, predicted % minus true %, both as a percentage of the truth
  region's voxels (a truth-lung voxel predicted as 0 counts for no subtype, so predicted % may sum below 100).
- **LAA-950 check**: LAA-950 (% of voxels strictly below -950 HU) per region computed here with plain numpy from
  the truth CT and truth regions, against the ``laa950_pct`` column of the prediction's ``stats.csv``. The two are
  comparable only where the prediction's region mask is voxel-identical to the truth's (``region_match``); the
  summary ``laa950_max_abs_diff`` is taken over those regions only (``all_regions_max_abs_diff`` over all, which
  then mixes in lung-mask differences). ``own_regions_max_abs_diff`` recomputes LAA-950 on the prediction's own
  ``regions.nii.gz`` and must agree with ``stats.csv`` up to its 4-decimal rounding.
- **Whole-lung percentages**: per case, the largest |predicted % - true %| of the whole lung over CLE, PSE and
  PLE (``whole_lung_max_abs_error_pct``), and the emphysema called (CLE + PSE + PLE, % of the truth lung) beside
  the true one; *emphysema-free* cases (no CLE/PSE/PLE voxel in the truth) are summarised apart
  (``emphysema_free_max_called_pct``): what a model calls there is all false.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..analysis.stats import by_region, nan_to_none, read_csv
from ..core import labels
from ..core.errors import InputError
from ..core.io import IMAGE_SUFFIXES, read_image
from ..core.outputs import staged_dir
from ..dense.scores import confusion_matrix, dice_from_confusion  # noqa: F401 (the evaluation API names them)

CLASSES = tuple(range(labels.NUM_CLASSES))  # 0..4
EMPHYSEMA = (labels.CLE, labels.PSE, labels.PLE)
NAMES = labels.SUBTYPES  # 1..4 -> normal, cle, pse, ple


def _array(x) -> np.ndarray:
    return np.asarray(getattr(x, "array", x))


def label_values(a: np.ndarray) -> list[int]:
    """Distinct values of a label array (a histogram for 8-bit arrays: much faster than sorting)."""
    a = np.asarray(a)
    if a.dtype in (np.uint8, np.int8, np.bool_):
        counts = np.bincount(a.view(np.uint8).ravel(), minlength=256)
        vals = np.flatnonzero(counts)
        return [int(v) - 256 if a.dtype == np.int8 and v > 127 else int(v) for v in vals]
    return [int(v) for v in np.unique(a)]


def check_labels(a: np.ndarray, what: str, allowed=CLASSES) -> None:
    """Raise :class:`InputError` when ``a`` holds values outside ``allowed``."""
    a = np.asarray(a)
    if a.dtype.kind == "f" and not np.array_equal(a, np.round(a)):
        raise InputError(f"{what} holds non-integer values; expected a labelmap")
    bad = sorted(v for v in label_values(a) if v not in allowed)
    if bad:
        raise InputError(f"{what} has unknown label values {bad[:10]}; expected {min(allowed)}..{max(allowed)}")


def dice_per_class(pred, truth, classes=(1, 2, 3, 4)) -> dict[int, float]:
    """Dice per class value for two label arrays of the same shape (NaN when absent from both)."""
    p, t = _array(pred), _array(truth)
    if p.shape != t.shape:
        raise InputError(f"prediction shape {p.shape} does not match truth shape {t.shape}")
    out = {}
    for c in classes:
        pm, tm = p == c, t == c
        denom = int(pm.sum()) + int(tm.sum())
        out[int(c)] = math.nan if denom == 0 else 2.0 * int((pm & tm).sum()) / denom
    return out


def macro(values) -> float:
    """Mean of the defined (non-NaN) values; NaN when none is defined."""
    vals = [v for v in values if not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(vals)) if vals else math.nan


MAX_REGION = max(labels.REGION_NAMES)  # 16
_LEFT = labels.LEFT_LOBES + labels.LEFT_ZONES
_RIGHT = labels.RIGHT_LOBES + labels.RIGHT_ZONES


def region_groups(present) -> list[tuple[str, tuple[int, ...]]]:
    """Named groups of region values: each lobe/zone present, then left_lung, right_lung, whole_lung
    (the same regions as the rows of ``stats.csv``)."""
    present = [int(v) for v in present if int(v) in labels.REGION_NAMES]
    return ([(labels.REGION_NAMES[v], (v,)) for v in sorted(present)]
            + [("left_lung", _LEFT), ("right_lung", _RIGHT), ("whole_lung", _LEFT + _RIGHT)])


def region_masks(truth_regions) -> list[tuple[str, np.ndarray]]:
    """Named boolean masks for :func:`region_groups` of a region labelmap."""
    reg = _array(truth_regions)
    return [(name, np.isin(reg, values)) for name, values in region_groups(label_values(reg))]


def joint_counts(pred, truth, regions=None) -> np.ndarray:
    """Voxel counts ``[region value, truth class, pred class]``, shape ``(17, 5, 5)``, in one histogram pass.

    Without ``regions`` everything is counted under region value 0.
    """
    n = labels.NUM_CLASSES
    code = _array(truth).astype(np.uint16) * n + _array(pred).astype(np.uint16)
    if regions is not None:
        code += _array(regions).astype(np.uint16) * (n * n)
    size = (MAX_REGION + 1) * n * n
    return np.bincount(code.ravel(), minlength=size)[:size].reshape(MAX_REGION + 1, n, n)


def _fraction_row(conf: np.ndarray) -> dict:
    """Predicted / true % per subtype within one region from its ``[truth, pred]`` counts."""
    n = int(conf.sum())
    row = {"voxels": n}
    pc, tc = conf.sum(axis=0), conf.sum(axis=1)
    for v, cls in NAMES.items():
        pp, tp = 100.0 * pc[v] / n, 100.0 * tc[v] / n
        row[cls] = {"pred_pct": float(pp), "true_pct": float(tp), "error_pct": float(pp - tp)}
    return row


def fractions_from_counts(counts: np.ndarray, with_regions: bool = True) -> dict[str, dict]:
    """Fraction errors per region group from :func:`joint_counts` (see the module docstring)."""
    if not with_regions:  # whole lung = truth subtypes > 0
        conf = counts[0].copy()
        conf[0, :] = 0
        return {"whole_lung": _fraction_row(conf)} if conf.sum() else {}
    present = [v for v in range(1, MAX_REGION + 1) if counts[v].sum()]
    out = {}
    for name, values in region_groups(present):
        conf = counts[list(values)].sum(axis=0)
        if conf.sum():
            out[name] = _fraction_row(conf)
    return out


def evaluate_case(pred_subtypes, truth_subtypes, truth_regions=None) -> dict:
    """Score one case. Arrays (or CTImages) of the same shape, label values 0..4; ``truth_regions`` holds lobes
    1..5 (or zones 11..16); without it the whole lung is taken as truth subtypes > 0.

    Returns ``{"dice": {name: d}, "macro_dice": m, "confusion": 5×5 list, "fractions": {region: ...}}``.
    """
    p, t = _array(pred_subtypes), _array(truth_subtypes)
    if p.shape != t.shape:
        raise InputError(f"prediction shape {p.shape} does not match truth shape {t.shape}")
    check_labels(p, "prediction")
    check_labels(t, "truth")
    regions = None
    if truth_regions is not None:
        regions = _array(truth_regions)
        if regions.shape != t.shape:
            raise InputError(f"truth regions shape {regions.shape} does not match truth shape {t.shape}")
        check_labels(regions, "truth regions", allowed=(0, *labels.REGION_NAMES))
    counts = joint_counts(p, t, regions)
    conf = counts.sum(axis=0)
    dice = dice_from_confusion(conf)
    return {
        "dice": {NAMES[c]: d for c, d in dice.items()},
        "macro_dice": macro(dice[c] for c in EMPHYSEMA),
        "confusion": conf.tolist(),
        "fractions": fractions_from_counts(counts, regions is not None),
    }


def laa950_by_region(ct, regions) -> dict[str, float]:
    """LAA-950 (% of voxels strictly below -950 HU) per named region, plain numpy (one histogram pass)."""
    hu, reg = _array(ct), _array(regions)
    code = reg.astype(np.int64).ravel() * 2 + (hu < -950).ravel()
    counts = np.bincount(code, minlength=2 * (MAX_REGION + 1))[: 2 * (MAX_REGION + 1)].reshape(-1, 2)
    present = [v for v in range(1, MAX_REGION + 1) if counts[v].sum()]
    out = {}
    for name, values in region_groups(present):
        c = counts[list(values)].sum(axis=0)
        if c.sum():
            out[name] = 100.0 * float(c[1]) / float(c.sum())
    return out


def laa950_check(ct, truth_regions, pred_regions, stats: dict[str, dict[str, float]]) -> dict:
    """Independent LAA-950 per truth region vs ``stats.csv``; ``region_match`` when the masks are identical."""
    independent = laa950_by_region(ct, truth_regions)
    identical = pred_regions is not None and bool(np.array_equal(_array(pred_regions), _array(truth_regions)))
    truth_masks = pred_masks = {}
    if pred_regions is not None and not identical:  # compare region by region
        truth_masks, pred_masks = dict(region_masks(truth_regions)), dict(region_masks(pred_regions))
    regions, diffs = {}, []
    for name, value in independent.items():
        if name not in stats:
            continue
        reported = stats[name].get("laa950_pct", math.nan)
        match = identical or (name in pred_masks and bool(np.array_equal(pred_masks[name], truth_masks[name])))
        diff = abs(reported - value)
        regions[name] = {"independent": value, "stats_csv": reported, "abs_diff": diff, "region_match": match}
        if match and not math.isnan(diff):
            diffs.append(diff)
    own = []  # stats.csv against plain numpy on the prediction's own regions: always comparable
    if pred_regions is not None:
        for name, value in laa950_by_region(ct, pred_regions).items():
            if name in stats and not math.isnan(stats[name].get("laa950_pct", math.nan)):
                own.append(abs(stats[name]["laa950_pct"] - value))
    return {"regions": regions, "matching_regions": len(diffs),
            "laa950_max_abs_diff": max(diffs) if diffs else math.nan,
            "all_regions_max_abs_diff": max((r["abs_diff"] for r in regions.values()
                                             if not math.isnan(r["abs_diff"])), default=math.nan),
            "own_regions_max_abs_diff": max(own) if own else math.nan}


# --- folders ------------------------------------------------------------------------------------------------


def _strip_suffix(name: str) -> str:
    low = name.lower()
    for s in IMAGE_SUFFIXES:
        if low.endswith(s):
            return name[: -len(s)]
    return name


def find_cases(folder: str | os.PathLike) -> dict[str, Path]:
    """Cases in ``folder``: sub-folders holding ``subtypes.nii.gz`` and label-image files, keyed by name.

    A folder that itself holds ``subtypes.nii.gz`` is one case named after the folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"folder not found: {folder}")
    if (folder / "subtypes.nii.gz").exists():
        return {folder.name: folder}
    cases = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_dir():
            cases[p.name] = p  # checked for subtypes.nii.gz when matched, so a gap is reported by name
        elif p.is_file() and _strip_suffix(p.name) != p.name:
            cases[_strip_suffix(p.name)] = p
    return cases


def _subtypes_path(case: Path) -> Path | None:
    if case.is_file():
        return case
    p = case / "subtypes.nii.gz"
    return p if p.exists() else None


def match_cases(pred_dir, truth_dir) -> list[tuple[str, Path, Path]]:
    """``(name, pred_case, truth_case)`` for every truth case; InputError listing unmatched cases."""
    pred, truth = find_cases(pred_dir), find_cases(truth_dir)
    if len(pred) == 1 and len(truth) == 1 and (Path(pred_dir) / "subtypes.nii.gz").exists() \
            and (Path(truth_dir) / "subtypes.nii.gz").exists():
        (_, p), (name, t) = next(iter(pred.items())), next(iter(truth.items()))
        return [(name, p, t)]
    truth = {k: v for k, v in truth.items() if _subtypes_path(v) is not None}
    if not truth:
        raise InputError(f"no truth cases (folders with subtypes.nii.gz or label files) in {truth_dir}")
    missing = sorted(k for k in truth if k not in pred or _subtypes_path(pred[k]) is None)
    extra = sorted(k for k in pred if k not in truth and _subtypes_path(pred[k]) is not None)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} truth case(s) without a prediction: {', '.join(missing[:20])}")
        if extra:
            parts.append(f"{len(extra)} predicted case(s) without truth: {', '.join(extra[:20])}")
        raise InputError("; ".join(parts))
    return [(k, pred[k], truth[k]) for k in sorted(truth)]


def _read_labels(path: Path, what: str):
    img = read_image(path)
    if img.array.dtype.kind == "f":
        if not np.array_equal(img.array, np.round(img.array)):
            raise InputError(f"{what} ({path.name}) holds non-integer values; expected a labelmap")
    a = img.array
    if a.dtype != np.uint8 and a.size and a.min() >= 0 and a.max() <= 255:
        img = img.with_array(a.astype(np.uint8))  # labelmaps in any integer type: 8-bit for fast histograms
    return img


def _grid_info(path: Path) -> tuple:
    """``(size, spacing, origin, direction)`` from the file header only (no voxels read)."""
    r = sitk.ImageFileReader()
    r.SetFileName(str(path))
    try:
        r.ReadImageInformation()
    except RuntimeError:
        raise InputError(f"cannot read image {path.name}") from None
    return r.GetSize(), r.GetSpacing(), r.GetOrigin(), r.GetDirection()


def _grid_text(info) -> str:
    return f"size {tuple(info[0])} spacing {tuple(round(s, 4) for s in info[1])}"


def check_grids(pairs) -> None:
    """Compare prediction and truth grids from headers before any voxel is read (fail fast, name the case)."""
    for name, pred_case, truth_case in pairs:
        p, t = _grid_info(_subtypes_path(pred_case)), _grid_info(_subtypes_path(truth_case))
        same = (tuple(p[0]) == tuple(t[0]) and all(np.allclose(a, b, atol=1e-4) for a, b in zip(p[1:], t[1:])))
        if not same:
            raise InputError(f"case {name}: prediction grid ({_grid_text(p)}) does not match truth grid "
                             f"({_grid_text(t)}); resample the prediction first")


def evaluate_pair(name: str, pred_case: Path, truth_case: Path) -> dict:
    """Score one matched case from its folders/files (see :func:`evaluate_case`)."""
    pred = _read_labels(_subtypes_path(pred_case), f"case {name}: prediction")
    truth = _read_labels(_subtypes_path(truth_case), f"case {name}: truth")
    if not pred.same_grid(truth):
        raise InputError(f"case {name}: prediction grid does not match truth grid; resample the prediction first")
    truth_regions = None
    if truth_case.is_dir() and (truth_case / "regions.nii.gz").exists():
        truth_regions = _read_labels(truth_case / "regions.nii.gz", f"case {name}: truth regions")
        if not truth_regions.same_grid(truth):
            raise InputError(f"case {name}: truth regions grid does not match truth subtypes grid")
    try:
        result = evaluate_case(pred.array, truth.array, None if truth_regions is None else truth_regions.array)
    except InputError as exc:
        raise InputError(f"case {name}: {exc}") from None
    result["case"] = name
    stats_path = pred_case / "stats.csv" if pred_case.is_dir() else None
    ct_path = truth_case / "ct.nii.gz" if truth_case.is_dir() else None
    if stats_path and stats_path.exists() and ct_path and ct_path.exists() and truth_regions is not None:
        ct = read_image(ct_path)
        if not ct.same_grid(truth):
            raise InputError(f"case {name}: truth ct grid does not match truth subtypes grid")
        pred_regions = None
        if (pred_case / "regions.nii.gz").exists():
            pr = read_image(pred_case / "regions.nii.gz")
            pred_regions = pr.array if pr.same_grid(truth) else None
        result["laa950"] = laa950_check(ct.array, truth_regions.array, pred_regions, by_region(read_csv(stats_path)))
    return result


def whole_lung_summary(case: dict) -> dict:
    """The case's whole-lung percentage checks (see the module's conventions); NaN without a whole-lung row."""
    whole = case["fractions"].get("whole_lung")
    if not whole:
        return {"max_abs_error_pct": math.nan, "emphysema_true_pct": math.nan, "emphysema_called_pct": math.nan}
    names = [NAMES[c] for c in EMPHYSEMA]
    return {"max_abs_error_pct": max(abs(whole[n]["error_pct"]) for n in names),
            "emphysema_true_pct": sum(whole[n]["true_pct"] for n in names),
            "emphysema_called_pct": sum(whole[n]["pred_pct"] for n in names)}


def pool(cases: list[dict]) -> dict:
    """Pooled metrics over scored cases."""
    conf = np.sum([np.asarray(c["confusion"]) for c in cases], axis=0)
    dice = dice_from_confusion(conf)
    per_case = {NAMES[c]: macro(case["dice"][NAMES[c]] for case in cases) for c in NAMES}
    fr: dict[str, dict] = {}
    for case in cases:
        for region, row in case["fractions"].items():
            for cls in NAMES.values():
                fr.setdefault(region, {}).setdefault(cls, []).append(row[cls]["error_pct"])
    fractions = {r: {cls: {"mean_error_pct": float(np.mean(v)), "mean_abs_error_pct": float(np.mean(np.abs(v))),
                           "n": len(v)} for cls, v in d.items()} for r, d in fr.items()}
    def worst(key):
        vals = [c["laa950"][key] for c in cases if "laa950" in c and not math.isnan(c["laa950"][key])]
        return max(vals) if vals else math.nan
    whole = [whole_lung_summary(c) for c in cases]
    errors = [w["max_abs_error_pct"] for w in whole if not math.isnan(w["max_abs_error_pct"])]
    free = [w["emphysema_called_pct"] for w in whole if w["emphysema_true_pct"] == 0]
    return {
        "n_cases": len(cases),
        "dice": {NAMES[c]: d for c, d in dice.items()},
        "macro_dice": macro(dice[c] for c in EMPHYSEMA),
        "case_mean_dice": per_case,
        "case_mean_macro_dice": macro(c["macro_dice"] for c in cases),
        "confusion": conf.tolist(),
        "fractions": fractions,
        "laa950_max_abs_diff": worst("laa950_max_abs_diff"),
        "laa950_all_regions_max_abs_diff": worst("all_regions_max_abs_diff"),
        "laa950_own_regions_max_abs_diff": worst("own_regions_max_abs_diff"),
        "laa950_cases_checked": sum("laa950" in c for c in cases),
        "whole_lung_max_abs_error_pct": max(errors) if errors else math.nan,
        "whole_lung_cases_within_3_points": sum(e <= 3.0 for e in errors),
        "emphysema_free_cases": len(free),
        "emphysema_free_max_called_pct": max(free) if free else math.nan,
    }


def evaluate_dirs(pred_dir, truth_dir) -> dict:
    """Score every truth case against the prediction of the same folder name.

    Returns ``{"pooled": {...}, "cases": [per-case dicts]}`` (see :func:`evaluate_case` and :func:`pool`).
    """
    from ..core.progress import progress

    pairs = match_cases(pred_dir, truth_dir)
    check_grids(pairs)
    cases = [evaluate_pair(name, p, t) for name, p, t in progress(pairs, desc="evaluate")]
    return {"pooled": pool(cases), "cases": cases}


# --- output ---------------------------------------------------------------------------------------------------


def _cell(v) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.6g}"


PER_CASE_COLUMNS = (["case"] + [f"dice_{n}" for n in NAMES.values()] + ["macro_dice"]
                    + [f"whole_lung_{n}_error_pct" for n in NAMES.values()]
                    + ["whole_lung_emphysema_true_pct", "whole_lung_emphysema_called_pct", "laa950_max_abs_diff"])


def per_case_rows(result: dict) -> list[list[str]]:
    rows = []
    for c in result["cases"]:
        whole = c["fractions"].get("whole_lung", {})
        rows.append([c["case"]] + [_cell(c["dice"][n]) for n in NAMES.values()] + [_cell(c["macro_dice"])]
                    + [_cell(whole[n]["error_pct"]) if n in whole else "" for n in NAMES.values()]
                    + [_cell(whole_lung_summary(c)[k]) for k in ("emphysema_true_pct", "emphysema_called_pct")]
                    + [_cell(c.get("laa950", {}).get("laa950_max_abs_diff", math.nan))])
    return rows


def write_outputs(result: dict, out_dir) -> Path:
    """``metrics.json`` + ``confusion.csv`` + ``per_case.csv`` into ``out_dir``, all-or-nothing."""
    out_dir = Path(out_dir)
    names = ["outside", *NAMES.values()]
    with staged_dir(out_dir) as tmp:
        with open(tmp / "metrics.json", "w") as fh:
            json.dump(nan_to_none(result), fh, indent=2)
        with open(tmp / "confusion.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["truth\\pred", *names])
            for name, row in zip(names, result["pooled"]["confusion"]):
                w.writerow([name, *row])
        with open(tmp / "per_case.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(PER_CASE_COLUMNS)
            w.writerows(per_case_rows(result))
    return out_dir


def format_report(result: dict) -> str:
    """Plain-text tables for the terminal."""
    def f(v, w=8, d=3):
        return f"{'-':>{w}}" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:>{w}.{d}f}"

    pooled = result["pooled"]
    cls = list(NAMES.values())
    lines = [f"{'case':<16}" + "".join(f"{c:>8}" for c in cls) + f"{'macro':>8}"]
    for c in result["cases"]:
        lines.append(f"{c['case'][:16]:<16}" + "".join(f(c["dice"][n]) for n in cls) + f(c["macro_dice"]))
    lines.append(f"{'pooled':<16}" + "".join(f(pooled["dice"][n]) for n in cls) + f(pooled["macro_dice"]))
    lines.append(f"macro Dice (CLE/PSE/PLE, pooled): {f(pooled['macro_dice'], 0)}   "
                 f"case mean: {f(pooled['case_mean_macro_dice'], 0)}")
    lines += ["", "confusion (rows truth, cols pred; voxels)",
              f"{'':<9}" + "".join(f"{n:>12}" for n in ["outside", *cls])]
    for name, row in zip(["outside", *cls], pooled["confusion"]):
        lines.append(f"{name:<9}" + "".join(f"{v:>12d}" for v in row))
    lines += ["", "fraction error, predicted % - true % (mean over cases; mean |error| in brackets)",
              f"{'region':<18}" + "".join(f"{c:>16}" for c in cls)]
    for region, row in pooled["fractions"].items():
        lines.append(f"{region:<18}" + "".join(
            f"{row[c]['mean_error_pct']:>+8.2f} ({row[c]['mean_abs_error_pct']:>5.2f})" for c in cls))
    if not math.isnan(pooled["whole_lung_max_abs_error_pct"]):
        within = pooled["whole_lung_cases_within_3_points"]
        lines += ["", f"whole lung: worst |predicted % - true %| over CLE/PSE/PLE "
                      f"{pooled['whole_lung_max_abs_error_pct']:.2f} points; {within} of {pooled['n_cases']} cases "
                      "within 3 points"]
        if pooled["emphysema_free_cases"]:
            lines.append(f"emphysema-free cases: {pooled['emphysema_free_cases']}, emphysema called at most "
                         f"{pooled['emphysema_free_max_called_pct']:.2f} % of the lung")
    if pooled["laa950_cases_checked"]:
        def pct(v):
            return "n/a" if math.isnan(v) else f"{v:.4f} %"
        lines += ["", f"LAA-950 check, max |stats.csv - plain numpy| over {pooled['laa950_cases_checked']} case(s):",
                  f"  on the prediction's own regions:            {pct(pooled['laa950_own_regions_max_abs_diff'])}",
                  f"  on truth regions, where identical:          {pct(pooled['laa950_max_abs_diff'])}",
                  f"  on truth regions, all (lung masks differ):  {pct(pooled['laa950_all_regions_max_abs_diff'])}"]
    return "\n".join(lines)
