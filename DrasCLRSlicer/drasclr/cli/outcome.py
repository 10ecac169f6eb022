"""``drasclr outcome fit|predict``: survival (Cox) and FEV1 models on patient embeddings plus LAA-950."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub):
    p = sub.add_parser("outcome", help="outcome models (survival, FEV1) on patient embeddings + LAA-950",
                       description="Fit or apply outcome models on analyze outputs (embedding.npy + stats.csv).")
    osub = p.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=type(p))

    f = osub.add_parser("fit", help="cross-validate and fit; writes model.json + metrics.json into a new folder")
    f.add_argument("--features", required=True, help="folder of analyze output folders (one per case)")
    f.add_argument("--outcomes", required=True, help="folder of case folders with meta.json (matched by name)")
    f.add_argument("-o", "--output", required=True, help="new model folder (never overwritten)")
    f.add_argument("--kind", choices=["cox", "fev1", "both"], default="both")
    f.add_argument("--penalizer", type=float, default=0.1, help="Cox ridge penalizer (lifelines)")
    f.add_argument("--alpha", type=float, default=1.0, help="FEV1 ridge regression alpha")
    f.add_argument("--pca", type=int, default=8, help="PCA components of the embedding (fitted on train only)")
    f.add_argument("--folds", type=int, default=5, help="cross-validation folds")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--fev1-key", default=None, help="meta.json key of FEV1 %% predicted (default "
                                                     "outcomes.fev1_pct_pred; dotted paths reach nested keys)")
    f.add_argument("--time-key", default=None, help="meta.json key of survival time (default outcomes.survival_years)")
    f.add_argument("--event-key", default=None, help="meta.json key of the event flag, 1 event / 0 censored "
                                                      "(default outcomes.event)")
    f.set_defaults(run=run_fit)

    q = osub.add_parser("predict", help="risk score and predicted FEV1 per case")
    q.add_argument("--model", required=True, help="model folder written by `outcome fit`")
    q.add_argument("--features", required=True, help="folder of analyze output folders")
    q.add_argument("-o", "--output", required=True, help="output CSV")
    q.set_defaults(run=run_predict)


def run_fit(args) -> int:
    from ..core.errors import InputError
    from ..core.input_files import check_range
    from ..core.outputs import check_output_location
    from ..research.outcome import fit, format_metrics

    if args.pca < 1 or args.folds < 2 or args.penalizer < 0 or args.alpha < 0:
        raise InputError("--pca must be >= 1, --folds >= 2, --penalizer and --alpha >= 0")
    check_range(args.penalizer, "--penalizer", lo=0)
    check_range(args.alpha, "--alpha", lo=0)
    check_range(args.pca, "--pca", hi=1024)
    check_range(args.folds, "--folds", hi=1000)
    if Path(args.output).exists():
        raise InputError(f"{args.output} already exists; outcome models are never overwritten, choose a new folder")
    check_output_location(args.output, what="model folder")
    keys = {k: v for k, v in (("fev1", args.fev1_key), ("time", args.time_key), ("event", args.event_key)) if v}
    metrics = fit(args.features, args.outcomes, args.output, kind=args.kind, k=args.pca, penalizer=args.penalizer,
                  alpha=args.alpha, folds=args.folds, seed=args.seed, keys=keys)
    print(format_metrics(metrics))
    print(f"wrote {args.output}")
    return 0


def run_predict(args) -> int:
    from ..core.errors import InputError
    from ..core.outputs import check_output_location
    from ..research.outcome import predict

    out = Path(args.output)
    if out.is_dir():
        raise InputError(f"output {out} is a folder; give a .csv file name")
    check_output_location(out.parent if str(out.parent) else Path("."), overwrite=True, what="folder of the output CSV")

    rows = predict(args.model, args.features, args.output)
    print(f"wrote {args.output} ({len(rows)} cases)")
    return 0
