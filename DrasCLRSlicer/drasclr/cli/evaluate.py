"""``drasclr evaluate --pred DIR --truth DIR [-o OUT]``: Dice per class, confusion matrix, fraction errors."""

from __future__ import annotations


def add_parser(sub):
    p = sub.add_parser("evaluate", help="score predicted subtype maps against ground truth",
                       description="Score predicted subtype maps (analyze output folders) against ground truth "
                                   "(phantom case folders), matched by folder name: Dice per class, macro Dice "
                                   "over CLE/PSE/PLE, 5x5 confusion matrix, per-region fraction errors, and an "
                                   "independent LAA-950 check.")
    p.add_argument("--pred", required=True, help="folder of predicted cases (analyze output folders or files)")
    p.add_argument("--truth", required=True, help="folder of truth cases (phantom case folders or files)")
    p.add_argument("-o", "--output", default=None,
                   help="write metrics.json, confusion.csv and per_case.csv into this folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty output folder")
    p.set_defaults(run=run)


def run(args) -> int:
    import contextlib

    from ..core.outputs import claimed_output
    from ..research.evaluate import evaluate_dirs, format_report, write_outputs

    with claimed_output(args.output, overwrite=args.overwrite) if args.output else contextlib.nullcontext():
        result = evaluate_dirs(args.pred, args.truth)
        if args.output:
            write_outputs(result, args.output)
    print(format_report(result))
    if args.output:
        print(f"wrote {args.output}")
    return 0
