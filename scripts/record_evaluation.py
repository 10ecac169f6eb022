"""Write a model's held-out evaluation into its card (``model.json`` → ``metrics``), from the files the build made.

    python scripts/record_evaluation.py MODEL --density-veto 0.15 [--density-veto-subtype cle=0.04] \
        [--density-veto-hu -970] [--density-veto-smooth 1]  # the rule
    python scripts/record_evaluation.py MODEL --phantoms EVAL/metrics.json --phantom-cases "seeds 5201-5202, ..." \
        [--real REAL_SCANS/summary.json]

``--phantoms``: ``drasclr evaluate``'s ``metrics.json`` on held-out phantoms; ``--real``: the ``summary.json`` of
``bench/bench_real_scans.py``; ``--density-veto F``: ``analyze`` turns emphysema called where under F of the
lung within 20 mm is below -950 HU (``--density-veto-hu``; on the CT smoothed in-plane with a Gaussian of
``--density-veto-smooth`` mm) normal (``inference.density_veto``,
drasclr.dense.density). Only the card changes (the weights and their sha256 do not); it is rewritten through a
temporary file, so a failure leaves the old card.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _r(v, d=3):
    return None if v is None else round(float(v), d)


def phantom_metrics(metrics: dict, cases: str, command: str) -> dict:
    pooled = metrics["pooled"]
    whole = pooled["fractions"].get("whole_lung", {})
    return {
        "cases": f"{pooled['n_cases']} held-out phantoms ({cases}); never trained on, never used to select",
        "command": command,
        "dice": {k: _r(v) for k, v in pooled["dice"].items()},
        "macro_dice_cle_pse_ple_pooled": _r(pooled["macro_dice"]),
        "macro_dice_case_mean": _r(pooled["case_mean_macro_dice"]),
        "whole_lung_mean_abs_error_points": {k: _r(v["mean_abs_error_pct"], 2) for k, v in whole.items()},
        "whole_lung_worst_case_error_points": _r(pooled.get("whole_lung_max_abs_error_pct"), 2),
        "whole_lung_cases_within_3_points": pooled.get("whole_lung_cases_within_3_points"),
        "emphysema_free_cases": pooled.get("emphysema_free_cases"),
        "emphysema_free_max_called_pct": _r(pooled.get("emphysema_free_max_called_pct"), 2),
    }


def real_metrics(summary: dict, model: str) -> dict:
    out = {"command": "PYTHONPATH=DrasCLRSlicer python bench/bench_real_scans.py --models ... (docs/demo_model.md)",
           "reference": "cip-lh (local-histogram classifier trained on real expert-labelled patches)"}
    for case, by_model in summary["cases"].items():
        row = by_model.get(model)
        if row is not None:
            out[case] = {k: v for k, v in row.items()}
    out.update(summary["per_model"].get(model, {}))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--phantoms", type=Path, default=None, help="drasclr evaluate's metrics.json")
    ap.add_argument("--phantom-cases", default="", help="which held-out cases (seeds), for the card")
    ap.add_argument("--density-veto", type=float, default=None, metavar="F",
                    help="write the density-consistency rule (minimum local LAA-950 fraction) into the card")
    ap.add_argument("--density-veto-subtype", action="append", default=[], metavar="NAME=F",
                    help="with --density-veto: a subtype's own threshold (cle=0.04); repeatable")
    ap.add_argument("--density-veto-hu", type=float, default=-950.0, metavar="HU",
                    help="with --density-veto: the attenuation the local share is counted below (default -950)")
    ap.add_argument("--density-veto-smooth", type=float, default=0.0, metavar="MM",
                    help="with --density-veto: smooth the CT in-plane (Gaussian sigma, mm) before counting (default 0)")
    ap.add_argument("--command", default="drasclr analyze TEST.txt -o PRED --model MODEL && "
                                          "drasclr evaluate --pred PRED --truth TEST")
    ap.add_argument("--real", type=Path, default=None, help="bench/bench_real_scans.py's summary.json")
    ap.add_argument("--real-name", default=None, help="the model's name in summary.json (default: folder name)")
    a = ap.parse_args(argv)
    card_path = a.model / "model.json"
    if not card_path.is_file():
        print(f"error: no model card at {card_path}", file=sys.stderr)
        return 2
    card = json.loads(card_path.read_text())
    if a.density_veto is not None:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "DrasCLRSlicer"))
        from drasclr.dense.density import DensityVeto

        by = tuple(sorted((k.strip(), float(v)) for k, v in (x.split("=", 1) for x in a.density_veto_subtype)))
        try:  # a rule analyze would refuse is refused here, not at the first scan
            rule = DensityVeto(min_laa950=a.density_veto, by_subtype=by, laa_hu=a.density_veto_hu,
                               smooth_mm=a.density_veto_smooth)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        card.setdefault("inference", {})["density_veto"] = rule.card()
    metrics = card.setdefault("metrics", {})
    if a.phantoms is not None:
        metrics["held_out"] = phantom_metrics(json.loads(a.phantoms.read_text()), a.phantom_cases, a.command)
    if a.real is not None:
        metrics["real_scans"] = real_metrics(json.loads(a.real.read_text()), a.real_name or a.model.name)
    tmp = card_path.with_name(f".{card_path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(card, indent=2) + "\n")
    os.replace(tmp, card_path)
    print(f"updated {card_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
